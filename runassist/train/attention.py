"""The attention of training steps on CPU, registered with transformers under ``NAME``.

Why by hand: with dropout on, PyTorch's CPU attention kernels draw the dropout mask with the slow
per-element ``bernoulli_`` (train/dropout.py), and the flash kernel's backward is slow for short
rows in bf16. This is the math kernel's own computation (scores, mask, softmax, dropout, mix)
with the fast dropout; what it does not cover (no dropout, evaluation, causal or grouped-query
attention, GPUs, long rows) goes to transformers' own SDPA function unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from runassist.train.dropout import dropout as fast_dropout

NAME = "runassist_cpu_training"

# Rows up to this long take the hand path; longer ones PyTorch's flash kernel, which wins there
# (bench/README.md, "Attention kernels").
LONGEST = 192


def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not _by_hand(module, query, key, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    dtype = query.dtype
    # In float32, as the math kernel computes bf16 inputs: scores rounded to bf16 before the softmax
    # were 10x further from the float32 result (max 0.15 against 0.016 on MiniLM-sized heads).
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)).mul_(scale)
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:  # True: may attend
                scores = scores.masked_fill_(~attention_mask, torch.finfo(torch.float32).min)
            else:  # additive
                scores = scores.add_(attention_mask.float())
        probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)
        out = torch.matmul(probs, value.float())
    return out.to(dtype).transpose(1, 2).contiguous(), None


def _by_hand(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
             dropout: float, kwargs: dict) -> bool:
    return (module.training and dropout > 0.0 and query.device.type == "cpu"
            and query.shape[-2] <= LONGEST and key.shape[-2] <= LONGEST
            and key.shape[1] == query.shape[1]  # no grouped-query heads to repeat
            and not getattr(module, "is_causal", False) and not kwargs.get("is_causal")
            and (mask is None or mask.dim() == 4))


def register() -> str:
    """Make ``NAME`` known to transformers (its attention, and SDPA's mask builder); idempotent."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
