"""`runassist retrain`: a new run from the champion and new data, without forgetting.

The new run starts from the champion's weights (``model.source = CHAMPION/model``), keeps its labels
and their head rows (``train.extend_labels``: new labels are added after them, with new rows), and
trains on the new data with the champion's own training data replayed beside it
(``data.replay``, ``data.replay_ratio`` old examples per new one): the answer spaCy's and flair's
maintainers give to catastrophic forgetting, done for the user. Dev and test stay the champion's,
so the two runs' scores are comparable; a feedback test set (``feedback export``) is scored too.

Nothing of the champion or the registry is written here: the new run is a new folder, and only
``--promote`` (the gate, gate.py) may change the registry, in one atomic step at its very end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from runassist import runs
from runassist.atomic import write_json
from runassist.errors import RunassistError


def retrain_overrides(champion: Path, data: str, *, replay_ratio: float = 1.0) -> list[str]:
    """The overrides that turn the champion's config into the retraining run's."""
    cfg = runs.load_config(champion)
    items = [f"model.source={champion.resolve() / 'model'}", f"data.train={data}", "train.extend_labels=true",
             "output.name=null"]
    if replay_ratio > 0 and cfg.data.train:
        items += [f"data.replay={cfg.data.train}", f"data.replay_ratio={replay_ratio}"]
    else:
        items += ["data.replay=null"]
    # The champion's row limits applied to its own data; the new data is used whole.
    items += ["data.max_train_examples=null"]
    return items


def retrain(champion: str | Path, data: str, *, replay_ratio: float = 1.0, feedback_test: str | None = None,
            overrides: Sequence[str] = (), samples: int = 1000, seed: int = 0,
            progress: bool = False) -> dict[str, Any]:
    """Train the new run and score it beside the champion on the champion's test split and the
    feedback test set. Returns (and writes to RUN/retrain.json) the run and the comparisons."""
    from runassist.compare import compare_runs
    from runassist.tasks import load_config
    from runassist.train.run import train

    champion = runs.require(Path(champion), "config.yaml", "model/task.json")
    if replay_ratio < 0:
        raise RunassistError(f"--replay {replay_ratio}: give 0 (no replay) or more old examples per new one")
    cfg = load_config(champion / "config.yaml", [*retrain_overrides(champion, data, replay_ratio=replay_ratio),
                                                 *overrides])
    result = train(cfg, progress=progress)
    compared = {}
    for name, spec in (("test", None), ("feedback_test", feedback_test)):
        if name == "feedback_test" and not spec:
            continue
        c = compare_runs(champion, result.run, data=spec, n=samples, seed=seed)
        compared[name] = {"data": c["data"], "n_items": c["n_items"], "headline": c["headline"],
                          "champion": c["overall"][c["headline"]]["a"], "new": c["overall"][c["headline"]]["b"],
                          "difference": c["overall"][c["headline"]], "per_label": c["per_label"],
                          "verdict": c["verdict"], "notes": c["notes"]}
    summary = {"run": str(result.run), "champion": str(champion), "data": data, "replay_ratio": replay_ratio,
               "replayed_from": cfg.data.replay, "train_examples": result.summary.get("train_examples"),
               "compared": compared}
    write_json(result.run / "retrain.json", summary)
    return summary
