"""The CPU training step's own parts: fast dropout, hand attention, clipping that skips a no-op
scale, and a heap that keeps freed blocks. Each does what PyTorch's does, measured here."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from runassist import heap
from runassist.train import attention, dropout
from runassist.train.engine import clip_gradients


def test_dropout_drops_p_of_every_lane_and_scales_the_rest():
    torch.manual_seed(0)
    for p in (0.1, 0.5):
        keep = dropout.keep_scale((250_000, 4), p, torch.float32)  # 4 lanes: the 16-bit parts of one draw
        assert keep.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]
        rates = (keep == 0).float().mean(0)
        assert torch.allclose(rates, torch.full((4,), p), atol=0.003), rates  # 5 sigma at p=0.5


def test_dropout_backward_uses_the_forward_mask_and_follows_the_seed():
    x = torch.randn(64, 48, requires_grad=True)
    torch.manual_seed(3)
    y = dropout.dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.7) and torch.equal(x.grad != 0, kept)
    assert torch.equal(x.grad[kept], torch.full((int(kept.sum()),), 1 / 0.7))
    torch.manual_seed(3)
    assert torch.equal(dropout.dropout(x, 0.3), y)  # torch's generator: seeded and checkpointed as before
    assert dropout.dropout(x, 0.3, training=False) is x


def test_use_fast_dropout_swaps_plain_dropout_only():
    class Custom(torch.nn.Dropout):
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.2), Custom(0.2))
    assert dropout.use_fast_dropout(model) == 1
    assert type(model[1]) is dropout.FastDropout and model[1].p == 0.2 and type(model[2]) is Custom
    model.eval()
    x = torch.randn(3, 4)
    assert torch.equal(model[1](x), x)


class _Layer(torch.nn.Module):
    is_causal = False


def _qkv(rows=3, heads=2, length=7, dim=8):
    torch.manual_seed(1)
    return [torch.randn(rows, heads, length, dim, requires_grad=True) for _ in range(3)]


def test_hand_attention_is_softmax_dropout_mix_with_the_same_mask():
    q, k, v = _qkv()
    mask = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    mask[0, :, :, 5:] = False  # padding keys in row 0
    layer = _Layer().train()
    torch.manual_seed(9)
    out, _ = attention.attention(layer, q, k, v, mask, dropout=0.25, scaling=0.5)
    torch.manual_seed(9)
    keep = dropout.keep_scale((3, 2, 7, 7), 0.25, torch.float32)
    probs = torch.softmax((q @ k.transpose(-1, -2) * 0.5).masked_fill(~mask, torch.finfo(torch.float32).min), -1)
    assert torch.allclose(out, ((probs * keep) @ v).transpose(1, 2), atol=1e-6)
    assert float(probs[0, :, :, 5:].max().detach()) == 0.0


def test_hand_attention_without_dropout_equals_sdpa_and_with_a_tiny_p_nearly():
    q, k, v = _qkv()
    layer = _Layer().train()
    expected = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    same, _ = attention.attention(layer, q, k, v, None, dropout=0.0)  # not by hand: transformers' SDPA
    assert torch.equal(same, expected)
    near, _ = attention.attention(layer, q, k, v, None, dropout=1e-6)  # by hand, nothing dropped
    assert torch.allclose(near, expected, atol=1e-5) and not torch.equal(near, expected)


def test_a_tiny_bert_trains_the_same_on_the_hand_kernels():
    """With dropout so small nothing is dropped, a training step through the hand attention and fast
    dropout gives the loss and gradients PyTorch's kernels give (padding mask included)."""
    from transformers import BertConfig, BertForTokenClassification

    from runassist.train.engine import Engine

    grads, losses = {}, {}
    for name in ("torch", "hand"):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, num_labels=3, hidden_dropout_prob=1e-6,
                            attention_probs_dropout_prob=1e-6)
        model = BertForTokenClassification(config).train()
        if name == "hand":
            kernels = Engine(precision="fp32", bf16_fast_cpu=False).fast_cpu_step(model)
            assert kernels == {"dropout_modules": 8, "attention": "runassist_cpu_training"}  # 3 a layer, 2 more
        ids = torch.randint(1, 50, (3, 9))
        mask = torch.ones(3, 9, dtype=torch.long)
        mask[1, 6:] = 0
        labels = torch.randint(0, 3, (3, 9))
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        losses[name] = out.loss.item()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert losses["hand"] == pytest.approx(losses["torch"], rel=1e-5)
    assert torch.allclose(grads["hand"], grads["torch"], atol=1e-5)


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_clipping_on_the_host_equals_clip_grad_norm(scale):
    grads = {}
    for host in (True, None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2))
        (model(torch.randn(4, 6)).sum() * scale).backward()
        if host:
            clip_gradients(model, 1.0, host=True)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        grads[host] = [p.grad.clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(grads[True], grads[None]))
    norm = torch.nn.utils.get_total_norm(grads[True])
    assert (float(norm) < 1.0) if scale == 0.01 else float(norm) == pytest.approx(1.0, rel=1e-5)


_FAULTS = """
import resource, torch
from runassist import heap

def step():  # a gradient-sized block, then small tensors, as a training step allocates them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.zeros(16 * 2**20).add_(1)  # 64 MB: above glibc's largest mmap threshold
    small = [torch.randn(50) for _ in range(20)]
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = [step() for _ in range(8)]
with heap.keep_freed_blocks():
    step()  # the first maps the block
    inside = [step() for _ in range(8)]
print(*outside, *inside)
"""


@pytest.mark.skipif(heap._LIBC is None, reason="not glibc: no mallopt")
def test_inside_keep_freed_blocks_a_freed_block_is_reused_without_page_faults():
    """In a fresh process: this one's heap holds whatever earlier tests left free. glibc does not
    promise to reuse the very block every time (one step in ~10 faulted again in trials), so the
    test asks for most steps."""
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, timeout=120, check=True)
    faults = list(map(int, done.stdout.split()))
    outside, inside = faults[:8], faults[8:]
    pages = 64 * 2**20 // resource.getpagesize()
    assert all(n > pages // 2 for n in outside), outside  # a fresh mmap each time: every page faults
    assert sum(n < pages // 20 for n in inside) >= 6, inside  # the freed block, still mapped
