"""The only module that touches the distributed engine (Hugging Face Accelerate).

Accelerate gives us device placement, process groups (one CPU, one GPU, or several
processes under ``accelerate launch``) and DDP wrapping. Mixed precision we do ourselves
with ``torch.autocast``: accelerate refuses fp16 on CPU and we want one code path whose
precision is exactly what summary.json says.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import torch

from runassist.errors import RunassistError


class Engine:
    def __init__(self, *, precision: str, bf16_fast_cpu: bool):
        os.environ.setdefault("ACCELERATE_USE_CPU", "0")
        from accelerate import Accelerator

        cpu = not torch.cuda.is_available()
        # cpu=True lets several processes on one CPU join one gloo group (see INTEGRATION-NOTES).
        self.accelerator = Accelerator(cpu=cpu, mixed_precision="no")
        self.device = self.accelerator.device
        self.precision = resolve_precision(precision, device=self.device, bf16_fast_cpu=bf16_fast_cpu)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self._dtype = dtype
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" and self.device.type == "cuda" else None
        if self.device.type == "cuda":
            # What autocast leaves in fp32 (the loss, norms) runs its matmuls on TF32 tensor cores.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch onto the device; on a GPU through pinned memory, so the copy overlaps compute."""
        if self.device.type != "cuda":
            return batch
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    # -- processes ----------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    def replicas_in_sync(self, model: torch.nn.Module) -> bool | None:
        """With several processes, check every rank ended with the same weights (DDP should guarantee
        it; a silent divergence would make the saved model depend on the rank). None with one process."""
        if self.world == 1:
            return None
        flat = torch.cat([p.detach().float().flatten() for p in self.unwrap(model).parameters()])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64) / flat.numel()
        checksum = torch.stack([flat.double().sum(), (flat.double() * weights).sum()]).to(self.device)
        gathered = self.accelerator.gather(checksum[None])
        return bool(torch.equal(gathered, gathered[:1].expand_as(gathered)))

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "processes": self.world, "precision": self.precision,
                "distributed": str(self.accelerator.distributed_type)}

    # -- model --------------------------------------------------------------
    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.prepare_model(model)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    def autocast(self) -> Callable[[], contextlib.AbstractContextManager]:
        if self._dtype is None:
            return contextlib.nullcontext
        return lambda: torch.autocast(self.device.type, dtype=self._dtype)

    def training_attention(self, length: int | None) -> contextlib.AbstractContextManager:
        """The attention kernel for one training batch of ``length`` positions.

        On CPU in bf16, PyTorch picks its flash kernel, whose backward is slow for short rows: one
        thread, 12 heads of 32, fwd+bwd per layer: flash 26 / 23 / 30 / 22 / 30 ms against the math
        kernel's 4.6 / 6.1 / 17 / 33 / 68 ms at lengths 40 / 72 / 128 / 256 / 512 (torch 2.13).
        So rows up to 192 positions train on the math kernel (exact, the same softmax). fp32 and
        inference keep the default: there flash wins at every length."""
        if length is None or length > 192 or self._dtype != torch.bfloat16 or self.device.type != "cpu":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])

    def fast_cpu_step(self, model: torch.nn.Module) -> dict[str, Any]:
        """On CPU, the step's dropout and attention by hand (train/dropout.py, train/attention.py):
        the same computation, with dropout ~2x and attention 1.3-1.5x faster. GPUs keep
        PyTorch's fused kernels. Returns what changed, for summary.json."""
        if self.device.type != "cpu":
            return {}
        from runassist.train.attention import register
        from runassist.train.dropout import use_fast_dropout

        done: dict[str, Any] = {"dropout_modules": use_fast_dropout(model)}
        config = getattr(model, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
            try:
                model.set_attn_implementation(register())
                done["attention"] = config._attn_implementation
            except (ValueError, ImportError) as exc:  # a model whose attention cannot be swapped keeps SDPA
                done["attention"] = f"sdpa ({exc})"[:200]
        return done

    def memory_for_training(self) -> contextlib.AbstractContextManager:
        """On CPU, glibc keeps the blocks a step frees for the next (heap.py: no page faults on the
        embedding gradient and autocast's weight copies each step)."""
        if self.device.type != "cpu":
            return contextlib.nullcontext()
        from runassist import heap

        return heap.keep_freed_blocks()

    def no_sync(self, model: torch.nn.Module, skip: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on accumulation micro-steps that do not end in an update."""
        if skip and self.world > 1 and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, grad_clip: float | None) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if grad_clip:
            clip_gradients(model, grad_clip, host=self.device.type == "cpu")
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def clip_gradients(model: torch.nn.Module, max_norm: float, *, host: bool) -> None:
    """``clip_grad_norm_``; on the host (CPU) the gradients are scaled only when their norm is over
    ``max_norm``, since scaling by 1.0 changes nothing and costs a pass over every gradient (8 ms of
    a MiniLM step on one core). On a GPU, reading the norm would stall the queue: always scale."""
    if not host:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads)
    if not float(norm) + 1e-6 <= max_norm:  # clip_grad_norm_'s own test (and NaN scales, as there)
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm)


def resolve_precision(precision: str, *, device: torch.device, bf16_fast_cpu: bool) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if bf16_fast_cpu else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RunassistError("train.precision: bf16 is not supported by this GPU; use fp16 or auto")
    return precision
