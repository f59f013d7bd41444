"""The task contract: everything the trainer, the run folder, the predictor, the exporter and the
server know of a task.

A task turns examples into model inputs (``encode``), batches them (``collate``), runs the model
(``forward``; ``infer`` at prediction time), scores a batch (``loss``) and turns per-feature
outputs back into predictions about the examples (``decode``, ``score``, ``to_json``). Encoders
with a label set, extractive QA with start/end logits, generators that call ``generate()``, and
image or audio models all fit this shape: ``Feature.inputs`` may hold token ids or arrays of any
dtype, the label set may be None, and what a model returns is the task's own business.

``Task`` below is the core the trainer and predictor call. ``tasks.default.BaseTask`` implements
the parts that are the same for most tasks and the edges (check-data, report, compare, agent
tools, prediction files); a task subclasses it and writes what is its own. A new task is a
module in ``runassist/tasks/`` plus one line in ``tasks.TASKS``, or a package that registers it
under the ``runassist.tasks`` entry-point group.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Protocol, Sequence

import numpy as np
import torch

from runassist.config import DataConfig, ModelConfig, TaskSection

IGNORE_INDEX = -100  # positions the loss and the metrics skip (continuation sub-tokens, specials, padding)


@dataclass(frozen=True)
class Feature:
    """One model input. An example may give several (windows of a long sentence or document).

    ``inputs``: what ``collate`` batches, unpadded: lists of token ids, or numpy arrays of any
    dtype (pixels, audio samples). ``target``: the training label in the task's own form, None
    for unlabelled input. ``meta``: what decoding needs to map outputs back to the example.
    ``size``: what the batcher sorts by and the throughput counts (tokens for text, samples for
    audio); it defaults to the length of ``input_ids``.
    """

    example: int
    inputs: dict[str, Any]
    target: Any = None
    meta: Any = None
    size: int = -1

    def __post_init__(self) -> None:
        if self.size < 0:
            ids = self.inputs.get("input_ids")
            if ids is None:
                raise ValueError("Feature.size is required when inputs have no input_ids")
            object.__setattr__(self, "size", len(ids))


@dataclass
class TaskState:
    """What a trained task needs beyond the weights: its labels (None for tasks without a label
    set, such as generation), and values fitted on dev (multi-label thresholds, a no-answer
    threshold). Saved as ``task.json`` beside the model."""

    labels: list[str] | None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What a task's models can do beyond train and predict; the exporter, the int8 guard and the
    server read these instead of a task's name."""

    onnx: bool = True  # forward is a function of the batch tensors alone: torch.onnx.export can trace it
    int8_guard: bool = True  # decision_rows/margins say how close a decision is to flipping (export.Guard)
    streams: bool = False  # predictions come token by token (generation): stream() and prompt_tokens()
    # the loss is a mean over tokens and ``Feature.target`` is aligned with ``input_ids``: several
    # inputs can share a training row (train/packing.py)
    packs: bool = False
    text_graph: bool = False  # text_graph(): raw text to answers in one ONNX graph (export --with-tokenizer)


