"""The order of training batches: length-grouped, shuffled, deterministic per (seed, epoch).

The order is a pure function of (seed, epoch, lengths, rank, world), so an exact resume
only needs the epoch and the batch position, never a pickled sampler.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Sort by length inside chunks of this many batches: big enough that batches are nearly
# uniform in length, small enough that the order stays random across the epoch.
_CHUNK_BATCHES = 50


def epoch_batches(lengths: Sequence[int], *, batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        chunk = batch_size * _CHUNK_BATCHES
        lens = np.asarray(lengths)
        parts = []
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            parts.append(part[np.argsort(-lens[part], kind="stable")])
        order = np.concatenate(parts) if parts else order
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if group_by_length:
        # Shuffle whole batches so long and short batches interleave over the epoch.
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if world > 1:
        # Every rank must take the same number of steps, or DDP's all-reduce waits forever.
        usable = len(batches) // world * world
        batches = batches[:usable][rank::world]
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    real = padded = 0
    for batch in batches:
        lens = [lengths[i] for i in batch]
        real += sum(lens)
        padded += max(lens) * len(lens)
    return 0.0 if padded == 0 else 1.0 - real / padded
