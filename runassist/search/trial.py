"""One search trial, in a process of its own (``python -m runassist.search.trial ...``): an ordinary
training run whose dev evaluations are reported to the study, and which stops when the pruner says.

A process per trial, because a long study in one process creeps in memory (allocator fragmentation,
caches, leaked references: the failure transformers' in-process hyperparameter search is known for);
a finished process gives everything back.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import Any

from runassist.config import SearchConfig
from runassist.train.callbacks import Callback, TrainContext
from runassist.train.loop import StepInfo

PRUNED = "pruned"  # how summary.json's stopped_because starts for a pruned trial


def die_with_parent() -> None:
    """Linux: end this process when its parent ends, even by kill -9 (which runs no code in the parent);
    elsewhere the parent's own handling applies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def make_pruner(search: SearchConfig, n_trials: int) -> Any:
    """``auto``: the median rule (a trial below the median of earlier trials at the same evaluation
    stops), Hyperband from 30 trials, where its brackets have enough trials to compare."""
    import optuna

    kind = search.pruner
    if kind == "auto":
        kind = "hyperband" if n_trials >= 30 else "median"
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.prune_after, n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


class Pruning(Callback):
    """Reports the objective at every dev evaluation (step = the evaluation's number, comparable across
    trials whose batch sizes differ) and stops the run when the pruner says so."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric = trial, metric
        self.evaluations = 0

    def on_eval(self, ctx: TrainContext, info: StepInfo, scores: dict[str, Any]) -> None:
        self.evaluations += 1
        value = float(scores[self.metric])
        self.trial.report(value, self.evaluations)
        if self.trial.should_prune():
            ctx.stop_reason = (f"{PRUNED}: dev {self.metric} {value:.4f} at evaluation {self.evaluations} is worse "
                               f"than the pruner's mark from earlier trials")


def run_trial(config: Path, *, storage: str, study: str, trial_id: int, n_trials: int, parent_run: str | None) -> None:
    import optuna

    from runassist.search.storage import open_storage
    from runassist.tasks import load_config
    from runassist.train.run import train

    cfg = load_config(config)
    handle = optuna.load_study(study_name=study, storage=open_storage(storage),
                               pruner=make_pruner(cfg.search, n_trials))
    trial = optuna.trial.Trial(handle, trial_id)
    es = cfg.train.early_stopping
    train(cfg, progress=False, callbacks=[Pruning(trial, es.metric if es and es.metric else "")],
          parent_run=parent_run or None)


def main(argv: list[str]) -> None:
    die_with_parent()
    config, storage, study, trial_id, n_trials, parent = argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_trial(Path(config), storage=storage, study=study, trial_id=int(trial_id), n_trials=int(n_trials),
              parent_run=parent or None)


if __name__ == "__main__":
    main(sys.argv[1:])
