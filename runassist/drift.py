"""`runassist drift`: what the service saw since a date (the feedback store) against the run's
training reference (RUN/model/profile.json); see data_profile.py for the measures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runassist.atomic import read_json
from runassist.data_profile import build, compare
from runassist.errors import RunassistError


def drift_report(run: Path, store: Any, *, since: str | None = None, all_models: bool = False) -> dict[str, Any]:
    from runassist import runs
    from runassist.tasks import make_task

    run = runs.require(Path(run), "config.yaml", "model/task.json")
    path = run / "model" / "profile.json"
    if not path.exists():
        raise RunassistError(f"{run.name} has no training reference ({path.name}); runs trained by this version "
                             "of runassist write one")
    reference = read_json(path)
    task = make_task(runs.load_config(run))
    rows = store.predictions(since=since, model=None if all_models else run.name)
    if not rows:
        raise RunassistError(f"no predictions of {run.name} in the feedback store"
                             + (f" since {since}" if since else "") + " (or use --all-models)")
    examples, outputs, confidences, skipped = [], [], [], 0
    for row in rows:
        try:
            examples.append(task.example_from_input(row["input"]))
        except ValueError:
            skipped += 1
            continue
        outputs.append(row["output"])
        confidences.append(row["confidence"])
    current = build(task, examples, outputs, confidences, task.load_processor(str(run / "model")))
    return {"run": run.name, "since": since, "skipped": skipped, "reference": reference, "current": current,
            **compare(reference, current)}
