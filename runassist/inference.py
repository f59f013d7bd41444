"""Running a model over features in batches: shared by evaluation during training and by the predictor."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import numpy as np
import torch

from runassist.tasks.base import Feature


def length_sorted_batches(features: Sequence[Feature], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding costs little at inference."""
    order = sorted(range(len(features)), key=lambda i: features[i].length)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def logits_for(model: torch.nn.Module, features: Sequence[Feature], collate: Callable[[Sequence[Feature]], dict],
               *, batch_size: int = 64, autocast: Any = None, device: torch.device | None = None,
               guard: Any = None,
               margins: Callable[[Sequence[Feature], list[np.ndarray]], list[float]] | None = None) -> list[np.ndarray]:
    """Logits per feature, unpadded (``[tokens, labels]`` for token tasks, ``[labels]`` otherwise).

    With a ``guard`` (export.Guard: an int8 model's full-precision twin and a threshold), the
    features whose ``margins`` are below the threshold (or NaN) are run again through
    ``guard.fallback`` and take its logits: int8 answers where they are far from flipping, fp32
    where they are close.
    """
    was_training = model.training
    model.eval()
    # An exported model (export.OnnxModel) has no parameters; it names its device instead.
    device = device or getattr(model, "device", None) or next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(features)
    for idx in length_sorted_batches(features, batch_size):
        batch = collate([_unlabelled(features[i]) for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast() if autocast else contextlib.nullcontext():
            logits = model(**batch).logits
        logits = logits.float().cpu().numpy()
        for row, i in enumerate(idx):
            out[i] = logits[row, :features[i].length] if logits.ndim == 3 else logits[row]
    if was_training:
        model.train()
    if guard is not None and margins is not None and features:
        close = [i for i, m in enumerate(margins(features, out)) if not m >= guard.threshold]  # NaN: re-run
        if close:
            again = logits_for(guard.fallback, [features[i] for i in close], collate, batch_size=batch_size)
            for i, logits in zip(close, again):
                out[i] = logits
        guard.count(len(features), len(close))
    return out  # type: ignore[return-value]


def _unlabelled(feature: Feature) -> Feature:
    # The model must not compute its own loss at inference (and may not know our targets' form).
    return Feature(example=feature.example, inputs=feature.inputs, target=None, meta=feature.meta)


def predict_examples(task: Any, model: torch.nn.Module, tokenizer: Any, examples: Sequence[Any], state: Any, *,
                     features: Sequence[Feature] | None = None, batch_size: int = 64, autocast: Any = None,
                     fit: bool = False, guard: Any = None) -> list[Any]:
    """Examples in, task predictions out. With ``fit``, values tuned on these examples
    (multi-label thresholds) are stored in ``state.extras`` before decoding."""
    if features is None:
        features = task.encode(examples, tokenizer, state)
    logits = logits_for(model, features, lambda fs: task.collate(fs, tokenizer.pad_token_id),
                        batch_size=batch_size, autocast=autocast, guard=guard,
                        margins=lambda fs, out: task.margins(fs, out, state))
    if fit:
        state.extras.update(task.fit(examples, features, logits, state))
    return task.decode(examples, features, logits, state)


def write_eval(run: Any, split: str, task: Any, examples: Sequence[Any], predictions: Sequence[Any],
               scores: dict[str, Any]) -> dict[str, str]:
    """eval/<split>.json (scores) and eval/<split>.<ext> (predictions beside gold) in the run folder."""
    from pathlib import Path

    from runassist.runs import write_json

    folder = Path(run) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{split}.json", scores)
    pred_path = task.write_predictions(folder / split, examples, predictions)
    return {"scores": str(folder / f"{split}.json"), "predictions": str(pred_path)}
