"""Running a model over features in batches: shared by evaluation during training and by the predictor."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import torch

from runassist.atomic import write_json
from runassist.tasks.base import Feature, padded_to_multiple

# Token batches at inference are padded to a multiple of this many positions: a few batch shapes
# instead of one per length keeps the CPU backend's memory flat over long files (tasks.base).
PAD_MULTIPLE = 16


def length_sorted_batches(features: Sequence[Feature], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar size, so padding costs little at inference."""
    order = sorted(range(len(features)), key=lambda i: features[i].size)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def outputs_for(task: Any, model: Any, features: Sequence[Feature], processor: Any, state: Any, *,
                batch_size: int = 64, autocast: Any = None, device: torch.device | None = None,
                guard: Any = None) -> list[Any]:
    """Per-feature outputs (``task.infer``), in the order of ``features``.

    With a ``guard`` (export.Guard: an int8 model's full-precision twin and a threshold), the
    features whose ``task.margins`` are below the threshold (or NaN) are run again through
    ``guard.fallback`` and take its outputs: int8 answers where they are far from flipping, fp32
    where they are close.
    """
    was_training = model.training
    model.eval()
    # An exported model (onnx_runtime.OnnxModel) has no parameters; it names its device instead.
    device = device or getattr(model, "device", None) or next(model.parameters()).device
    out: list[Any] = [None] * len(features)
    batch_size = min(batch_size, getattr(task, "max_batch", None) or batch_size)
    limit = getattr(processor, "model_max_length", None)
    limit = limit if isinstance(limit, int) and limit < 1_000_000 else None  # "no limit" is 1e30 in transformers
    for idx in length_sorted_batches(features, batch_size):
        chunk = [features[i] for i in idx]
        with padded_to_multiple(PAD_MULTIPLE, limit):
            batch = task.collate([_unlabelled(f) for f in chunk], processor)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast() if autocast else contextlib.nullcontext():
            results = task.infer(model, batch, chunk, processor)
        for i, result in zip(idx, results):
            out[i] = result
    if was_training:
        model.train()
    if guard is not None and features:
        close = [i for i, m in enumerate(task.margins(features, out, state)) if not m >= guard.threshold]  # NaN too
        if close:
            again = outputs_for(task, guard.fallback, [features[i] for i in close], processor, state,
                                batch_size=batch_size)
            for i, result in zip(close, again):
                out[i] = result
        guard.count(len(features), len(close))
    return out


def _unlabelled(feature: Feature) -> Feature:
    # The model must not compute its own loss at inference (and may not know our targets' form).
    return Feature(example=feature.example, inputs=feature.inputs, target=None, meta=feature.meta, size=feature.size)


def predict_examples(task: Any, model: Any, processor: Any, examples: Sequence[Any], state: Any, *,
                     features: Sequence[Feature] | None = None, batch_size: int = 64, autocast: Any = None,
                     fit: bool = False, guard: Any = None) -> list[Any]:
    """Examples in, task predictions out. With ``fit``, values tuned on these examples
    (multi-label thresholds) are stored in ``state.extras`` before decoding."""
    if features is None:
        features = task.encode(examples, processor, state)
    outputs = outputs_for(task, model, features, processor, state, batch_size=batch_size, autocast=autocast,
                          guard=guard)
    if fit:
        state.extras.update(task.fit(examples, features, outputs, state))
    return task.decode(examples, features, outputs, state)


def write_eval(run: str | Path, split: str, task: Any, examples: Sequence[Any], predictions: Sequence[Any],
               scores: dict[str, Any]) -> dict[str, str]:
    """eval/<split>.json (scores) and eval/<split><suffix> (predictions beside gold) in the run folder."""
    folder = Path(run) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{split}.json", scores)
    pred_path = task.write_predictions(folder / split, examples, predictions)
    return {"scores": str(folder / f"{split}.json"), "predictions": str(pred_path)}
