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

# Rows up to this long take the hand path: with dropout it beat PyTorch's default kernel at every
# length measured (fwd + bwd, 12 heads of 32, one thread: 52 vs 96 ms fp32 and 43 vs 60 ms bf16 at
# 2 x 256; 105 vs 146 and 53 vs 122 ms at 1 x 512). Longer rows go to SDPA, whose flash kernel
# does not hold the L x L scores in memory.
LONGEST = 512


# Attention variants the hand path does not compute (T5's position bias, soft-capping, sliding
# windows, attention sinks): these go to transformers' SDPA function.
_NOT_BY_HAND = ("position_bias", "softcap", "sliding_window", "s_aux", "sinks")


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
            # transformers' SDPA path takes a module without ``is_causal`` as causal: only an explicit False
            and getattr(module, "is_causal", True) is False and not kwargs.get("is_causal")
            and all(kwargs.get(k) is None for k in _NOT_BY_HAND)
            and (mask is None or mask.dim() == 4))


def register() -> str:
    """Make ``NAME`` known to transformers (its attention, and SDPA's mask builder); idempotent."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
