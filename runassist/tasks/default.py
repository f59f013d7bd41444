"""``BaseTask``: what most tasks do the same way, so that a task module holds only what is its own.

The core of the contract is ``tasks.base.Task``. Here are its common implementations (reading a
split from a path or a packaged alias, a Hugging Face tokenizer as the processor, ``forward`` as
``model(**inputs)``, ``infer`` as forward-and-slice) and the **edges**: the hooks through which
check-data, the report, run comparison, prediction files, the exporter and the agent tools ask a
task about its data and outputs, instead of branching on its name. Every hook has a default that
is right for a task with a label set and JSON predictions; override what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Sequence

import torch

from runassist import assets
from runassist.atomic import atomic_write
from runassist.config import DataConfig, ModelConfig, TaskSection
from runassist.data.checks import CheckReport, SplitStats, label_sources
from runassist.data.conll import raise_fatal
from runassist.data.records import Split
from runassist.errors import DataError
from runassist.tasks.base import Capabilities, Feature, TaskState


class BaseTask:
    name: ClassVar[str]
    Section: ClassVar[type[TaskSection]]
    headline: str = "accuracy"
    headline_mode: ClassVar[str] = "max"  # "min" when lower is better (a loss, an error rate)
    capabilities: ClassVar[Capabilities] = Capabilities()
    peft_task_type: ClassVar[str | None] = None
    target_keys: ClassVar[tuple[str, ...]] = ("labels",)  # batch keys forward() keeps from the model
    label_word: ClassVar[str] = "label"  # what check-data calls one of label_units' items
    scoring_modes: ClassVar[tuple[str, ...]] = ()  # `evaluate --mode` choices, set as the section's `scoring`
    prediction_suffix: ClassVar[str] = ".jsonl"  # eval/<split><suffix>: predictions beside gold
    output_formats: ClassVar[tuple[str, ...]] = ("jsonl", "csv")  # `predict --format` choices
    curve_extras: ClassVar[tuple[str, ...]] = ()  # dev scores the report draws beside the headline
    # ONNX outputs: name -> its dynamic axes by position ("batch", "sequence" or None for a fixed one)
    onnx_outputs: ClassVar[dict[str, tuple[str | None, ...]]] = {"logits": ("batch", None)}
    tool_name: ClassVar[str] = "predict"
    max_batch: ClassVar[int | None] = None  # cap on features per inference batch (a language model's logits are big)
    evaluate_before_training: ClassVar[bool] = False  # score dev with the untrained model too (what training changed)

    def __init__(self, section: TaskSection, data: DataConfig, model: ModelConfig):
        self.task_cfg, self.data_cfg, self.model_cfg = section, data, model

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        """The starting config `runassist init NAME` writes (sections as dicts; the rest defaults)."""
        return {"task": {"name": cls.name}}

    @property
    def title(self) -> str:
        """The task as the report and `runs` name it."""
        return self.name

    # -- reading ---------------------------------------------------------------------------------
    def scan(self, spec: str, *, require_labels: bool = True, lenient: bool = False) -> Split:
        """A split as read, with its problems (for check-data): a packaged alias (``wnut16:dev``) or a
        path, read by ``scan_file``. A fatal problem (a malformed line) raises, unless ``lenient``:
        then it is returned with the others, so that check-data lists every one."""
        if assets.is_alias(spec):
            kind = assets.alias_task(spec)
            if kind != self.name:
                raise DataError(spec, None, f"is {kind} data but the task is {self.name}")
            split = Split(spec, assets.read_alias(spec))  # packaged data: checked by the tests to be clean
        else:
            path = assets.existing_path(spec)
            split = self.scan_file(path, require_labels=require_labels)
            split = Split(spec, split.examples, split.problems)
            if not lenient:
                raise_fatal(split.problems)
        if not split.examples:
            raise DataError(spec, None, "no examples")
        return split

    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        raise NotImplementedError(f"task {self.name}: scan_file")

    def read(self, spec: str, *, require_labels: bool = True) -> list[Any]:
        return self.scan(spec, require_labels=require_labels).examples

    def dev_examples(self, examples: Sequence[Any]) -> list[Any]:
        """The dev examples scored at each evaluation during training (all of them by default; a
        generative task may score fewer, as generating is slow). `evaluate` always scores the whole split."""
        return list(examples)

    def label_units(self, example: Any) -> Sequence[str]:
        """The labels an example carries, as check-data and compare count them."""
        return tuple(getattr(example, "labels", ()) or ())

    def label_counts(self, examples: Sequence[Any]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ex in examples:
            for label in self.label_units(ex):
                counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))

    def label_set(self, examples: Sequence[Any]) -> list[str] | None:
        return sorted(self.label_counts(examples))

    def initial_extras(self, examples: Sequence[Any]) -> dict[str, Any]:
        """Values read off the training examples that encoding and decoding need later (saved in
        task.json with the labels): a relation run records which mention types its markers held."""
        return {}

    def unlabelled(self, example: Any) -> Any:
        """The example without its gold labels (compare predicts without them)."""
        raise NotImplementedError(f"task {self.name}: unlabelled")

    def input_columns(self) -> list[str]:
        """Columns a CSV/TSV given to `predict` must have."""
        return [self.data_cfg.text_column]

    def example_from_row(self, row: dict[str, str]) -> Any:
        """One CSV/TSV row given to `predict` (a missing cell of a short row reads as "")."""
        return self.example_from_input(row.get(self.data_cfg.text_column) or "")

    # -- model -----------------------------------------------------------------------------------
    def check_source(self, source: str) -> None:
        """Say what is wrong with ``model.source`` before any compute is spent."""
        from runassist.tasks.hf import check_model_folder

        check_model_folder(source)

    def load_processor(self, source: str) -> Any:
        from runassist.tasks.hf import load_tokenizer

        return load_tokenizer(source)

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        """How the examples became model inputs, for summary.json: windows, cut examples."""
        per_example: dict[int, int] = {}
        cut: set[int] = set()
        for f in features:
            per_example[f.example] = per_example.get(f.example, 0) + 1
            if isinstance(f.meta, dict) and f.meta.get("truncated"):
                cut.add(f.example)
        return {"examples": len(per_example), "features": len(features), "examples_cut": len(cut),
                "examples_windowed": sum(1 for n in per_example.values() if n > 1)}

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        return model(**{k: v for k, v in batch.items() if k not in self.target_keys})

    def infer(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], features: Sequence[Feature],
              processor: Any = None) -> list[Any]:
        """Forward, then each feature's logits without padding (``[tokens, labels]`` for a
        per-token output, ``[labels]`` otherwise)."""
        logits = self.forward(model, batch).logits.float().cpu().numpy()
        return [logits[row, :f.size] if logits.ndim == 3 else logits[row] for row, f in enumerate(features)]

    # -- outputs ---------------------------------------------------------------------------------
    def fit(self, examples: Sequence[Any], features: Sequence[Feature], outputs: Sequence[Any],
            state: TaskState) -> dict[str, Any]:
        return {}

    def outcome(self, prediction: Any) -> Hashable:
        """What a prediction decides, without its scores: the exporter's parity check compares these."""
        labels = getattr(prediction, "labels", None)
        return tuple(labels) if labels is not None else json.dumps(prediction, sort_keys=True, default=str)

    def agreement(self, reference: Sequence[Any], other: Sequence[Any]) -> dict[str, Any]:
        """How often two backends decide the same (examples with identical outcomes)."""
        if not reference:
            return {"agreement": 1.0, "identical": 0, "examples": 0}
        identical = sum(self.outcome(a) == self.outcome(b) for a, b in zip(reference, other))
        return {"agreement": round(identical / len(reference), 6), "identical": identical,
                "examples": len(reference)}

    def gold_json(self, example: Any) -> dict[str, Any]:
        """The example and its gold answer, as written beside the prediction in eval/."""
        return {"input": str(example)}

    def write_predictions(self, stem: Path, examples: Sequence[Any], predictions: Sequence[Any]) -> Path:
        """eval/<split><prediction_suffix>: the predictions beside gold (``prediction_text``)."""
        path = Path(f"{stem}{self.prediction_suffix}")
        atomic_write(path, self.prediction_text(examples, predictions, first=True))
        return path

    def prediction_text(self, examples: Sequence[Any], predictions: Sequence[Any], *, first: bool) -> str:
        """A chunk of ``write_predictions``' file: `evaluate` writes a large test set a chunk at a time,
        and the chunks' texts joined must be the file written in one piece (``first``: the file's first
        chunk). Here JSONL: each example, its gold answer and the prediction, a line each."""
        return "".join(json.dumps({**self.gold_json(ex), **self.to_json(ex, p)}, ensure_ascii=False) + "\n"
                       for ex, p in zip(examples, predictions))

    def scorer(self, state: TaskState) -> Any:
        """What `evaluate` adds each chunk's examples and predictions to (``add``) and reads the scores
        from at the end (``result``: ``score``'s dict, the same numbers). This default keeps them all,
        for scores that need every item at once; a task whose scores are sums over items keeps only
        those (NER: entity counts; classification: the label pairs)."""
        return KeepAllScorer(self, state)

    def format_output(self, fmt: str, examples: Sequence[Any], predictions: Sequence[Any]) -> str:
        """Prediction files in the task's own formats (``output_formats`` beyond jsonl and csv)."""
        raise ValueError(f"--format {fmt!r}: a {self.name} run writes {', '.join(self.output_formats)}")

    def output_joiner(self, fmt: str) -> str:
        """What goes between the ``format_output`` texts of two chunks of one file (batch prediction
        writes a chunk at a time): the file must read as if it had been written in one piece."""
        return ""

    def export_probe(self) -> list[Any]:
        """Two inputs of different sizes to trace the ONNX graph with (so its batch holds padding)."""
        return [self.example_from_input("runassist exports this model to onnx ."),
                self.example_from_input("a short one")]

    # -- media inputs (images, audio) --------------------------------------------------------------
    # A task whose inputs are files sets ``media`` ("image", "audio") and the file suffixes it reads.
    # `predict` then takes such files, a folder of them, or a list of paths; the service takes base64
    # in JSON and multipart/form-data uploads; the page shows a drop zone for them. Each file reaches
    # the task as bytes through ``media_example``, whatever door it came in by.
    media: ClassVar[str | None] = None
    media_suffixes: ClassVar[tuple[str, ...]] = ()

    def media_example(self, data: bytes, name: str) -> Any:
        """One file's bytes (read from disk, decoded from base64, or uploaded) as an unlabelled example;
        ``name`` is its path or upload name, for messages and outputs. ValueError says what is wrong
        (unreadable, too many pixels, wrong sampling rate that cannot be fixed); MediaTooLarge (below)
        when it is over a size limit, which the service answers with 413."""
        raise ValueError(f"a {self.name} model takes text, not files")

    def training_collate(self, features: Sequence[Feature], processor: Any, rng: Any) -> dict[str, torch.Tensor]:
        """The batch the trainer steps on: ``collate`` plus the task's training-time augmentation
        (random crops and flips of images), drawn from ``rng`` (a numpy Generator the trainer seeds
        and checkpoints, so a resumed run sees the same augmentations). Evaluation and prediction
        call ``collate``: never augmented."""
        return self.collate(features, processor)

    # -- generation ------------------------------------------------------------------------------
    def stream(self, model: torch.nn.Module, processor: Any, example: Any, state: TaskState, *,
               stop: Any = None, settings: dict[str, Any] | None = None, usage: dict[str, Any] | None = None) -> Any:
        """The prediction for one example as text pieces, as they are made (``capabilities.streams``);
        ``stop`` (a threading.Event) ends it early; ``settings`` override the run's generation settings
        (max_new_tokens, temperature, ...); ``usage`` (a dict) is filled when it ends: prompt_tokens,
        completion_tokens, and ``ended``: eos, length or stopped (generation.stream_text)."""
        raise ValueError(f"a {self.name} model does not stream its predictions")

    def prompt_tokens(self, processor: Any, example: Any) -> int | None:
        """How many tokens the prompt of a streamed prediction has, before any cut: the service
        refuses a prompt longer than model.max_length. None: not known (characters are checked)."""
        return None

    def default_lora(self, model: torch.nn.Module) -> Any:
        """LoRA settings (config.LoraConfig) the task wants when train.lora is not set; None: full fine-tuning."""
        return None

    # -- following another run (`runassist predict FIRST,THIS`) -------------------------------------
    def chain_examples(self, item: Any, upstream: dict[str, Any]) -> list[Any]:
        """The examples this task makes of one input and another run's prediction for it (a relation
        run pairs the entities a NER run found)."""
        raise ValueError(f"a {self.name} run cannot follow another run")

    def chain_json(self, item: Any, upstream: dict[str, Any], examples: Sequence[Any],
                   predictions: Sequence[Any]) -> dict[str, Any]:
        """One input's answer from the other run's prediction and this task's predictions."""
        raise ValueError(f"a {self.name} run cannot follow another run")

    # -- check-data ------------------------------------------------------------------------------
    def split_stats(self, spec: str, examples: Sequence[Any]) -> SplitStats:
        """What one split holds: examples, words, label counts, length percentiles."""
        return SplitStats(spec, examples=len(examples),
                          labels={k: v[0] for k, v in sorted(label_sources(examples, self.label_units).items())})

    def overlap_key(self, example: Any) -> Hashable:
        """Examples with equal keys count as the same example across splits (default: the same input,
        as ``gold_json`` writes it without the gold answer)."""
        return json.dumps(self.gold_json(self.unlabelled(example)), sort_keys=True, ensure_ascii=False, default=str)

    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        """Labels of dev/test never seen in train; train without any label."""
        if "train" not in read:
            return
        train = label_sources(read["train"], self.label_units)
        if not train:
            report.errors.append(f"train: no {self.label_word}s at all; the model would have nothing to learn")
        for name in ("dev", "test"):
            for label, (count, source) in label_sources(read.get(name, []), self.label_units).items():
                if label not in train:
                    report.errors.append(f"{source}: {self.label_word} '{label}' ({count} in {name}) "
                                         "never appears in train")

    def check_processor(self, name: str, examples: Sequence[Any], processor: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Checks that need the model's processor (lengths in sub-tokens, unknown tokens); they fill
        ``stats`` and add warnings."""

    # -- report ----------------------------------------------------------------------------------
    def report_charts(self, scores: dict[str, Any]) -> dict[str, Callable[[], bytes | None]]:
        """Extra PNGs for the report (name -> drawing function), beside the curves and per-label F1."""
        return {}

    def report_errors(self, scores: dict[str, Any], predictions: Path | None, images: dict[str, bytes]) -> str:
        """The report's Errors section body (HTML, escaped): what the model got wrong."""
        return ""

    # -- compare ---------------------------------------------------------------------------------
    def label_names(self, labels: Sequence[str] | None) -> set[str]:
        """What a run with these labels can predict, as comparisons name it."""
        return set(labels or ())

    def comparable(self, other: TaskSection) -> list[str]:
        """Notes on comparing a run of this section with a run of ``other`` (same task); raise
        RunassistError when their scores are different metrics."""
        return []

    def compare(self, examples: Sequence[Any], out_a: Sequence[Any], out_b: Sequence[Any], *,
                labels: list[str] | None, n: int, seed: int, notes: list[str]) -> dict[str, Any]:
        """Scores of two runs' predictions on the same examples, with a paired bootstrap of the
        headline over examples (``compare.verdict`` words it). ``labels``: both runs' labels."""
        from runassist.metrics.bootstrap import paired_bootstrap
        from runassist.metrics.tables import numeric_scores, per_label_rows

        state = TaskState(labels=labels)
        scores_a, scores_b = self.score(examples, out_a, state), self.score(examples, out_b, state)

        def headline(gold: list, pred: list) -> float:
            return float(self.score(gold, pred, state)[self.headline])

        boot = paired_bootstrap(headline, examples, out_a, out_b, n=n, seed=seed)
        return {"headline": self.headline, "overall": {self.headline: boot},
                "scores": {"a": numeric_scores(scores_a), "b": numeric_scores(scores_b)},
                "per_label": per_label_rows(scores_a.get("per_class") or {}, scores_b.get("per_class") or {}),
                "agreement": self.agreement(out_a, out_b)["agreement"]}

    # -- keeping the model current (feedback.py, label_queue.py) -----------------------------------
    def example_from_feedback(self, item: Any, corrected: Any) -> Any:
        """A labelled example from a service input and a person's corrected output for it (the body
        of `POST /v1/feedback`); ValueError says what form the correction must take."""
        raise ValueError(f"a {self.name} run does not take corrections yet")

    def dump_examples(self, examples: Sequence[Any]) -> tuple[str, str]:
        """Labelled examples as a file this task reads back: (suffix, text)."""
        raise ValueError(f"a {self.name} run cannot write its examples as a dataset")

    def confidence(self, prediction: Any) -> float | None:
        """How sure the prediction is, 0-1 (the least sure part of it): the service queues inputs below
        a threshold for labelling; None when the task has no such number."""
        return None

    def json_labels(self, output: dict[str, Any]) -> list[str]:
        """The labels a JSON prediction (``to_json``) holds: drift counts their distribution."""
        labels = output.get("labels")
        if isinstance(labels, list):
            return [str(x) for x in labels]
        return [str(output["label"])] if isinstance(output.get("label"), str) else []

    def label_item_counts(self, examples: Sequence[Any], predictions: Sequence[Any],
                          labels: Sequence[str]) -> dict[str, Any] | None:
        """Per label, an ``[n_items, 3]`` array of ``(correct, predicted, gold)`` counts per example, so
        the promotion gate can bootstrap each label's F1 over the same resamples as the headline.
        None: the task has no per-label scores (the gate then judges the headline alone, and says so)."""
        return None

    # -- agent tools and the page ------------------------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        """JSON schema of one input of the tool (`GET /v1/tools`, MCP) and of `POST /v1/predict`."""
        return {"type": "string", "maxLength": max_chars, "description": "a text"}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        return f"Run the {self.name} model {about} on texts." + (f" Labels: {', '.join(labels)}." if labels else "")

    def labels_summary(self, labels: list[str] | None) -> str:
        """One line about the labels, for the page."""
        return f"labels: {', '.join(labels)}" if labels else ""



class KeepAllScorer:
    """``BaseTask.scorer``'s default: keeps every chunk's examples and predictions and scores them at the end."""

    def __init__(self, task: Any, state: TaskState):
        self.task, self.state = task, state
        self.examples: list[Any] = []
        self.predictions: list[Any] = []

    def add(self, examples: Sequence[Any], predictions: Sequence[Any]) -> None:
        self.examples += examples
        self.predictions += predictions

    def result(self) -> dict[str, Any]:
        return self.task.score(self.examples, self.predictions, self.state)
