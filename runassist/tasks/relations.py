"""Relation extraction: the relation from a head mention to a tail mention of a text.

Markers: the text is marked the way Zhou & Chen (2021) found best, with typed entity markers made
of punctuation, ``@ * PER * John @`` for the head and ``# ^ ORG ^ Acme # `` for the tail (``@ John @``
when mentions have no type). Punctuation is already in every vocabulary, so no token is added
and no embedding is left untrained; the classifier reads the encoder's states at the two opening
markers (``tasks.relation_model``).

Long texts: the input is cut around the pair so that both markers always survive: one window
holding both mentions when they are close enough, else one piece around each mention, joined
(check-data counts those). A relation is never classified without its markers, which is what
truncating the tail of a long text does when the tail mention sits past max_length.

Scores: micro precision/recall/F1 over every relation except ``task.negative_label`` (the TACRED
scorer), a per-relation table and the confusion matrix; ``task.scoring: semeval`` adds the
SemEval-2010 Task 8 official macro-F1 (direction taken into account) and makes it the headline.
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
from runassist.data.records import RelationExample, Split
from runassist.errors import DataError
from runassist.tasks.base import Capabilities, Feature, TaskState, softmax
from runassist.tasks.default import BaseTask
from runassist.tasks.layout import PairLayout

_BATCH = 256
MAX_ENTITIES = 40  # entities of one text paired when following a NER run (40 -> 1,560 ordered pairs)


class RelationsSection(TaskSection):
    name: Literal["relations"] = "relations"
    negative_label: str = Field("no_relation", description="the 'no relation' label, left out of precision, "
                                                           "recall and F1 (TACRED: no_relation; SemEval: Other)")
    typed_markers: bool = Field(True, description="put the mentions' types in the markers (@ * PER * John @) "
                                                  "when the data has them")
    scoring: Literal["micro", "semeval"] = Field(
        "micro", description="micro (TACRED rules) | semeval (adds the SemEval-2010 official macro-F1, the headline)")


@dataclass(frozen=True)
class RelationPrediction:
    relation: str
    probs: tuple[float, ...]
    classes: tuple[str, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return (self.relation,)


class RelationsTask(BaseTask):
    name = "relations"
    Section = RelationsSection
    capabilities = Capabilities(onnx=True, int8_guard=True)
    peft_task_type = None  # the head is our own module: LoRA's task types do not describe it
    label_word = "relation"
    tool_name = "classify_relation"
    curve_extras = ("precision", "recall")

    def __init__(self, section: RelationsSection, data: Any, model: Any):
        super().__init__(section, data, model)
        self.headline = "semeval_macro_f1" if section.scoring == "semeval" else "f1"

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name}, "model": {"source": "minilm", "max_length": 128},
                "data": {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"},
                "train": {"epochs": 5, "lr": 1e-4, "batch_size": 16}}

    # -- data ---------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        """JSON lines (.jsonl), TACRED JSON (.json) or SemEval-2010 Task 8 (.txt); data.format overrides."""
        from runassist.data.relations import scan_relations

        fmt = self.data_cfg.format
        return scan_relations(path, fmt="auto" if fmt == "auto" else fmt, require_labels=require_labels)

    def label_units(self, example: RelationExample) -> tuple[str, ...]:
        return (example.relation,) if example.relation else ()

    def unlabelled(self, example: RelationExample) -> RelationExample:
        return dataclasses.replace(example, relation=None)

    def example_from_input(self, item: Any) -> RelationExample:
        """``{"text": ..., "head": {"start", "end", "type"?}, "tail": {...}}``."""
        from runassist.data.relations import _check_pair, _mention

        if not isinstance(item, dict) or not {"text", "head", "tail"} <= set(item) or not isinstance(item["text"], str):
            raise ValueError('each input must be {"text": ..., "head": {"start", "end"}, "tail": {"start", "end"}}')
        unknown = set(item) - {"text", "head", "tail"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; an input has text, head, tail")
        try:
            head = _mention(item["head"], item["text"], "input", None, "head")
            tail = _mention(item["tail"], item["text"], "input", None, "tail")
            _check_pair(head, tail, "input", None)
        except DataError as exc:
            raise ValueError(exc.message) from None
        return RelationExample(item["text"], head, tail)

    # -- features -----------------------------------------------------------
    def initial_extras(self, examples: Sequence[RelationExample]) -> dict[str, Any]:
        """The mention types training saw: a type the model never saw in its markers (a NER run's
        MISC, or any type for a model trained on SemEval's untyped mentions) is left out at
        prediction time instead of shown to it."""
        return {"mention_types": sorted({m[2] for ex in examples for m in (ex.head, ex.tail) if m[2]})}

    def _marked(self, ex: RelationExample, types: Sequence[str] | None = None) -> tuple[str, dict[str, tuple[int, int]]]:
        """The text with markers around both mentions, and where each mention's opening and
        closing marker characters are in it: ``{"head": (open, close), "tail": (open, close)}``.
        ``types``: the mention types the model knows (None: any)."""
        def marker(open_: str, inner: str, kind: str | None) -> tuple[str, str]:
            typed = self.task_cfg.typed_markers and kind and (types is None or kind in types)
            return (f" {open_} {inner} {kind} {inner} " if typed else f" {open_} "), f" {open_} "

        pieces = sorted([(ex.head, *marker("@", "*", ex.head[2]), "head"),
                         (ex.tail, *marker("#", "^", ex.tail[2]), "tail")], key=lambda p: p[0][0])
        out, pos, at = [], 0, {}
        for (start, end, _), opening, closing, which in pieces:
            out.append(ex.text[pos:start])
            opened = sum(map(len, out)) + 1  # the marker character itself, after the space
            out += [opening, ex.text[start:end], closing]
            at[which] = (opened, sum(map(len, out)) - 2)
            pos = end
        out.append(ex.text[pos:])
        return "".join(out), at

    def encode(self, examples: Sequence[RelationExample], tokenizer: Any, state: TaskState) -> list[Feature]:
        """One feature per example; ``meta``: the positions of the two opening markers and whether
        the middle of the text was cut to keep both."""
        if not examples:
            return []
        label2id = {label: i for i, label in enumerate(state.labels or ())}
        layout = PairLayout.probe(tokenizer, pair=False)
        room = self.model_cfg.max_length - layout.n_special
        marked = [self._marked(ex, state.extras.get("mention_types")) for ex in examples]
        encoded = tokenizer([m[0] for m in marked], add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)
        with_types = "token_type_ids" in tokenizer.model_input_names
        features = []
        for index, (ex, (text, at)) in enumerate(zip(examples, marked)):
            target = None
            if ex.relation is not None:
                if ex.relation not in label2id:
                    raise DataError(ex.source or "input", None, f"relation '{ex.relation}' was never seen in "
                                                                f"training; known: {', '.join(label2id)}")
                target = label2id[ex.relation]
            ids, offsets = encoded["input_ids"][index], encoded["offset_mapping"][index]
            head, tail = _mention_tokens(offsets, at["head"]), _mention_tokens(offsets, at["tail"])
            try:
                keep, cut = _keep(len(ids), head, tail, room)
            except DataError as exc:
                raise DataError(ex.source or "input", None, exc.message) from None
            kept = [ids[i] for i in keep]
            window, types = layout.join(kept, None)
            shift = len(layout.fixed[0])
            where = {i: n for n, i in enumerate(keep)}
            meta = {"head": shift + where[head[0]], "tail": shift + where[tail[0]], "cut": cut}
            inputs = {"input_ids": window, "token_type_ids": types} if with_types else {"input_ids": window}
            features.append(Feature(example=index, inputs=inputs, target=target, meta=meta))
        return features

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        stats = super().feature_stats(features)
        stats["examples_cut"] = sum(1 for f in features if f.meta["cut"])
        return stats

    def collate(self, features: Sequence[Feature], tokenizer: Any) -> dict[str, torch.Tensor]:
        from runassist.tasks.base import pad_inputs

        batch = pad_inputs(features, tokenizer.pad_token_id)
        batch["head_index"] = torch.tensor([f.meta["head"] for f in features], dtype=torch.long)
        batch["tail_index"] = torch.tensor([f.meta["tail"] for f in features], dtype=torch.long)
        if all(f.target is not None for f in features):
            batch["labels"] = torch.tensor([f.target for f in features], dtype=torch.long)
        return batch

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from runassist.tasks.hf import quiet_transformers
        from runassist.tasks.relation_model import EntityMarkerClassifier

        quiet_transformers()
        model = EntityMarkerClassifier.from_pretrained(source, state.labels or [], dropout=dropout)
        if dropout is not None:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = dropout
        return model

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        logits = outputs.logits.float()
        weights = weights.to(device=logits.device, dtype=torch.float32) if weights is not None else None
        return F.cross_entropy(logits, batch["labels"], weight=weights)

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[RelationExample], features: Sequence[Feature],
               outputs: Sequence[np.ndarray], state: TaskState) -> list[RelationPrediction]:
        classes = tuple(state.labels or ())
        out = []
        for feature, logits in zip(features, outputs):
            probs = softmax(np.asarray(logits, dtype=np.float64))
            out.append(RelationPrediction(classes[int(probs.argmax())], tuple(float(p) for p in probs), classes))
        return out

    def decision_rows(self, feature: Feature, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits).reshape(1, -1)

    def margins(self, features: Sequence[Feature], outputs: Sequence[np.ndarray], state: TaskState) -> list[float]:
        """The gap between the two highest logits of each pair."""
        out = []
        for x in outputs:
            x = np.asarray(x)
            if x.shape[-1] < 2:
                out.append(float("inf"))
                continue
            top2 = np.partition(x, -2)[-2:]
            out.append(float(top2[1] - top2[0]))
        return out

    def score(self, examples: Sequence[RelationExample], predictions: Sequence[RelationPrediction],
              state: TaskState) -> dict[str, Any]:
        from runassist.metrics.relations import score_relations, semeval_macro_f1

        gold = [ex.relation or "" for ex in examples]
        pred = [p.relation for p in predictions]
        labels = list(dict.fromkeys([*(state.labels or []), *gold]))
        scores = score_relations(gold, pred, labels, negative=self.task_cfg.negative_label)
        if self.task_cfg.scoring == "semeval":
            scores = {"semeval_macro_f1": semeval_macro_f1(gold, pred, other=self.task_cfg.negative_label), **scores}
        return scores

    def to_json(self, example: RelationExample, prediction: RelationPrediction) -> dict[str, Any]:
        ranked = sorted(zip(prediction.classes, prediction.probs), key=lambda item: -item[1])
        return {"relation": prediction.relation, "score": round(max(prediction.probs), 4),
                "head": _mention_json(example.text, example.head), "tail": _mention_json(example.text, example.tail),
                "probs": {label: round(p, 4) for label, p in ranked[:5]}}

    def outcome(self, prediction: RelationPrediction) -> str:
        return prediction.relation

    def gold_json(self, example: RelationExample) -> dict[str, Any]:
        return {"text": example.text, "head": list(example.head), "tail": list(example.tail),
                "gold": [example.relation] if example.relation else []}

    def export_probe(self) -> list[RelationExample]:
        text = "runassist exports this model to onnx for fast inference"
        return [RelationExample(text, (0, 9, None), (30, 34, None)), RelationExample("a b", (0, 1, None), (2, 3, None))]

    # -- following a NER run ----------------------------------------------------
    def chain_examples(self, item: Any, upstream: dict[str, Any]) -> list[RelationExample]:
        """Every ordered pair of the entities a NER run found in a text (needs their character spans)."""
        if not isinstance(item, str):
            raise ValueError("a relation run follows a NER run on texts")
        entities = [e for e in upstream.get("entities", []) if isinstance(e.get("start"), int)
                    and isinstance(e.get("end"), int) and e["start"] < e["end"] <= len(item)][:MAX_ENTITIES]
        return [RelationExample(item, (a["start"], a["end"], a.get("label")), (b["start"], b["end"], b.get("label")))
                for a in entities for b in entities if a is not b]

    def chain_json(self, item: Any, upstream: dict[str, Any], examples: Sequence[RelationExample],
                   predictions: Sequence[RelationPrediction]) -> dict[str, Any]:
        relations = [self.to_json(ex, p) for ex, p in zip(examples, predictions)
                     if p.relation != self.task_cfg.negative_label]
        for r in relations:
            r.pop("probs")
        return {"text": item, "entities": upstream.get("entities", []), "relations": relations}

    # -- check-data -----------------------------------------------------------
    def split_stats(self, spec: str, examples: Sequence[RelationExample]) -> SplitStats:
        stats = super().split_stats(spec, examples)
        stats.words = sum(len(ex.text.split()) for ex in examples)
        stats.length = percentiles([len(ex.text) for ex in examples])
        return stats

    def overlap_key(self, example: RelationExample) -> tuple:
        return example.text, example.head, example.tail

    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        super().check_labels(read, report)
        negative = self.task_cfg.negative_label
        if "train" in read and negative not in self.label_counts(read["train"]):
            report.warnings.append(f"train: no '{negative}' pairs (task.negative_label); precision, recall and F1 "
                                   "count every relation, so set task.negative_label to this data's 'no relation' "
                                   "label (SemEval: Other) if it has one")

    def check_processor(self, name: str, examples: Sequence[RelationExample], tokenizer: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Marked lengths in sub-tokens; pairs too far apart for one window (read as two pieces)."""
        features = []
        for i in range(0, len(examples), _BATCH):
            features += self._lengths(examples[i:i + _BATCH], tokenizer)
        stats.subtokens = percentiles([n for n, _ in features])
        stats.over_max_length = sum(1 for n, _ in features if n > self.model_cfg.max_length)
        cut = sum(1 for _, c in features if c)
        if stats.over_max_length:
            report.warnings.append(f"{name}: {stats.over_max_length} of {len(examples)} marked texts are longer than "
                                   f"model.max_length={self.model_cfg.max_length} sub-tokens; each is cut around its "
                                   f"pair, both markers kept; {cut} pairs are too far apart for one window and are read "
                                   "as two pieces joined")

    def _lengths(self, examples: Sequence[RelationExample], tokenizer: Any) -> list[tuple[int, bool]]:
        room = self.model_cfg.max_length - tokenizer.num_special_tokens_to_add()
        marked = [self._marked(ex) for ex in examples]
        encoded = tokenizer([m[0] for m in marked], add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)
        out = []
        for n, (_, at) in enumerate(marked):
            offsets = encoded["offset_mapping"][n]
            _, cut = _keep(len(offsets), _mention_tokens(offsets, at["head"]), _mention_tokens(offsets, at["tail"]),
                           room)
            out.append((len(offsets) + tokenizer.num_special_tokens_to_add(), cut))
        return out

    # -- agent tools and the page -------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        mention = {"type": "object", "required": ["start", "end"], "additionalProperties": False,
                   "properties": {"start": {"type": "integer", "minimum": 0}, "end": {"type": "integer", "minimum": 1},
                                  "type": {"type": "string"}}}
        return {"type": "object", "required": ["text", "head", "tail"], "additionalProperties": False,
                "properties": {"text": {"type": "string", "maxLength": max_chars, "description": "the text"},
                               "head": {**mention, "description": "character span of the first mention"},
                               "tail": {**mention, "description": "character span of the second mention"}}}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        return (f"Classify the relation from a head mention to a tail mention of a text {about}. Relations: "
                f"{', '.join(labels or [])}. Returns one prediction per input, in order: relation, score (0-1), "
                "both mentions' text and offsets, and the top relations' probabilities.")

    def labels_summary(self, labels: list[str] | None) -> str:
        return f"relations: {', '.join(labels or [])}"


