"""Micro-batching: inputs of concurrent requests gathered into one predictor call.

Requests put their (already validated) items on a queue and await a future. One gathering
task takes the oldest request, adds the requests that arrive within ``max_wait_ms`` of it
(measured from its arrival, so a request that already waited while the model was busy is
not held back again), up to ``max_batch_size`` items, and runs the whole batch in a single
worker thread. The event loop stays free to accept and parse requests while the model
runs, and those requests form the next batch: the busier the server, the larger the
batches, which is where the throughput gain comes from.

The predictor sorts a batch's inputs by length before padding, so grouping by length
needs nothing here.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass
class _Job:
    items: Sequence[Any]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """``await batcher.submit(items)`` -> ``fn(items)`` computed as part of a larger batch.

    ``fn`` maps a list of items to a list of results of the same length, in order. It runs
    in one thread, so it is never called concurrently (a torch model needs no lock).
    ``on_batch(n_items, n_requests, seconds)`` is called on the event loop after each batch.
    """

    def __init__(self, fn: Callable[[list[Any]], list[Any]], *, max_batch_size: int = 64, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, int, float], None] | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be 0 or more")
        self.fn, self.max_batch_size, self.max_wait = fn, max_batch_size, max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Start the gathering task on the running loop (the app's lifespan calls this)."""
        if self._task is not None:
            return
        self._closing = False
        self._wakeup = asyncio.Event()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runassist-predict")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="runassist-batcher")

    async def aclose(self) -> None:
        """Refuse new work, finish every queued request, then stop the worker thread."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued_items(self) -> int:
        return sum(len(job.items) for job in self._queue)

    # -- requests -----------------------------------------------------------
    async def submit(self, items: Sequence[Any]) -> list[Any]:
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if self._task is None or self._task.get_loop() is not asyncio.get_running_loop():
            # Driven without its lifespan (a test client that runs each request in a new event loop):
            # the gathering task belongs to this loop.
            self._task = None
            self.start()
        if not items:
            return []
        job = _Job(items=list(items), future=asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wakeup.set()
        return await job.future

    # -- the gathering loop -------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._gather()
            if not batch:
                continue
            items = [item for job in batch for item in job.items]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._call, items)
            except Exception:
                # One bad request must not fail the others: retry each request on its own.
                await self._one_by_one(loop, batch)
            else:
                offset = 0
                for job in batch:
                    n = len(job.items)
                    _resolve(job.future, result=results[offset:offset + n])
                    offset += n
            if self.on_batch is not None:
                self.on_batch(len(items), len(batch), time.perf_counter() - started)

    async def _gather(self) -> list[_Job]:
        batch = [self._queue.popleft()]
        size = len(batch[0].items)
        deadline = batch[0].arrived + self.max_wait
        while size < self.max_batch_size:
            if self._queue:
                if size + len(self._queue[0].items) > self.max_batch_size:
                    break  # the next request starts the next batch, whole
                job = self._queue.popleft()
                batch.append(job)
                size += len(job.items)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                break
        return [job for job in batch if not job.future.done()]  # drop requests whose client went away

    async def _one_by_one(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        for job in batch:
            try:
                result = await loop.run_in_executor(self._executor, self._call, list(job.items))
            except Exception as exc:
                _resolve(job.future, error=exc)
            else:
                _resolve(job.future, result=result)

    def _call(self, items: list[Any]) -> list[Any]:
        results = list(self.fn(items))
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        return results


def _resolve(future: asyncio.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # cancelled: the client disconnected while its batch ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
