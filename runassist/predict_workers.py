"""``predict --workers N``: chunks predicted in N processes on this machine, results in input order.

Each worker loads the model once (``load``: a picklable function that returns a Predictor, called
with the worker's thread count) and turns a chunk into its output text (``predict_output.chunk_text``),
so the main process only reads and writes. At most ``2 * N`` chunks are in flight: reading runs
ahead of the slowest worker by no more than that, which keeps memory bounded whatever the file size.

Torch's threads are shared out: each worker gets ``free cores // N`` (at least one). Processes are
spawned, not forked: a fork of a process whose torch thread pool already ran can deadlock.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from runassist import env, heap
from runassist.predict_output import chunk_text

_PREDICTOR: Any = None


def worker_threads(workers: int, facts: dict[str, Any] | None = None) -> int:
    """Torch threads for each of ``workers`` processes: the free cores shared out, at least one each."""
    facts = facts if facts is not None else {"cpu": env.cpu_facts()}
    return max(1, env.choose_threads(facts) // max(1, workers))


def _start(load: Callable[..., Any], threads: int) -> None:
    global _PREDICTOR
    import torch

    torch.set_num_threads(threads)
    _PREDICTOR = load(threads=threads)


def _run(chunk: Any, fmt: str) -> tuple[str, int]:
    predictions = _PREDICTOR.predict_examples(chunk.examples)
    text = chunk_text(_PREDICTOR.task, fmt, chunk, predictions)
    del predictions
    heap.trim()  # what the chunk freed goes back (heap.trim: why after each chunk)
    return text, len(chunk.examples)


def predict_in_processes(load: Callable[..., Any], chunks: Iterable[Any], fmt: str, *, workers: int,
                         threads: int | None = None) -> Iterator[tuple[Any, str, int]]:
    """(chunk, its output text, items) for each chunk, in input order; the chunk comes back without
    its examples (only its index and position are needed by then)."""
    threads = threads or worker_threads(workers)
    window = 2 * workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start, initargs=(load, threads)) as pool:
        pending: deque[tuple[Any, Future]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_run, chunk, fmt)))
            if len(pending) >= window:
                yield _done(*pending.popleft())
        while pending:
            yield _done(*pending.popleft())


def _done(chunk: Any, future: Future) -> tuple[Any, str, int]:
    text, items = future.result()
    chunk.examples, chunk.rows = [], None  # dropped here: only what the writer needs is kept
    return chunk, text, items
