"""Experiment tracking behind the trainer's callbacks: ``output.track`` picks MLflow, TensorBoard or both.

Tracking never blocks or fails training. Each tracker does its work on a thread of its own (a slow
or unreachable tracking server costs the loop nothing), and the first error it meets is logged once;
the tracker then goes quiet and the run goes on. At the end of a run the tracker is given a bounded
time to finish (the model upload can be large), then left behind with a warning.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runassist.train.callbacks import Callback, TrainContext
from runassist.train.loop import StepInfo

log = logging.getLogger("runassist.tracking")
OPEN_TIMEOUT_S = 30.0  # what a run waits at its start for the tracker's run to exist (then goes on anyway)
FINISH_TIMEOUT_S = 120.0  # what a run waits at its end for a tracker to send its last records and the model


class Tracker(Callback):
    """A callback that hands its work to a background thread and swallows (logs once) its errors.

    Subclasses implement ``open``, ``log_step``, ``log_eval`` and ``close``; they run on the thread,
    in order. ``every``: the logging cadence (train.log_every), whose steps MetricsLog has read the loss
    for (the loss lives on the device: reading it at every step would sync the loop)."""

    name = "tracker"

    def __init__(self, *, every: int):
        self.every = every
        self.broken = False
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()

    # -- the callback side: runs in the training loop, only copies values and queues ----------------------
    def on_start(self, ctx: TrainContext, *, resumed: bool) -> None:
        if not ctx.engine.is_main:
            return
        self._thread = threading.Thread(target=self._work, name=f"runassist-{self.name}", daemon=True)
        self._thread.start()
        self._submit(self.open, ctx.run, resumed, int(getattr(ctx.scheduler, "last_epoch", 0) or 0))
        # The training loop holds the GIL so tightly that a thread importing MLflow and creating its
        # run can take the whole run to get there; waiting here (bounded) has the tracker's run exist
        # before step 1, so a kill at any later moment is recorded against it.
        if not self._opened.wait(OPEN_TIMEOUT_S):
            log.warning("%s: not ready after %.0f s; training starts, records follow when it is", self.name,
                        OPEN_TIMEOUT_S)

    def on_step(self, ctx: TrainContext, info: StepInfo) -> None:
        if self._thread is None or (info.position.step % self.every and not info.last):
            return
        loss = getattr(ctx, "last_loss", None)
        values = {"train/lr": float(info.lr), "train/epoch": float(info.epoch_float)}
        if loss is not None:
            values["train/loss"] = float(loss)
        self._submit(self.log_step, info.position.step, values)

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None:
        if self._thread is None:
            return
        flat = {f"dev/{k}": float(v) for k, v in scores.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._submit(self.log_eval, info.position.step, flat)

    def on_end(self, ctx: TrainContext, summary: dict[str, Any], *, status: str) -> None:
        if self._thread is None:
            return
        self._submit(self.close, ctx.run, dict(summary), status)
        self._queue.put(None)
        self._thread.join(FINISH_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("%s: still sending after %.0f s at the end of the run; left behind (the run itself is "
                        "complete in %s)", self.name, FINISH_TIMEOUT_S, ctx.run)
        self._thread = None

    # -- the thread side ----------------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self.broken:
            self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.broken:
                continue
            fn, args = item
            try:
                fn(*args)
            except Exception as exc:  # tracking must never fail training: say it once, then stay quiet
                self.broken = True
                log.warning("%s tracking stopped: %s: %s (training goes on; nothing more is sent)",
                            self.name, type(exc).__name__, exc)
            finally:
                if fn == self.open:
                    self._opened.set()

    # -- what a tracker does ------------------------------------------------------------------------------
    def open(self, run: Path, resumed: bool, start_step: int) -> None: ...

    def log_step(self, step: int, values: dict[str, float]) -> None: ...

    def log_eval(self, step: int, values: dict[str, float]) -> None: ...

    def close(self, run: Path, summary: dict[str, Any], status: str) -> None: ...


class TensorBoardTracker(Tracker):
    """Scalars per logging step (train/loss, train/lr) and per evaluation (dev/<score>) in RUN/tb/."""

    name = "tensorboard"

    def __init__(self, *, every: int):
        super().__init__(every=every)
        self.writer = None

    def open(self, run: Path, resumed: bool, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # purge_step: a resumed run drops what the killed process wrote after its last checkpoint, as
        # metrics.jsonl does, so the curve has each step once.
        self.writer = SummaryWriter(log_dir=str(run / "tb"), purge_step=start_step if resumed and start_step else None)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, run: Path, summary: dict[str, Any], status: str) -> None:
        if self.writer is not None:
            self.writer.close()
