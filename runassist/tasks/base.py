"""The Task protocol: everything the trainer, run folder, predictor and server know of a task.

A new task (QA, relation extraction, seq2seq, images) is a new module implementing
this protocol plus one line in ``tasks.TASKS``; nothing under ``train/``, ``predict.py``
or ``serve/`` changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100  # positions the loss and the metrics skip (continuation sub-tokens, specials, padding)


@dataclass(frozen=True)
class Feature:
    """One model input window. An example may give several (long NER sentences, long texts).

    ``inputs`` holds the tokenizer outputs the model takes (input_ids, token_type_ids, ...),
    unpadded. ``target`` is the training label: a list of label ids per token (NER), one id
    (single-label), or a multi-hot list (multi-label); None for unlabelled input.
    ``meta`` is what decoding needs to map outputs back to the example (word positions, ...).
    """

    example: int
    inputs: dict[str, list[int]]
    target: Any = None
    meta: Any = None

    @property
    def length(self) -> int:
        return len(self.inputs["input_ids"])


@dataclass
class TaskState:
    """What a trained task needs beyond the weights: its labels, and values fitted on dev
    (multi-label thresholds). Saved as ``task.json`` beside the model."""

    labels: list[str]
    extras: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    name: str
    headline: str  # the metric early stopping and `runs` use by default, e.g. "f1"
    peft_task_type: str  # peft's TaskType for LoRA: TOKEN_CLS, SEQ_CLS, ...

    def read(self, spec: str, *, require_labels: bool = True) -> list[Any]: ...

    def label_set(self, examples: Sequence[Any]) -> list[str]: ...

    def label_counts(self, examples: Sequence[Any]) -> dict[str, int]: ...

    def encode(self, examples: Sequence[Any], tokenizer: Any, state: TaskState) -> list[Feature]: ...

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        """How the examples became model inputs (windows, cut texts), for summary.json."""
        ...

    def collate(self, features: Sequence[Feature], pad_id: int) -> dict[str, torch.Tensor]: ...

    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module: ...

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor: ...

    def decode(self, examples: Sequence[Any], features: Sequence[Feature], logits: Sequence[np.ndarray],
               state: TaskState) -> list[Any]: ...

    def fit(self, examples: Sequence[Any], features: Sequence[Feature], logits: Sequence[np.ndarray],
            state: TaskState) -> dict[str, Any]: ...

    def decision_rows(self, feature: Feature, logits: np.ndarray) -> np.ndarray:
        """The rows of this feature's logits that ``decode`` reads, as ``[rows, labels]``."""
        ...

    def margins(self, features: Sequence[Feature], logits: Sequence[np.ndarray], state: TaskState) -> list[float]:
        """Per feature: how far the decisions ``decode`` makes from it are from flipping, in logits
        (a change of every logit by less than half of it cannot change them). Where decode combines
        several features (a text's windows), each gets the margin of the combined decision. The
        int8 guard (export.Guard) re-runs features below its threshold at full precision."""
        ...

    def score(self, examples: Sequence[Any], predictions: Sequence[Any], state: TaskState) -> dict[str, Any]: ...

    def to_json(self, example: Any, prediction: Any) -> dict[str, Any]: ...

    def write_predictions(self, stem: Path, examples: Sequence[Any], predictions: Sequence[Any]) -> Path:
        """Write predictions beside gold (NER: `word gold pred` CoNLL) to stem + the task's extension."""
        ...

    def example_from_input(self, item: Any) -> Any: ...


def pad_inputs(features: Sequence[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest feature of the batch (not to max_length)."""
    longest = max(f.length for f in features)
    batch: dict[str, torch.Tensor] = {}
    for key in features[0].inputs:
        fill = pad_id if key == "input_ids" else 0
        rows = [f.inputs[key] + [fill] * (longest - len(f.inputs[key])) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    batch["attention_mask"] = torch.tensor(
        [[1] * f.length + [0] * (longest - f.length) for f in features], dtype=torch.long
    )
    return batch


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence ([CLS] .. [SEP], <s> .. </s>).

    Found by encoding a one-token string, so any fast tokenizer's template works without
    a table of model families.
    """
    probe = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(probe) + 1):
        if full[start:start + len(probe)] == probe:
            return full[:start], full[start + len(probe):]
    return [], []


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
