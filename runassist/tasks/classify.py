"""Sequence classification of a text or a text pair: single-label (softmax + cross-entropy)
or multi-label (sigmoid + BCE, per-label thresholds tuned on dev).

Texts longer than ``model.max_length`` are either cut (``task.long_text: truncate``: the head is
kept, and the number of examples cut is reported) or split into overlapping windows
(``task.long_text: windows``, ``tasks.windows``) whose logits are averaged per example, so every
token is read.

Windows are built here from the tokenizer's own ids, not with the tokenizer's
``return_overflowing_tokens``: for a text pair that gives the cartesian product of both
texts' windows (thousands of windows for two long texts). Here the longer text of a pair
is windowed and the shorter one repeated in every window. The special tokens and token
type ids around the text(s) are the tokenizer's own, found by encoding a probe, so any fast
tokenizer's template ([CLS] a [SEP] b [SEP], <s> a </s></s> b </s>, ...) works as is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from runassist.config import TaskSection
from runassist.data.checks import CheckReport, SplitStats, percentiles
from runassist.data.records import Split, TextExample
from runassist.errors import ConfigError, DataError, RunassistError
from runassist.tasks.base import Capabilities, Feature, TaskState, pad_inputs, softmax
from runassist.tasks.default import BaseTask
from runassist.tasks.layout import PairLayout
from runassist.tasks.windows import window_starts

DEFAULT_THRESHOLD = 0.5  # multi-label: until thresholds are tuned on dev
IMBALANCE_WARN = 10.0  # most/least frequent label in train; past this, plain accuracy misleads
_BATCH = 512  # texts per tokenizer call in check-data


class ClassifySection(TaskSection):
    name: Literal["classify"] = "classify"
    multi_label: bool = Field(False, description="a text may carry several labels (sigmoid + thresholds tuned on dev)")
    long_text: Literal["truncate", "windows"] = Field(
        "truncate", description="texts past model.max_length: truncate (keep the head) | windows (average "
                                "logits over windows)")


@dataclass(frozen=True)
class LabelPrediction:
    labels: tuple[str, ...]  # single-label: the top label; multi-label: those at or above their threshold
    probs: tuple[float, ...]  # one per label, in state.labels order
    # state.labels, which `probs` follows; carried so to_json(example, prediction) can name them.
    classes: tuple[str, ...] = ()


class ClassifyTask(BaseTask):
    name = "classify"
    Section = ClassifySection
    capabilities = Capabilities(onnx=True, int8_guard=True)
    peft_task_type = "SEQ_CLS"
    tool_name = "classify_text"

    def __init__(self, section: ClassifySection, data: Any, model: Any):
        super().__init__(section, data, model)
        self.multi_label = section.multi_label
        self.headline = "micro_f1" if self.multi_label else "accuracy"
        self.curve_extras = ("macro_f1",)

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name}, "model": {"source": "minilm", "max_length": 64},
                "data": {"train": "rotten-tomatoes:train", "dev": "rotten-tomatoes:dev",
                         "test": "rotten-tomatoes:test"},
                "train": {"epochs": 2, "lr": 1e-4, "batch_size": 32}}

    @property
    def title(self) -> str:
        return f"{self.name} (multi-label)" if self.multi_label else self.name

    # -- data ---------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        """CSV, TSV, JSONL, plain lines (.txt, unlabelled) or a ``<label>/<file>.txt`` folder."""
        from runassist.data.tabular import read_texts, text_format

        d = self.data_cfg
        fmt = d.format
        if fmt == "conll":
            raise ConfigError("data.format: conll is a token format; text classification reads csv, tsv or jsonl")
        if fmt == "auto":
            fmt = text_format(path)
            if fmt is None:
                raise DataError(path, None, f"cannot tell the format from '{path.suffix}'; set data.format "
                                            "(csv, tsv or jsonl)")
        examples = read_texts(path, text_column=d.text_column, label_column=d.label_column,
                              text_pair_column=d.text_pair_column, label_separator=d.label_separator,
                              multi_label=self.multi_label, fmt=fmt, require_labels=require_labels)
        return Split(str(path), examples)

    def unlabelled(self, example: TextExample) -> TextExample:
        return dataclasses.replace(example, labels=())

    def example_from_input(self, item: Any) -> TextExample:
        """A text, or a pair as ``{"text": ..., "text_pair": ...}``."""
        if isinstance(item, str):
            return TextExample(text=item)
        if isinstance(item, dict):
            unknown = set(item) - {"text", "text_pair"}
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                                 "an input object has keys: text, text_pair")
            text, pair = item.get("text"), item.get("text_pair")
            if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
                raise ValueError('an input object needs "text" (a string) and optionally "text_pair" (a string)')
            return TextExample(text=text, text_pair=pair)
        raise ValueError('each input must be a string or an object {"text": ..., "text_pair": ...}')

    def input_columns(self) -> list[str]:
        pair = self.data_cfg.text_pair_column
        return [self.data_cfg.text_column] + ([pair] if pair else [])

    def example_from_row(self, row: dict[str, str]) -> TextExample:
        # A pair model must see both texts, as in training; a short row's missing cell reads as "".
        pair = self.data_cfg.text_pair_column
        text = row.get(self.data_cfg.text_column) or ""
        return TextExample(text=text, text_pair=(row.get(pair) or "") if pair else None)

    # -- features -----------------------------------------------------------
    def encode(self, examples: Sequence[TextExample], tokenizer: Any, state: TaskState) -> list[Feature]:
        """One feature per example (``truncate``) or one per window (``windows``).

        ``meta`` of each feature is ``{"window": i, "windows": n, "truncated": bool}``;
        ``truncated`` means tokens of the example were dropped (never with windows, except
        the shorter text of a pair longer than half of max_length). A ``text_pair`` of ""
        is still a pair (``[CLS] a [SEP] [SEP]``); only None means one text.
        """
        labels = state.labels or []
        label2id = {label: i for i, label in enumerate(labels)}
        targets = [self._target(ex, label2id, labels) for ex in examples]
        max_length, stride = self.model_cfg.max_length, self.model_cfg.window_stride
        windows = self.task_cfg.long_text == "windows"
        with_types = "token_type_ids" in tokenizer.model_input_names
        firsts = _ids(tokenizer, [ex.text for ex in examples])
        paired = [i for i, ex in enumerate(examples) if ex.text_pair is not None]
        seconds = dict(zip(paired, _ids(tokenizer, [examples[i].text_pair for i in paired])))
        layouts = {False: PairLayout.probe(tokenizer, pair=False)}
        if paired:
            layouts[True] = PairLayout.probe(tokenizer, pair=True)

        features: list[Feature] = []
        for index, ex in enumerate(examples):
            first, second = firsts[index], seconds.get(index)
            layout = layouts[second is not None]
            room = max_length - layout.n_special
            if windows:
                parts, truncated = _windows(first, second, room, stride)
            else:
                parts, truncated = _truncate(first, second, room)
            for window, (a, b) in enumerate(parts):
                ids, types = layout.join(a, b)
                inputs = {"input_ids": ids, "token_type_ids": types} if with_types else {"input_ids": ids}
                features.append(Feature(example=index, inputs=inputs, target=targets[index],
                                        meta={"window": window, "windows": len(parts), "truncated": truncated}))
        return features

    def _target(self, ex: TextExample, label2id: dict[str, int], known: list[str]) -> Any:
        for label in ex.labels:
            if label not in label2id:
                raise DataError(ex.source or "input", None,
                                f"label '{label}' was never seen in training; known labels: {', '.join(known)}")
        if self.multi_label:
            # An empty label set is a real multi-label answer ("none of these"), so it gets an
            # all-zero target; for unlabelled input the target is simply never used.
            hot = [0.0] * len(known)
            for label in ex.labels:
                hot[label2id[label]] = 1.0
            return hot
        if not ex.labels:
            return None
        if len(ex.labels) > 1:
            raise DataError(ex.source or "input", None,
                            f"{len(ex.labels)} labels ({', '.join(ex.labels)}) but task.multi_label is false; "
                            "set task.multi_label: true for multi-label data")
        return label2id[ex.labels[0]]

    def collate(self, features: Sequence[Feature], tokenizer: Any) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, tokenizer.pad_token_id)
        if all(f.target is not None for f in features):
            dtype = torch.float32 if self.multi_label else torch.long
            batch["labels"] = torch.tensor([f.target for f in features], dtype=dtype)
        return batch

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        from runassist.tasks.hf import load_model

        # Set explicitly both ways: a saved model's config may carry the other problem type.
        problem = "multi_label_classification" if self.multi_label else "single_label_classification"
        return load_model(AutoModelForSequenceClassification, source, state.labels, dropout=dropout,
                          problem_type=problem)

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy (``weights``: one per class) or BCE (``weights``: pos_weight, one per label).

        In float32 whatever the logits' dtype: bf16 logits lose the small differences the loss is made of.
        """
        logits = outputs.logits.float()
        if weights is not None:
            weights = weights.to(device=logits.device, dtype=torch.float32)
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, batch["labels"].float(), pos_weight=weights)
        return F.cross_entropy(logits, batch["labels"], weight=weights)

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[TextExample], features: Sequence[Feature],
               outputs: Sequence[np.ndarray], state: TaskState) -> list[LabelPrediction]:
        probs = self._probs(len(examples), features, outputs)
        classes = tuple(state.labels or ())  # one tuple shared by every prediction
        predictions = []
        if self.multi_label:
            thresholds = _thresholds(state)
            for row in probs:
                chosen = sorted((i for i in range(len(row)) if row[i] >= thresholds[i]), key=lambda i: -row[i])
                predictions.append(LabelPrediction(labels=tuple(classes[i] for i in chosen),
                                                   probs=tuple(float(p) for p in row), classes=classes))
        else:
            for row in probs:
                predictions.append(LabelPrediction(labels=(classes[int(row.argmax())],),
                                                   probs=tuple(float(p) for p in row), classes=classes))
        return predictions

    def fit(self, examples: Sequence[TextExample], features: Sequence[Feature], outputs: Sequence[np.ndarray],
            state: TaskState) -> dict[str, Any]:
        """Multi-label: per-label thresholds that maximise each label's F1 on dev."""
        if not self.multi_label:
            return {}
        from runassist.metrics.classification import tune_thresholds

        probs = self._probs(len(examples), features, outputs)
        index = {label: i for i, label in enumerate(state.labels or ())}
        gold = np.zeros(probs.shape, dtype=np.int8)
        for row, ex in enumerate(examples):
            for label in ex.labels:
                if label in index:  # encode() has already refused unknown labels
                    gold[row, index[label]] = 1
        return {"thresholds": [float(t) for t in tune_thresholds(probs, gold)]}

    def decision_rows(self, feature: Feature, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits).reshape(1, -1)

    def margins(self, features: Sequence[Feature], outputs: Sequence[np.ndarray], state: TaskState) -> list[float]:
        """Margin of each text's decision on its averaged window logits (what ``decode`` reads),
        given to each of its windows. Single-label: the gap between the top two logits.
        Multi-label: twice the smallest distance of a logit from its threshold's logit (one
        logit moving is enough to flip it)."""
        if not features:
            return []
        mean = _mean_logits(max(f.example for f in features) + 1, features, outputs)
        if self.multi_label:
            t = np.clip(np.asarray(_thresholds(state)), 1e-6, 1 - 1e-6)
            per_text = 2 * np.abs(mean - np.log(t / (1 - t))).min(axis=1)
        elif mean.shape[1] < 2:
            per_text = np.full(len(mean), np.inf)
        else:
            top2 = np.partition(mean, -2, axis=1)[:, -2:]
            per_text = top2[:, 1] - top2[:, 0]
        return [float(per_text[f.example]) for f in features]

    def score(self, examples: Sequence[TextExample], predictions: Sequence[LabelPrediction],
              state: TaskState) -> dict[str, Any]:
        scorer = self.scorer(state)
        scorer.add(examples, predictions)
        return scorer.result()

    def scorer(self, state: TaskState) -> _LabelScorer:
        return _LabelScorer(state.labels or [], multi_label=self.multi_label)

    def to_json(self, example: TextExample, prediction: LabelPrediction) -> dict[str, Any]:
        if len(prediction.classes) != len(prediction.probs):
            raise ValueError("prediction.classes must name every probability (predictions come from decode())")
        out: dict[str, Any] = {"labels": list(prediction.labels)}
        if not self.multi_label:
            out["label"] = prediction.labels[0]
        # Every label's probability, highest first (sorted() is stable: ties keep label order).
        ranked = sorted(zip(prediction.classes, prediction.probs), key=lambda item: -item[1])
        out["probs"] = {label: round(p, 4) for label, p in ranked}
        return out

    def outcome(self, prediction: LabelPrediction) -> tuple[str, ...]:
        return tuple(prediction.labels)

    def gold_json(self, example: TextExample) -> dict[str, Any]:
        """The text (and pair) and its gold labels, beside the prediction in eval/<split>.jsonl."""
        pair = {"text_pair": example.text_pair} if example.text_pair is not None else {}
        return {"text": example.text, **pair, "gold": list(example.labels)}

    # -- check-data -----------------------------------------------------------
    def split_stats(self, spec: str, examples: Sequence[TextExample]) -> SplitStats:
        stats = super().split_stats(spec, examples)
        stats.words = sum(len(ex.text.split()) + len((ex.text_pair or "").split()) for ex in examples)
        stats.length = percentiles([len(ex.text) + len(ex.text_pair or "") for ex in examples])
        return stats

    def overlap_key(self, example: TextExample) -> tuple[str, str | None]:
        return (" ".join(example.text.split()), " ".join(example.text_pair.split()) if example.text_pair else None)

    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        """Also: one label only (nothing to tell apart), and imbalance that makes accuracy mislead."""
        super().check_labels(read, report)
        if "train" not in read:
            return
        counts = self.label_counts(read["train"])
        if len(counts) == 1:
            report.errors.append(f"train: only one label ('{next(iter(counts))}'); a classifier needs two or more")
        elif len(counts) >= 2:
            ordered = sorted(counts.values())
            ratio = ordered[-1] / ordered[0]
            if ratio >= IMBALANCE_WARN:
                rare = min(counts, key=lambda k: counts[k])
                report.warnings.append(
                    f"train: labels are imbalanced {ratio:.0f}:1 (rarest '{rare}', {counts[rare]} examples); "
                    "consider train.class_weights: balanced and read per-label F1, not accuracy")

    def check_processor(self, name: str, examples: Sequence[TextExample], tokenizer: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        lengths, unk, total = [], 0, 0
        for i in range(0, len(examples), _BATCH):
            chunk = examples[i: i + _BATCH]
            texts = [ex.text for ex in chunk]
            pairs = [ex.text_pair or "" for ex in chunk] if any(ex.text_pair for ex in chunk) else None
            enc = tokenizer(texts, pairs, truncation=False, verbose=False)
            for ids in enc["input_ids"]:
                lengths.append(len(ids))
                unk += sum(1 for t in ids if t == tokenizer.unk_token_id)
                total += len(ids)
        stats.subtokens = percentiles(lengths)
        stats.over_max_length = sum(1 for n in lengths if n > self.model_cfg.max_length)
        stats.unk_share = unk / total if total else 0.0
        if stats.over_max_length:
            fate = ("cut at the end (task.long_text: windows reads them whole)" if self.task_cfg.long_text == "truncate"
                    else "read as averaged windows")
            report.warnings.append(
                f"{name}: {stats.over_max_length} of {stats.examples} texts are longer than model.max_length="
                f"{self.model_cfg.max_length} sub-tokens and will be {fate}")

    # -- report ---------------------------------------------------------------
    def report_charts(self, scores: dict[str, Any]):
        from runassist import plots

        confusion = scores.get("confusion")
        if not isinstance(confusion, dict):
            return {}
        return {"confusion.png": lambda: plots.confusion_chart(confusion.get("labels") or [],
                                                               confusion.get("matrix") or [])}

    def report_errors(self, scores: dict[str, Any], predictions: Path | None, images: dict[str, bytes]) -> str:
        from runassist.tasks.classify_report import errors_section

        return errors_section(scores, predictions, images, multi_label=self.multi_label)

    # -- compare --------------------------------------------------------------
    def comparable(self, other: ClassifySection) -> list[str]:
        if self.multi_label != other.multi_label:
            kinds = {True: "multi-label", False: "single-label"}
            raise RunassistError(f"cannot compare a {kinds[self.multi_label]} run with a {kinds[other.multi_label]} "
                                 "run: their scores are different metrics")
        return []

    def compare(self, examples: Sequence[TextExample], out_a: Sequence[LabelPrediction],
                out_b: Sequence[LabelPrediction], *, labels: list[str] | None, n: int, seed: int,
                notes: list[str]) -> dict[str, Any]:
        """Accuracy and macro-F1 (micro- and macro-F1 for multi-label), each with a paired bootstrap."""
        from runassist.metrics.bootstrap import compare_classify
        from runassist.metrics.classification import score_multi, score_single
        from runassist.metrics.tables import numeric_scores, per_label_rows, share_equal

        gold_labels = [label for ex in examples for label in ex.labels]
        # One label list for both, so macro averages run over the same labels.
        labels = list(dict.fromkeys([*(labels or []), *sorted(set(gold_labels))]))
        if self.multi_label:
            gold: list[Any] = [list(ex.labels) for ex in examples]
            got_a: list[Any] = [list(p.labels) for p in out_a]
            got_b: list[Any] = [list(p.labels) for p in out_b]
            scores_a, scores_b = score_multi(gold, got_a, labels), score_multi(gold, got_b, labels)
            metrics, headline = ("micro_f1", "macro_f1"), "micro_f1"
        else:
            for ex in examples:
                if len(ex.labels) != 1:
                    raise DataError(ex.source or "input", None,
                                    f"comparing needs exactly one gold label per example, found {len(ex.labels)}")
            gold = [ex.labels[0] for ex in examples]
            got_a = [p.labels[0] for p in out_a]
            got_b = [p.labels[0] for p in out_b]
            scores_a, scores_b = score_single(gold, got_a, labels), score_single(gold, got_b, labels)
            metrics, headline = ("accuracy", "macro_f1"), "accuracy"
        body: dict[str, Any] = {
            "headline": headline,
            "overall": {m: compare_classify(gold, got_a, got_b, metric=m, labels=labels, n=n, seed=seed)
                        for m in metrics},
            "scores": {"a": numeric_scores(scores_a), "b": numeric_scores(scores_b)},
            "per_label": per_label_rows(scores_a["per_class"], scores_b["per_class"]),
            "agreement": share_equal([sorted(x) if self.multi_label else x for x in got_a],
                                     [sorted(x) if self.multi_label else x for x in got_b]),
        }
        if not self.multi_label:
            body["confusion"] = {"a": scores_a.get("confusion"), "b": scores_b.get("confusion")}
        return body

    def example_from_feedback(self, item: Any, corrected: Any) -> TextExample:
        """``{"label": "pos"}``, or ``{"labels": [...]}`` for a multi-label run."""
        example = self.example_from_input(item)
        if isinstance(corrected, dict) and isinstance(corrected.get("label"), str) and not self.multi_label:
            labels = (corrected["label"],)
        elif isinstance(corrected, dict) and isinstance(corrected.get("labels"), list) and \
                all(isinstance(x, str) for x in corrected["labels"]) and (self.multi_label or len(corrected["labels"]) == 1):
            labels = tuple(corrected["labels"])
        else:
            want = '{"labels": ["a", "b"]}' if self.multi_label else '{"label": "positive"}'
            raise ValueError(f"a classification correction is {want}")
        return dataclasses.replace(example, labels=labels)

    def dump_examples(self, examples: Sequence[TextExample]) -> tuple[str, str]:
        import json

        d = self.data_cfg
        rows = []
        for ex in examples:
            row = {d.text_column: ex.text}
            if ex.text_pair is not None:
                row[d.text_pair_column or "text_pair"] = ex.text_pair
            row[d.label_column] = list(ex.labels) if self.multi_label else ex.labels[0]
            rows.append(json.dumps(row, ensure_ascii=False))
        return ".jsonl", "".join(r + "\n" for r in rows)

    def confidence(self, prediction: LabelPrediction) -> float | None:
        if not prediction.probs:
            return None
        if self.multi_label:  # the label closest to its decision
            return float(min(abs(2 * p - 1) for p in prediction.probs))
        return float(max(prediction.probs))

    def label_item_counts(self, examples: Sequence[TextExample], predictions: Sequence[LabelPrediction],
                          labels: Sequence[str]) -> dict[str, Any]:
        """Per label, per text: (correct, predicted, gold), 0 or 1 each."""
        from runassist.metrics.classification import item_counts_by_label

        return item_counts_by_label([list(ex.labels) for ex in examples], [list(p.labels) for p in predictions],
                                    labels)

    # -- agent tools and the page -------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        text = {"type": "string", "maxLength": max_chars}
        return {"anyOf": [{**text, "description": "a text"},
                          {"type": "object", "description": "a text pair (e.g. premise and hypothesis)",
                           "properties": {"text": text, "text_pair": text},
                           "required": ["text"], "additionalProperties": False}]}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        kind = ("Assign zero or more of these labels to each text" if self.multi_label
                else "Classify each text as one of these labels")
        return (f"{kind} {about}: {', '.join(labels or [])}. Returns one prediction per input, in order: "
                "labels (the chosen ones)" + ("" if self.multi_label else ", label") +
                " and probs (every label's probability, highest first).")

    # -- helpers ------------------------------------------------------------
    def _probs(self, n: int, features: Sequence[Feature], logits: Sequence[np.ndarray]) -> np.ndarray:
        """Average each example's window logits, then softmax (single) or sigmoid (multi): [n, L]."""
        mean = _mean_logits(n, features, logits)
        # sigmoid as tanh: no overflow warning for large negative logits
        return 0.5 * (1.0 + np.tanh(mean / 2.0)) if self.multi_label else softmax(mean)


def _mean_logits(n: int, features: Sequence[Feature], logits: Sequence[np.ndarray]) -> np.ndarray:
    """Each of the n examples' window logits, averaged: [n, L] (what decode and margins read)."""
    if len(features) != len(logits):
        raise ValueError(f"{len(features)} features but {len(logits)} logit rows")
    if not features:
        return np.zeros((n, 0))
    width = np.asarray(logits[0]).shape[-1]
    sums = np.zeros((n, width), dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for feature, out in zip(features, logits):
        sums[feature.example] += np.asarray(out, dtype=np.float64).reshape(width)
        counts[feature.example] += 1
    if (counts == 0).any():
        raise ValueError(f"example {int(np.argmin(counts))} has no features to decode")
    return sums / counts[:, None]


Parts = list[tuple[list[int], list[int] | None]]  # the (a, b) token ids of each window, specials not added


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    # verbose=False: texts longer than the model are expected here; they are cut or windowed below.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _truncate(a: list[int], b: list[int] | None, room: int) -> tuple[Parts, bool]:
    """Keep the head; of a pair, cut the longer text first (the tokenizers' ``longest_first``)."""
    if b is None:
        return [(a[:room], None)], len(a) > room
    la, lb = len(a), len(b)
    if la + lb > room:
        # As the tokenizers do: the shorter text (the first on a tie) keeps up to half the room,
        # the longer one the rest.
        if la <= lb:
            la = min(la, room // 2)
            lb = room - la
        else:
            lb = min(lb, room // 2)
            la = room - lb
    return [(a[:la], b[:lb])], (la, lb) != (len(a), len(b))


def _windows(a: list[int], b: list[int] | None, room: int, stride: int) -> tuple[Parts, bool]:
    """Overlapping windows over a text; of a pair, over the longer text, with the shorter one
    (cut to half the room if it is long too) repeated in every window."""
    if b is None:
        return [(a[s:s + room], None) for s in window_starts(len(a), room, stride)], False
    if len(a) + len(b) <= room:
        return [(a, b)], False
    long_is_b = len(b) >= len(a)
    long, short = (b, a) if long_is_b else (a, b)
    keep = min(len(short), room // 2)
    truncated, short = keep < len(short), short[:keep]
    room_long = room - keep
    # The window room is smaller than for one text; a stride meant for the full room could
    # leave a step of one token (a window per token), so the overlap is capped at half the room.
    pieces = [long[s:s + room_long] for s in window_starts(len(long), room_long, min(stride, room_long // 2))]
    return [(short, piece) if long_is_b else (piece, short) for piece in pieces], truncated


def _thresholds(state: TaskState) -> list[float]:
    labels = state.labels or []
    values = state.extras.get("thresholds")
    if values is None:
        return [DEFAULT_THRESHOLD] * len(labels)
    if len(values) != len(labels):
        raise RunassistError(f"task state has {len(values)} thresholds for {len(labels)} labels "
                             f"({', '.join(labels)})")
    return [float(v) for v in values]


class _LabelScorer:
    """``ClassifyTask.scorer``: keeps each item's gold and predicted labels (tuples of the label set's own
    strings: a few pointers an item), not its text or probabilities; scikit-learn scores the whole
    lists at the end, so the numbers are exactly those of scoring everything at once."""

    def __init__(self, labels: Sequence[str], *, multi_label: bool):
        self.labels, self.multi_label = list(labels), multi_label
        self.gold: list[tuple[str, ...]] = []
        self.pred: list[tuple[str, ...]] = []

    def add(self, examples: Sequence[TextExample], predictions: Sequence[LabelPrediction]) -> None:
        for ex in examples:
            if not self.multi_label and len(ex.labels) != 1:
                raise DataError(ex.source or "input", None,
                                f"scoring needs exactly one gold label per example, found {len(ex.labels)}")
        self.gold += [tuple(ex.labels) for ex in examples]
        self.pred += [tuple(p.labels) for p in predictions]

    def result(self) -> dict[str, Any]:
        from runassist.metrics.classification import score_multi, score_single

        if self.multi_label:
            return score_multi([list(g) for g in self.gold], [list(p) for p in self.pred], self.labels)
        return score_single([g[0] for g in self.gold], [p[0] for p in self.pred], self.labels)
