"""Dropout for training on CPU, ~2x faster than torch's, with the same distribution.

Why by hand: torch's CPU dropout draws one mt19937 number per element (``bernoulli_``), ~7 ns an
element on one core; on MiniLM / WNUT-16 that was 37 ms of a 300 ms bf16 training step. Here one
64-bit draw from the same generator gives four 16-bit lanes, and an element is dropped where its
lane falls below ``round(p * 65536)``: so p is kept to within 1/131072 (0.1 becomes 0.100006),
the draws stay on torch's global generator (seeded, saved and restored by checkpoints like any
other). One core, forward and backward: 0.99 against torch's 1.72 ms on [500, 384] fp32, 0.89
against 1.79 ms in bf16, 1.41 against 2.70 ms on bf16 attention probabilities [192, 40, 40].

GPUs keep torch's fused dropout (``use_fast_dropout`` is for CPU training only).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LANES = 65536  # values of one 16-bit lane


def keep_scale(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> torch.Tensor:
    """``1 / (1 - p)`` where an element is kept and 0 where it is dropped (each with probability ~p)."""
    n = math.prod(shape)
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    lanes = words.view(torch.int16)[:n].view(shape)
    return (lanes >= round(p * _LANES) - _LANES // 2).to(dtype).mul_(1.0 / (1.0 - p))


class _Dropout(torch.autograd.Function):
    """Keeps the scaled mask (in the input's dtype) for the backward: one multiply each way, where a
    bool mask would need two (``masked_fill`` alone was slower than the multiply here)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # noqa: D102
        keep = keep_scale(x.shape, p, x.dtype)
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    return _Dropout.apply(x, p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the draw above; a drop-in (``use_fast_dropout`` swaps the class)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Every plain ``nn.Dropout`` in ``model`` becomes a ``FastDropout`` (same ``p``, no weights, so
    nothing saved changes); returns how many. Subclasses of nn.Dropout are left alone."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = FastDropout
            swapped += 1
    return swapped