class Task(Protocol):
    """The core of the contract (see the module docstring)."""

    name: ClassVar[str]  # its value of task.name
    Section: ClassVar[type[TaskSection]]  # its config section: task: {name: ..., its own keys}
    headline: str  # the score early stopping, `runs` and the report lead with
    headline_mode: str  # "max" when higher is better, "min" when lower is (perplexity, WER)
    capabilities: ClassVar[Capabilities]
    peft_task_type: ClassVar[str | None]  # peft's TaskType for LoRA (TOKEN_CLS, SEQ_CLS, ...)

    def __init__(self, section: TaskSection, data: DataConfig, model: ModelConfig) -> None: ...

    # -- data ------------------------------------------------------------------------------------
    def read(self, spec: str, *, require_labels: bool = True) -> list[Any]:
        """A split (a path or a packaged alias) as examples; errors name the file and line."""
        ...

    def label_set(self, examples: Sequence[Any]) -> list[str] | None:
        """The labels a model trained on these examples predicts; None when there is no label set."""
        ...

    def label_counts(self, examples: Sequence[Any]) -> dict[str, int]: ...

    def example_from_input(self, item: Any) -> Any:
        """One input of `predict`/the service (a text, a word list, an object) as an example;
        ValueError says what was expected."""
        ...

    # -- model -----------------------------------------------------------------------------------
    def load_processor(self, source: str) -> Any:
        """The tokenizer, image processor or feature extractor of a model folder (or hub name)."""
        ...

    def encode(self, examples: Sequence[Any], processor: Any, state: TaskState) -> list[Feature]: ...

    def collate(self, features: Sequence[Feature], processor: Any) -> dict[str, torch.Tensor]:
        """A batch: padded inputs, and ``labels`` (or the task's targets) when every feature has one."""
        ...

    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module: ...

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """The model's outputs for a batch (run under autocast by the caller)."""
        ...

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        """The training loss of a batch, from ``forward``'s outputs (outside autocast: float32)."""
        ...

    def infer(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], features: Sequence[Feature],
              processor: Any = None) -> list[Any]:
        """Per-feature outputs at prediction time, as numpy arrays (or what ``decode`` reads):
        forward and slice, or ``generate()`` and the decoded text for a generative task."""
        ...

    # -- outputs ---------------------------------------------------------------------------------
    def decode(self, examples: Sequence[Any], features: Sequence[Feature], outputs: Sequence[Any],
               state: TaskState) -> list[Any]: ...

    def fit(self, examples: Sequence[Any], features: Sequence[Feature], outputs: Sequence[Any],
            state: TaskState) -> dict[str, Any]:
        """Values tuned on dev (stored in ``state.extras`` before decoding); {} when none."""
        ...

    def score(self, examples: Sequence[Any], predictions: Sequence[Any], state: TaskState) -> dict[str, Any]:
        """Metrics; holds ``headline``. Numbers at the top level, tables below."""
        ...

    def to_json(self, example: Any, prediction: Any) -> dict[str, Any]: ...


# -- helpers tasks share ------------------------------------------------------------------------

# Inference pads token inputs up to a multiple of this (``padded_to_multiple``); training does not.
# A context variable rather than a collate argument, so no task's collate has to carry it through.
_PAD_MULTIPLE: ContextVar[tuple[int, int | None]] = ContextVar("pad_multiple", default=(1, None))


@contextlib.contextmanager
def padded_to_multiple(multiple: int, limit: int | None = None) -> Iterator[None]:
    """Within this block ``pad_inputs`` pads each batch to a multiple of ``multiple`` tokens (never past
    ``limit``, the tokenizer's maximum length). Why: every distinct batch shape costs the CPU backend
    (oneDNN) its own primitives and its own sizes of buffers, which glibc's heap keeps as fragments;
    rounding 40-odd lengths down to a handful made prediction's memory flat over 100k lines
    (bench/README.md) at the same speed (multiples of 16 suit the AMX/AVX-512 kernels' blocking)."""
    token = _PAD_MULTIPLE.set((max(1, multiple), limit))
    try:
        yield
    finally:
        _PAD_MULTIPLE.reset(token)


def pad_inputs(features: Sequence[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Token-id inputs padded to the longest feature of the batch (not to max_length), rounded up
    within ``padded_to_multiple``, plus the attention mask."""
    longest = max(f.size for f in features)
    multiple, limit = _PAD_MULTIPLE.get()
    if multiple > 1:
        rounded = -(-longest // multiple) * multiple
        longest = max(longest, min(rounded, limit) if limit else rounded)
    batch: dict[str, torch.Tensor] = {}
    for key in features[0].inputs:
        fill = pad_id if key == "input_ids" else 0
        rows = [list(f.inputs[key]) + [fill] * (longest - len(f.inputs[key])) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    batch["attention_mask"] = torch.tensor(
        [[1] * f.size + [0] * (longest - f.size) for f in features], dtype=torch.long
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
