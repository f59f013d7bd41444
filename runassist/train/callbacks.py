"""Small callbacks, one concern each. They receive the shared TrainContext and the StepInfo;
only the main process writes files."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from runassist.atomic import swap_folder, write_json
from runassist import runs
from runassist.tasks.base import TaskState
from runassist.train import checkpoint
from runassist.train.engine import Engine
from runassist.train.loop import Position, StepInfo


@dataclass
class TrainContext:
    run: Path
    engine: Engine
    model: torch.nn.Module  # possibly DDP-wrapped
    optimizer: Any
    scheduler: Any
    processor: Any  # tokenizer, image processor or feature extractor: saved beside the model
    task: Any
    state: TaskState
    metric: str
    mode: str
    total_steps: int
    merge_lora: bool = True
    best: dict[str, Any] = field(default_factory=dict)  # {step, value, scores}
    bad_evals: int = 0
    improved: bool = False
    stop_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    train_seconds: float = 0.0  # excludes evaluation and checkpoint time
    tokens: int = 0
    padded_tokens: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_extras: dict[str, Any] | None = None  # state.extras fitted at the best evaluation (thresholds)
    rng: dict[str, Any] | None = None  # generator states at the last step boundary
    eval_due: bool = False  # an evaluation (which checkpoints) follows this step
    in_eval: bool = False
    eval_epoch: float = 0.0
    # What an evaluation changes (best, patience, fitted values), as it was before the evaluation in
    # progress: a checkpoint an interrupt takes mid-evaluation holds this, and the resumed run
    # evaluates again from it, so no evaluation counts twice towards patience.
    before_eval: dict[str, Any] | None = None
    elapsed_offset: float = 0.0  # wall seconds of the run before this process resumed it
    dev_before: dict[str, Any] | None = None  # dev scores of the untrained model, for tasks that ask for them
    train_features: list[Any] | None = None
    threads_seen: dict[str, Any] = field(default_factory=dict)  # what the thread count was chosen from
    batching: dict[str, str] = field(default_factory=dict)  # {"mode": packed|grouped|random, "why": ...}
    step_kernels: dict[str, Any] = field(default_factory=dict)  # Engine.fast_cpu_step: what the step does by hand

    @property
    def bare(self) -> torch.nn.Module:
        return self.engine.unwrap(self.model)

    @property
    def elapsed(self) -> float:
        """Wall seconds since the run started, across resumes."""
        return self.elapsed_offset + time.perf_counter() - self.started

    def evaluation_starts(self, epoch: float) -> None:
        self.before_eval = {"best": copy.deepcopy(self.best), "bad_evals": self.bad_evals,
                            "extras": copy.deepcopy(self.state.extras), "best_extras": copy.deepcopy(self.best_extras),
                            "stop_reason": self.stop_reason, "best_state": self.best_state}
        self.in_eval, self.eval_epoch = True, epoch

    def evaluation_ends(self) -> None:
        self.in_eval, self.before_eval = False, None

    def resumable_state(self, *, pending: bool = False) -> dict[str, Any]:
        """What a checkpoint holds besides tensors. ``pending``: taken mid-evaluation: the state as it
        was before that evaluation, marked to be evaluated again on resume."""
        mine = {"best": self.best, "bad_evals": self.bad_evals, "extras": self.state.extras,
                "best_extras": self.best_extras, "stop_reason": self.stop_reason}
        if pending and self.before_eval is not None:
            mine = {k: v for k, v in self.before_eval.items() if k != "best_state"}
        return {**mine, "train_seconds": self.train_seconds, "tokens": self.tokens,
                "padded_tokens": self.padded_tokens, "elapsed": round(self.elapsed, 2),
                "pending_eval": pending, "pending_epoch": self.eval_epoch, "dev_before": self.dev_before}


class Callback:
    def on_start(self, ctx: TrainContext, *, resumed: bool) -> None: ...

    def on_step(self, ctx: TrainContext, info: StepInfo) -> None: ...

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None: ...

    def on_end(self, ctx: TrainContext, summary: dict[str, Any], *, status: str) -> None:
        """The run ended: ``status`` is finished, interrupted (Ctrl-C) or failed (an exception)."""


class MetricsLog(Callback):
    """metrics.jsonl: a row per `log_every` steps and per evaluation."""

    def __init__(self, every: int):
        self.every = every
        self._window_tokens = 0
        self._window_start = time.perf_counter()

    def on_step(self, ctx: TrainContext, info: StepInfo) -> None:
        self._window_tokens += info.tokens
        if info.position.step % self.every and not info.last:
            return
        now = time.perf_counter()
        loss = float(info.loss)  # the one host sync per logging window
        row = {"kind": "train", "step": info.position.step, "epoch": round(info.epoch_float, 4),
               "loss": round(loss, 6), "lr": info.lr,
               "tokens_per_second": round(self._window_tokens / max(now - self._window_start, 1e-9), 1),
               "elapsed": round(ctx.elapsed, 2)}
        ctx.last_loss = loss  # type: ignore[attr-defined]
        self._window_tokens, self._window_start = 0, now
        if ctx.engine.is_main:
            runs.append_metrics(ctx.run, row)

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None:
        if ctx.engine.is_main:
            flat = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
            runs.append_metrics(ctx.run, {"kind": "eval", "split": "dev", "step": info.position.step,
                                          "epoch": round(info.epoch_float, 4), **flat,
                                          "elapsed": round(ctx.elapsed, 2)})
        self._window_start = time.perf_counter()  # evaluation time is not training time


class EarlyStopping(Callback):
    """Tracks the best dev value; asks the loop to stop after `patience` evaluations without gain."""

    def __init__(self, *, patience: int | None, min_delta: float):
        self.patience, self.min_delta = patience, min_delta

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None:
        value = scores[ctx.metric]
        best = ctx.best.get("value")
        sign = 1 if ctx.mode == "max" else -1
        ctx.improved = best is None or sign * (value - best) > self.min_delta
        if ctx.improved:
            ctx.best = {"step": info.position.step, "epoch": round(info.epoch_float, 4), "metric": ctx.metric,
                        "value": value, "scores": scores}
            ctx.bad_evals = 0
        else:
            ctx.bad_evals += 1
            if self.patience is not None and ctx.bad_evals >= self.patience:
                ctx.stop_reason = (f"early stopping: dev {ctx.metric} did not improve by more than "
                                   f"{self.min_delta} in {self.patience} evaluations")


class BestModel(Callback):
    """Keeps the best weights in memory (for the test evaluation) and in `model/`."""

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None:
        if ctx.improved:
            ctx.best_state = {k: v.detach().to("cpu", copy=True) for k, v in ctx.bare.state_dict().items()}
            # The values fitted on dev belong to these weights: a later evaluation refits them for
            # later weights, which the kept model is not.
            ctx.best_extras = copy.deepcopy(ctx.state.extras)
            if ctx.engine.is_main:
                save_model_dir(ctx)
        ctx.engine.wait()


class Checkpoint(Callback):
    """`checkpoints/last/` at every evaluation and every `checkpoint_every` steps."""

    def __init__(self, every: int | None):
        self.every = every

    def on_step(self, ctx: TrainContext, info: StepInfo) -> None:
        # Not when an evaluation follows: it saves after scoring, so the checkpoint holds its result.
        if self.every and info.position.step % self.every == 0 and not ctx.eval_due:
            self.save(ctx, info.position)

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None:
        self.save(ctx, info.position)

    @staticmethod
    def save(ctx: TrainContext, position: Position, *, pending: bool = False) -> None:
        """``pending``: an interrupt cut the evaluation at ``position`` short (see TrainContext.before_eval)."""
        if ctx.engine.is_main:
            best = ctx.before_eval["best_state"] if pending and ctx.before_eval is not None else ctx.best_state
            checkpoint.save(ctx.run / "checkpoints" / "last", model=ctx.bare, optimizer=ctx.optimizer,
                            scheduler=ctx.scheduler, position=position, state=ctx.resumable_state(pending=pending),
                            rng=ctx.rng, best=best)
        ctx.engine.wait()


class Progress(Callback):
    """A rich progress bar with step, loss, lr, tokens/s and ETA; a line per evaluation."""

    def __init__(self, *, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def start(self, ctx: TrainContext, done: int) -> None:
        if not (self.enabled and ctx.engine.is_main):
            return
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Bar(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                       TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task_id = self.bar.add_task("train", total=ctx.total_steps, completed=done, info="")

    def on_step(self, ctx: TrainContext, info: StepInfo) -> None:
        if self.bar is None:
            return
        loss = getattr(ctx, "last_loss", None)
        rate = ctx.tokens / max(ctx.train_seconds, 1e-9)
        text = f"loss {loss:.4f} lr {info.lr:.2e} {rate:,.0f} tok/s" if loss is not None else ""
        self.bar.update(self.task_id, completed=info.position.step, info=text)

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None:
        if self.bar is None:
            return
        mark = " *" if ctx.improved else ""
        self.bar.console.print(f"step {info.position.step} epoch {info.epoch_float:.2f}: dev {ctx.metric} "
                               f"{scores[ctx.metric]:.4f}{mark}", markup=False, emoji=False, highlight=False)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def save_model_dir(ctx: TrainContext) -> Path:
    """The kept model: loadable with `from_pretrained`, its processor and task.json beside it."""
    folder = ctx.run / "model"
    tmp = ctx.run / ".model.tmp"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    model = ctx.bare
    if hasattr(model, "merge_and_unload") and ctx.merge_lora:
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True)
    ctx.processor.save_pretrained(tmp)
    write_json(tmp / "task.json", {"task": ctx.task.name, "labels": ctx.state.labels, "extras": ctx.state.extras,
                                        "adapter": hasattr(model, "peft_config")})
    swap_folder(tmp, folder)  # a kill at any moment leaves one complete model folder
    return folder
