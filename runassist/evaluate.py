"""evaluate(run, data=..., mode=...): score a trained run on a split and write eval/<split>.*"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runassist.atomic import atomic_open, write_json
from runassist.errors import RunassistError
from runassist.predict import Predictor
from runassist.runs import split_name

# Larger than prediction's chunks: a test set of up to this many examples is batched exactly as
# training scored it (length-sorted as a whole), so `evaluate` reproduces summary.json; past it the
# outputs of only one chunk are held at a time.
EVAL_CHUNK_SIZE = 10_000


def resolve_split(cfg: Any, data: str | None) -> str:
    """`None` -> the run's test split; `dev`/`test`/`train` -> that split of the run's config;
    anything else is an asset alias or a path."""
    if data is None:
        data = "test"
    if data in ("train", "dev", "test"):
        spec = getattr(cfg.data, data)
        if not spec:
            raise RunassistError(f"--data {data}: the run's config has no data.{data}; give a path or an alias")
        return spec
    return data


def evaluate(run: str | Path, *, data: str | None = None, mode: str | None = None,
             predictor: Predictor | None = None, chunk_size: int = EVAL_CHUNK_SIZE) -> dict[str, Any]:
    """Scores of a run on a split, predicted ``chunk_size`` examples at a time. Each chunk's predictions
    go to the task's scorer (``task.scorer``: entity counts for NER, label pairs for classification)
    and to eval/<split>.* at once, then are dropped: one chunk's features, logits and predictions are
    held at a time, whatever the test set's size. The scores are those of scoring all at once."""
    predictor = predictor or Predictor.from_run(run)
    spec = resolve_split(predictor.cfg, data)
    task = predictor.task
    if mode is not None:
        if mode not in task.scoring_modes:
            choices = f"choose one of {', '.join(task.scoring_modes)}" if task.scoring_modes else "it has one way"
            raise RunassistError(f"--mode {mode!r}: a {task.name} run cannot be scored that way; {choices}")
        task = type(task)(task.task_cfg.model_copy(update={"scoring": mode}), task.data_cfg, task.model_cfg)
    examples = task.read(spec)
    if data in (None, "dev", "test"):  # the run's own split, as many examples as the run scored
        examples = examples[:predictor.cfg.data.max_eval_examples]
    # The default way keeps the plain name; another way gets its own files beside it.
    name = split_name(spec) + (f"-{mode}" if mode and mode != task.scoring_modes[0] else "")
    folder = Path(predictor.run) / "eval"
    scorer = task.scorer(predictor.state)
    pred_path = folder / f"{name}{task.prediction_suffix}"
    with atomic_open(pred_path, newline="\n") as out:  # the old file stays until the new one is whole
        for start in range(0, len(examples), chunk_size):
            part = examples[start:start + chunk_size]
            predictions = predictor.predict_examples(part)
            scorer.add(part, predictions)
            out.write(task.prediction_text(part, predictions, first=start == 0))
            del predictions
    scores = scorer.result()
    write_json(folder / f"{name}.json", scores)
    files = {"scores": str(folder / f"{name}.json"), "predictions": str(pred_path)}
    return {"split": name, "data": spec, "scores": scores, "files": files}
