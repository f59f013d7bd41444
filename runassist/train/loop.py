"""The training loop: a generator of StepInfo. No file I/O and no printing in here;
the caller (train/run.py) and its callbacks do the side effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from runassist.tasks.base import Feature
from runassist.train.batches import epoch_batches
from runassist.train.engine import Engine
from runassist.train.packing import padded_size


@dataclass(frozen=True)
class Position:
    """Where training is: enough, with the RNG state, to resume exactly."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # micro-batches of this epoch already consumed


@dataclass(frozen=True)
class StepInfo:
    position: Position
    loss: torch.Tensor  # kept on the device: reading it forces a sync, so callbacks read it only when logging
    lr: float
    tokens: int  # real (non-padding) tokens in this update, known on the host without a sync
    padded_tokens: int
    epoch_float: float
    end_of_epoch: bool
    last: bool


@dataclass(frozen=True)
class Plan:
    steps_per_epoch: int
    total_steps: int


def plan(n_batches: int, *, grad_accum: int, epochs: float, max_steps: int | None) -> Plan:
    per_epoch = max(1, math.ceil(n_batches / grad_accum))
    total = math.ceil(per_epoch * epochs)
    if max_steps is not None:
        total = min(total, max_steps)
    return Plan(steps_per_epoch=per_epoch, total_steps=max(1, total))


def train_steps(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, engine: Engine,
                features: Sequence[Feature], collate: Callable[[Sequence[Feature], np.random.Generator], dict],
                forward: Callable[[torch.nn.Module, dict], Any], loss_fn: Callable[[Any, dict], torch.Tensor],
                batch_size: int, grad_accum: int, grad_clip: float | None, seed: int, batching: str,
                total_steps: int, start: Position = Position()) -> Iterator[StepInfo]:
    """``forward(model, batch)`` runs under the engine's autocast; ``loss_fn(outputs, batch)`` outside
    it, in float32 (the task's ``forward`` and ``loss``).

    ``collate(features, rng)`` gets a numpy Generator for the batch's augmentation, seeded from
    (seed, epoch, batch, rank): like the batch order, a pure function of the position a checkpoint
    saves, so ``--resume`` draws exactly the augmentations an uninterrupted run draws, with no
    generator state to pickle."""
    lengths = [f.size for f in features]
    autocast = engine.autocast()
    position = start
    model.train()
    while position.step < total_steps:
        batches = epoch_batches(lengths, batch_size=batch_size, seed=seed, epoch=position.epoch,
                                group_by_length=batching == "grouped", rank=engine.rank, world=engine.world)
        if not batches:
            raise ValueError("no training batches (fewer examples than processes?)")
        n_steps = math.ceil(len(batches) / grad_accum)
        cursor = position.batch
        while cursor < len(batches) and position.step < total_steps:
            group = batches[cursor:cursor + grad_accum]
            total_loss = torch.zeros((), device=engine.device)
            tokens = padded = 0
            for i, idx in enumerate(group):
                rng = np.random.default_rng([seed, position.epoch, cursor + i, engine.rank])
                batch = collate([features[j] for j in idx], rng)
                batch = engine.to_device(batch)
                with engine.no_sync(model, skip=i < len(group) - 1):
                    ids = batch.get("input_ids")
                    with autocast(), engine.training_attention(None if ids is None else ids.shape[-1]):
                        outputs = forward(model, batch)
                    loss = loss_fn(outputs, batch) / len(group)
                    engine.backward(loss)
                total_loss += loss.detach()
                sizes = [lengths[j] for j in idx]
                tokens += sum(sizes)
                # what the batch holds with padding (packed rows hold several inputs each)
                padded += padded_size(batch) if batching == "packed" else max(sizes) * len(sizes)
            lr = optimizer.param_groups[0]["lr"]
            engine.step(optimizer, model, grad_clip)
            scheduler.step()
            cursor += len(group)
            end_of_epoch = cursor >= len(batches)
            step_in_epoch = math.ceil(cursor / grad_accum)
            position = Position(step=position.step + 1, epoch=position.epoch + (1 if end_of_epoch else 0),
                                batch=0 if end_of_epoch else cursor)
            yield StepInfo(position=position, loss=total_loss, lr=lr, tokens=tokens, padded_tokens=padded,
                           epoch_float=position.epoch if end_of_epoch else position.epoch + step_in_epoch / n_steps,
                           end_of_epoch=end_of_epoch, last=position.step >= total_steps)