def _mention_json(text: str, mention: tuple[int, int, str | None]) -> dict[str, Any]:
    start, end, kind = mention
    out: dict[str, Any] = {"start": start, "end": end, "text": text[start:end]}
    if kind:
        out["type"] = kind
    return out


def _token_at(offsets: Sequence[Sequence[int]], char: int) -> int:
    """The sub-token that covers character ``char`` (a marker)."""
    for i, (a, b) in enumerate(offsets):
        if a <= char < b:
            return i
    raise DataError("input", None, f"no sub-token covers the entity marker at character {char}; the tokenizer "
                                   "drops '@' or '#'")


def _mention_tokens(offsets: Sequence[Sequence[int]], markers: tuple[int, int]) -> tuple[int, int]:
    """The sub-tokens from a mention's opening marker to its closing marker, inclusive."""
    return _token_at(offsets, markers[0]), _token_at(offsets, markers[1])


def _keep(n: int, first: tuple[int, int], second: tuple[int, int], room: int) -> tuple[list[int], bool]:
    """Which of n sub-tokens to keep so both marked mentions survive in ``room``: all of them when
    they fit; else one window around the pair, as centred as it can be; else a piece around each
    mention, each centred on it (``True``: the middle was cut)."""
    if n <= room:
        return list(range(n)), False
    lo, hi = min(first[0], second[0]), max(first[1], second[1])
    if hi - lo + 1 <= room:
        start = max(0, min(n - room, (lo + hi + 1) // 2 - room // 2))
        return list(range(start, start + room)), False
    (a0, a1), (b0, b1) = sorted([first, second])
    len_a, len_b = a1 - a0 + 1, b1 - b0 + 1
    if len_a + len_b > room:
        raise DataError("input", None, f"the two marked mentions take {len_a + len_b} sub-tokens, more than the "
                                       f"{room} model.max_length leaves; raise model.max_length")
    room_a = max(len_a, min(room - len_b, room // 2))
    start_a = max(0, a0 - (room_a - len_a) // 2)
    end_a = min(start_a + room_a, b0)
    room_b = room - (end_a - start_a)
    start_b = max(end_a, b0 - (room_b - len_b) // 2)
    end_b = min(n, start_b + room_b)
    start_b = max(end_a, end_b - room_b)  # at the text's end, give the piece its room backwards
    return list(range(start_a, end_a)) + list(range(start_b, end_b)), True
