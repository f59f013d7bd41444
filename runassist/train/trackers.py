"""The trackers ``output.track`` names (runassist.train.tracking holds what they share)."""

from __future__ import annotations

from runassist.config import OutputConfig
from runassist.train.tracking import TensorBoardTracker, Tracker


def trackers(output: OutputConfig, *, every: int, parent_run: str | None = None) -> list[Tracker]:
    """The trackers ``output.track`` names. ``parent_run``: an MLflow run this run is a child of (a
    search trial under its study's run)."""
    found: list[Tracker] = []
    for name in dict.fromkeys(output.track):
        if name == "tensorboard":
            found.append(TensorBoardTracker(every=every))
        elif name == "mlflow":
            from runassist.train.mlflow_tracking import MlflowTracker  # mlflow is imported only when asked for

            found.append(MlflowTracker(output, every=every, parent_run=parent_run))
    return found
