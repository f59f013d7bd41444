"""Token classification (NER): word_ids alignment, windows with stride, decoding to words and spans.

Alignment rule: the first sub-token of a word carries its tag; continuation sub-tokens,
special tokens and padding carry IGNORE_INDEX, so the loss and the metrics count each word
once (scoring sub-tokens double-counts entities).

Long sentences are cut into overlapping windows of sub-tokens; every word gets exactly one
prediction, taken from the window where its first sub-token has the most context
(the larger of the distances to the nearer window edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from runassist.config import DataConfig, ModelConfig, TaskConfig
from runassist.data.records import TokenExample
from runassist.errors import DataError
from runassist.tasks.base import IGNORE_INDEX, Feature, TaskState, pad_inputs, softmax, special_tokens


@dataclass(frozen=True)
class TagPrediction:
    tags: tuple[str, ...]
    scores: tuple[float, ...]  # probability of the chosen tag, per word


class NerTask:
    name = "ner"
    headline = "f1"
    peft_task_type = "TOKEN_CLS"

    def __init__(self, task: TaskConfig, data: DataConfig, model: ModelConfig):
        self.task_cfg, self.data_cfg, self.model_cfg = task, data, model

    # -- data ---------------------------------------------------------------
    def read(self, spec: str, *, require_labels: bool = True) -> list[TokenExample]:
        from runassist.data.load import read_examples

        return read_examples(spec, task="ner", data=self.data_cfg, require_labels=require_labels)

    def label_set(self, examples: Sequence[TokenExample]) -> list[str]:
        types = sorted({tag[2:] for ex in examples for tag in (ex.tags or ()) if tag != "O"})
        return ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]

    def label_counts(self, examples: Sequence[TokenExample]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ex in examples:
            for tag in ex.tags or ():
                counts[tag] = counts.get(tag, 0) + 1
        return counts

    def example_from_input(self, item: Any) -> TokenExample:
        """A text (split into words by `data.conll.tokenize_with_offsets`, offsets kept) or a list of words."""
        from runassist.data.conll import tokenize_with_offsets

        if isinstance(item, str):
            tokens, offsets = tokenize_with_offsets(item)
            return TokenExample(tokens=tuple(tokens), text=item, offsets=tuple(offsets))
        if isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
            return TokenExample(tokens=tuple(item))
        raise ValueError("each input must be a string or a list of strings")

    # -- features -----------------------------------------------------------
    def encode(self, examples: Sequence[TokenExample], tokenizer: Any, state: TaskState) -> list[Feature]:
        label2id = {label: i for i, label in enumerate(state.labels)}
        prefix, suffix = special_tokens(tokenizer)
        room = self.model_cfg.max_length - len(prefix) - len(suffix)
        step = max(1, room - self.model_cfg.window_stride)
        features: list[Feature] = []
        words = [list(ex.tokens) for ex in examples]
        encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False) if words else None
        for index, ex in enumerate(examples):
            ids = encoded["input_ids"][index]
            word_ids = encoded.word_ids(index)
            first = _first_subtokens(word_ids)
            tag_ids = None
            if ex.tags is not None:
                tag_ids = []
                for tag in ex.tags:
                    if tag not in label2id:
                        raise DataError(ex.source or "input", None,
                                        f"tag '{tag}' was never seen in training; known tags: {', '.join(state.labels)}")
                    tag_ids.append(label2id[tag])
            starts = list(range(0, max(len(ids) - room, 0) + step, step)) if len(ids) > room else [0]
            for start in starts:
                end = min(start + room, len(ids))
                window = ids[start:end]
                target = None
                if tag_ids is not None:
                    target = [IGNORE_INDEX] * len(prefix)
                    target += [tag_ids[word_ids[p]] if first.get(word_ids[p]) == p else IGNORE_INDEX
                               for p in range(start, end)]
                    target += [IGNORE_INDEX] * len(suffix)
                # (word, position in this window, context) for each word that starts here
                meta = [(word_ids[p], len(prefix) + p - start, min(p - start, end - 1 - p))
                        for p in range(start, end) if first.get(word_ids[p]) == p]
                features.append(Feature(example=index, inputs=_inputs(prefix + window + suffix, tokenizer),
                                        target=target, meta=meta))
                if end == len(ids):
                    break
        return features

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        per_example: dict[int, int] = {}
        for f in features:
            per_example[f.example] = per_example.get(f.example, 0) + 1
        # Windows cut nothing: every word is predicted from some window. Say how many needed them.
        return {"examples": len(per_example), "features": len(features), "examples_cut": 0,
                "examples_windowed": sum(1 for n in per_example.values() if n > 1)}

    def collate(self, features: Sequence[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, pad_id)
        if features[0].target is not None:
            longest = batch["input_ids"].shape[1]
            batch["labels"] = torch.tensor(
                [f.target + [IGNORE_INDEX] * (longest - len(f.target)) for f in features], dtype=torch.long
            )
        return batch

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        from runassist.tasks.hf import load_model

        return load_model(AutoModelForTokenClassification, source, state.labels, dropout=dropout)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(),
                               weight=weights, ignore_index=IGNORE_INDEX)

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[TokenExample], features: Sequence[Feature],
               logits: Sequence[np.ndarray], state: TaskState) -> list[TagPrediction]:
        best: list[dict[int, tuple[int, np.ndarray]]] = [{} for _ in examples]
        for feature, out in zip(features, logits):
            chosen = best[feature.example]
            for word, pos, context in feature.meta:
                if word not in chosen or context > chosen[word][0]:
                    chosen[word] = (context, out[pos])
        predictions = []
        for ex, chosen in zip(examples, best):
            tags, scores = [], []
            for word in range(len(ex.tokens)):
                if word in chosen:
                    probs = softmax(chosen[word][1].astype(np.float64))
                    k = int(probs.argmax())
                    tags.append(state.labels[k])
                    scores.append(float(probs[k]))
                else:  # the tokenizer produced no sub-token for this word (e.g. a lone control character)
                    tags.append("O")
                    scores.append(1.0)
            predictions.append(TagPrediction(tags=tuple(repair_iob2(tags)), scores=tuple(scores)))
        return predictions

    def fit(self, examples, features, logits, state) -> dict[str, Any]:
        return {}  # nothing to tune on dev for NER

    def decision_rows(self, feature: Feature, logits: np.ndarray) -> np.ndarray:
        """The first sub-token of each word this window predicts."""
        return np.asarray(logits)[[pos for _, pos, _ in feature.meta]]

    def margins(self, features: Sequence[Feature], logits: Sequence[np.ndarray], state: TaskState) -> list[float]:
        """Per window, the smallest gap between the top two tags at the positions ``decode`` reads
        (each word is decoded from one window, so a window's margin is its own)."""
        out = []
        for feature, x in zip(features, logits):
            rows = self.decision_rows(feature, x)
            if rows.shape[0] == 0 or rows.shape[-1] < 2:
                out.append(float("inf"))
                continue
            top2 = np.partition(rows, -2, axis=-1)[:, -2:]
            out.append(float((top2[:, 1] - top2[:, 0]).min()))
        return out

    def score(self, examples: Sequence[TokenExample], predictions: Sequence[TagPrediction],
              state: TaskState) -> dict[str, Any]:
        from runassist.metrics.entities import score_entities

        gold = [list(ex.tags or ()) for ex in examples]
        pred = [list(p.tags) for p in predictions]
        return score_entities(gold, pred, mode=self.task_cfg.scoring)

    def to_json(self, example: TokenExample, prediction: TagPrediction) -> dict[str, Any]:
        entities = []
        from runassist.data.conll import spans_from_iob2

        for start, end, label in spans_from_iob2(prediction.tags):
            entity: dict[str, Any] = {
                "label": label,
                "text": " ".join(example.tokens[start:end]),
                "word_start": start,
                "word_end": end,
                "score": round(float(np.mean(prediction.scores[start:end])), 4),
            }
            if example.offsets is not None and example.text is not None:
                entity["start"] = example.offsets[start][0]
                entity["end"] = example.offsets[end - 1][1]
                entity["text"] = example.text[entity["start"]:entity["end"]]
            entities.append(entity)
        return {"tokens": list(example.tokens), "tags": list(prediction.tags), "entities": entities}

    def write_predictions(self, stem: Path, examples: Sequence[TokenExample],
                          predictions: Sequence[TagPrediction]) -> Path:
        from runassist.data.conll import write_conll

        path = Path(f"{stem}.conll")
        write_conll(path, examples, [p.tags for p in predictions])
        return path


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """Make a predicted sequence valid IOB2: an ``I-X`` that does not continue an ``X`` span
    (after ``O``, at the start, or after another type) becomes ``B-X``.

    This is how conlleval reads such a tag anyway, so repairing never changes the
    conlleval score; it makes the output a valid file and the spans unambiguous.
    """
    from runassist.data.conll import to_iob2

    return to_iob2(tags, "iob2")


def _first_subtokens(word_ids: Sequence[int | None]) -> dict[int, int]:
    first: dict[int, int] = {}
    for pos, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = pos
    return first


def _inputs(ids: list[int], tokenizer: Any) -> dict[str, list[int]]:
    inputs = {"input_ids": ids}
    if "token_type_ids" in tokenizer.model_input_names:
        inputs["token_type_ids"] = [0] * len(ids)
    return inputs
