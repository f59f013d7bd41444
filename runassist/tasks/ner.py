"""Token classification (NER): word_ids alignment, windows with stride, decoding to words and spans.

Alignment rule: the first sub-token of a word carries its tag; continuation sub-tokens,
special tokens and padding carry IGNORE_INDEX, so the loss and the metrics count each word
once (scoring sub-tokens double-counts entities).

Long sentences are cut into overlapping windows of sub-tokens (``tasks.windows``); every word
gets exactly one prediction, taken from the window where its first sub-token has the most
context.
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
from runassist.data.records import Split, TokenExample
from runassist.data.tags import spans_from_iob2, to_iob2
from runassist.errors import ConfigError, DataError
from runassist.tasks.base import IGNORE_INDEX, Capabilities, Feature, TaskState, pad_inputs, softmax, special_tokens
from runassist.tasks.default import BaseTask
from runassist.tasks.windows import context, window_spans

_JSON = (".jsonl", ".json", ".ndjson")
_BATCH = 512  # sentences per tokenizer call in check-data


class NerSection(TaskSection):
    name: Literal["ner"] = "ner"
    scoring: Literal["conlleval", "strict"] = Field(
        "conlleval", description="conlleval (the CoNLL-2000 rules, the usual one to report) | strict (exact IOB2 spans)")


@dataclass(frozen=True)
class TagPrediction:
    tags: tuple[str, ...]
    scores: tuple[float, ...]  # probability of the chosen tag, per word


class NerTask(BaseTask):
    name = "ner"
    Section = NerSection
    headline = "f1"
    capabilities = Capabilities(onnx=True, int8_guard=True, packs=True, text_graph=True)
    peft_task_type = "TOKEN_CLS"
    label_word = "entity type"
    scoring_modes = ("conlleval", "strict")
    prediction_suffix = ".conll"
    output_formats = ("jsonl", "csv", "conll")
    curve_extras = ("precision", "recall")
    onnx_outputs = {"logits": ("batch", "sequence", None)}
    tool_name = "extract_entities"

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        # Chosen on WNUT-16 with MiniLM: small models need a higher learning rate and more epochs than
        # the BERT-base recipe (5e-5 x 3 reaches test F1 0.27 there; 1e-4+ with early stopping 0.45+).
        return {"task": {"name": cls.name}, "model": {"source": "minilm", "max_length": 128},
                "data": {"train": "wnut16:train", "dev": "wnut16:dev", "test": "wnut16:test"},
                "train": {"epochs": 8, "lr": 2e-4, "batch_size": 16}}

    # -- data ---------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        """CoNLL (any extension but .jsonl/.json: CoNLL files come as .conll, .txt, .bio, .tsv ...)
        or token JSONL, converted to IOB2."""
        from runassist.data.conll import scan_conll, scan_token_jsonl

        if path.is_dir():
            raise DataError(path, None, "is a folder; NER reads one CoNLL or JSONL file")
        fmt = self.data_cfg.format
        if fmt == "csv":
            raise ConfigError("data.format: csv is not a NER format; NER reads conll (token and tag columns) or jsonl")
        if fmt == "auto":
            fmt = "jsonl" if path.suffix.lower() in _JSON else "conll"
        reader = scan_token_jsonl if fmt == "jsonl" else scan_conll  # a two-column TSV is CoNLL
        scan = reader(path, scheme=self.data_cfg.scheme, require_tags=require_labels)
        return Split(str(path), scan.examples, scan.problems)

    def label_set(self, examples: Sequence[TokenExample]) -> list[str]:
        types = sorted({tag[2:] for ex in examples for tag in (ex.tags or ()) if tag != "O"})
        return ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]

    def label_counts(self, examples: Sequence[TokenExample]) -> dict[str, int]:
        """Per tag (what the loss's class weights and the model's label set are made of)."""
        counts: dict[str, int] = {}
        for ex in examples:
            for tag in ex.tags or ():
                counts[tag] = counts.get(tag, 0) + 1
        return counts

    def label_units(self, example: TokenExample) -> list[str]:
        """Entity types, one per entity."""
        return [kind for _, _, kind in spans_from_iob2(example.tags or ())]

    def unlabelled(self, example: TokenExample) -> TokenExample:
        return dataclasses.replace(example, tags=None)

    def example_from_input(self, item: Any) -> TokenExample:
        """A text (split into words by `data.words.tokenize_with_offsets`, offsets kept) or a list of words."""
        from runassist.data.words import tokenize_with_offsets

        if isinstance(item, str):
            tokens, offsets = tokenize_with_offsets(item)
            return TokenExample(tokens=tuple(tokens), text=item, offsets=tuple(offsets))
        if isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
            return TokenExample(tokens=tuple(item))
        raise ValueError("each input must be a string or a list of strings")

    # -- features -----------------------------------------------------------
    def encode(self, examples: Sequence[TokenExample], tokenizer: Any, state: TaskState) -> list[Feature]:
        label2id = {label: i for i, label in enumerate(state.labels or ())}
        prefix, suffix = special_tokens(tokenizer)
        room = self.model_cfg.max_length - len(prefix) - len(suffix)
        features: list[Feature] = []
        words = [list(ex.tokens) for ex in examples]
        encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False) if words else None
        with_types = "token_type_ids" in tokenizer.model_input_names
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
                                        f"tag '{tag}' was never seen in training; known tags: {', '.join(label2id)}")
                    tag_ids.append(label2id[tag])
            for start, end in window_spans(len(ids), room, self.model_cfg.window_stride):
                target = None
                if tag_ids is not None:
                    target = [IGNORE_INDEX] * len(prefix)
                    target += [tag_ids[word_ids[p]] if first.get(word_ids[p]) == p else IGNORE_INDEX
                               for p in range(start, end)]
                    target += [IGNORE_INDEX] * len(suffix)
                # (word, position in this window, context) for each word that starts here
                meta = [(word_ids[p], len(prefix) + p - start, context(p, start, end))
                        for p in range(start, end) if first.get(word_ids[p]) == p]
                window = prefix + ids[start:end] + suffix
                inputs = {"input_ids": window, "token_type_ids": [0] * len(window)} if with_types \
                    else {"input_ids": window}
                features.append(Feature(example=index, inputs=inputs, target=target, meta=meta))
        return features

    def collate(self, features: Sequence[Feature], tokenizer: Any) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, tokenizer.pad_token_id)
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

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(outputs.logits.flatten(0, 1).float(), batch["labels"].flatten(),
                               weight=weights, ignore_index=IGNORE_INDEX)

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[TokenExample], features: Sequence[Feature],
               outputs: Sequence[np.ndarray], state: TaskState) -> list[TagPrediction]:
        best: list[dict[int, tuple[int, np.ndarray]]] = [{} for _ in examples]
        for feature, out in zip(features, outputs):
            chosen = best[feature.example]
            for word, pos, ctx in feature.meta:
                if word not in chosen or ctx > chosen[word][0]:
                    chosen[word] = (ctx, out[pos])
        predictions = []
        labels = state.labels or []
        for ex, chosen in zip(examples, best):
            tags, scores = [], []
            for word in range(len(ex.tokens)):
                if word in chosen:
                    probs = softmax(chosen[word][1].astype(np.float64))
                    k = int(probs.argmax())
                    tags.append(labels[k])
                    scores.append(float(probs[k]))
                else:  # the tokenizer produced no sub-token for this word (e.g. a lone control character)
                    tags.append("O")
                    scores.append(1.0)
            predictions.append(TagPrediction(tags=tuple(repair_iob2(tags)), scores=tuple(scores)))
        return predictions

    def text_graph(self, model: torch.nn.Module, tokenizer: Any, state: TaskState, subwords: Any) -> torch.nn.Module:
        """Raw text (code points) -> words, tags and entities, as one module to trace (``tasks.ner_graph``)."""
        from runassist.tasks.ner_graph import NerTextGraph

        before, after = special_tokens(tokenizer)
        room = self.model_cfg.max_length - len(before) - len(after)
        return NerTextGraph(self, model, tokenizer, state.labels or ["O"], entity_types(state.labels or []),
                            subwords, before, after, room, self.model_cfg.window_stride)

    def text_graph_answers(self, outputs: Sequence[Any], names: dict[str, Any], text: str) -> list[dict[str, Any]]:
        """The graph's answer for one text, as ``to_json`` gives its entities (label, start, end)."""
        from runassist.tasks.ner_graph import entities

        return entities(outputs, names, text)

    def text_graph_expected(self, output: dict[str, Any]) -> list[dict[str, Any]]:
        """What the graph's answer is compared with, from ``to_json``: the entities' label and offsets."""
        return [{"label": e["label"], "start": e["start"], "end": e["end"]} for e in output.get("entities", [])]

    def decision_rows(self, feature: Feature, logits: np.ndarray) -> np.ndarray:
        """The first sub-token of each word this window predicts."""
        return np.asarray(logits)[[pos for _, pos, _ in feature.meta]]

    def margins(self, features: Sequence[Feature], outputs: Sequence[np.ndarray], state: TaskState) -> list[float]:
        """Per window, the smallest gap between the top two tags at the positions ``decode`` reads
        (each word is decoded from one window, so a window's margin is its own)."""
        out = []
        for feature, x in zip(features, outputs):
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

    def scorer(self, state: TaskState) -> Any:
        """Entity counts per type and error kind (``EntityTally``): a test set's size costs no memory."""
        return _EntityScorer(self.task_cfg.scoring)

    def to_json(self, example: TokenExample, prediction: TagPrediction) -> dict[str, Any]:
        entities = []
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

    def outcome(self, prediction: TagPrediction) -> tuple[str, ...]:
        return tuple(prediction.tags)

    def agreement(self, reference: Sequence[TagPrediction], other: Sequence[TagPrediction]) -> dict[str, Any]:
        """Identical tag sequences per sentence, and identical tags per word."""
        out = super().agreement(reference, other)
        words = sum(len(a.tags) for a in reference)
        same = sum(x == y for a, b in zip(reference, other) for x, y in zip(a.tags, b.tags))
        out["token_agreement"] = round(same / words, 6) if words else 1.0
        return out

    def gold_json(self, example: TokenExample) -> dict[str, Any]:
        return {"input": " ".join(example.tokens), "gold": list(example.tags or ())}

    def write_predictions(self, stem: Path, examples: Sequence[TokenExample],
                          predictions: Sequence[TagPrediction]) -> Path:
        """``word gold pred`` lines, conlleval style."""
        from runassist.data.conll import write_conll

        path = Path(f"{stem}{self.prediction_suffix}")
        write_conll(path, examples, [p.tags for p in predictions])
        return path

    def prediction_text(self, examples: Sequence[TokenExample], predictions: Sequence[TagPrediction], *,
                        first: bool) -> str:
        from runassist.data.conll import conll_text

        text = conll_text(examples, [p.tags for p in predictions])
        return text if first or not text else "\n" + text  # the blank line between two chunks' sentences

    def format_output(self, fmt: str, examples: Sequence[TokenExample], predictions: Sequence[TagPrediction]) -> str:
        """``conll``: ``word [gold] pred`` lines, a blank line between sentences."""
        if fmt != "conll":
            return super().format_output(fmt, examples, predictions)
        blocks = []
        for ex, pred in zip(examples, predictions):
            gold = ex.tags
            blocks.append("\n".join(f"{w} {gold[i]} {t}" if gold else f"{w} {t}"
                                    for i, (w, t) in enumerate(zip(ex.tokens, pred.tags))))
        return "\n\n".join(blocks) + "\n"

    def output_joiner(self, fmt: str) -> str:
        return "\n" if fmt == "conll" else ""  # the blank line between the last sentence of a chunk and the next

    # -- check-data -----------------------------------------------------------
    def split_stats(self, spec: str, examples: Sequence[TokenExample]) -> SplitStats:
        stats = super().split_stats(spec, examples)
        stats.words = sum(len(ex.tokens) for ex in examples)
        stats.length = percentiles([len(ex.tokens) for ex in examples])
        return stats

    def overlap_key(self, example: TokenExample) -> tuple[str, ...]:
        return example.tokens

    def check_processor(self, name: str, examples: Sequence[TokenExample], tokenizer: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Sub-token lengths; words past max_length (read only through windows); words that become
        no sub-token at all (zero-width spaces, control characters: never tagged)."""
        specials = tokenizer.num_special_tokens_to_add()
        room = self.model_cfg.max_length - specials
        lengths, cut, unk, total, missing, first = [], 0, 0, 0, 0, ""
        for i in range(0, len(examples), _BATCH):
            chunk = examples[i: i + _BATCH]
            enc = tokenizer([list(ex.tokens) for ex in chunk], is_split_into_words=True, add_special_tokens=False,
                            truncation=False, verbose=False)
            for n, (ex, ids) in enumerate(zip(chunk, enc["input_ids"])):
                word_ids = enc.word_ids(n)
                lengths.append(len(ids) + specials)
                cut += len({w for pos, w in enumerate(word_ids) if pos >= room and w is not None})
                unk += sum(1 for t in ids if t == tokenizer.unk_token_id)
                total += len(ids)
                lost = len(ex.tokens) - len({w for w in word_ids if w is not None})
                if lost and not first:
                    first = ex.source
                missing += lost
        stats.subtokens = percentiles(lengths)
        stats.over_max_length = cut
        stats.unk_share = unk / total if total else 0.0
        if cut:
            report.warnings.append(
                f"{name}: {cut} of {stats.words} words fall past model.max_length={self.model_cfg.max_length} "
                f"sub-tokens; they are only tagged through windows (model.stride={self.model_cfg.window_stride}); "
                "a larger max_length sees more context")
        if missing:
            report.warnings.append(
                f"{first}: {missing} words in {name} become no sub-token at all (e.g. zero-width or control "
                "characters) and are predicted O")

    # -- report ---------------------------------------------------------------
    def report_errors(self, scores: dict[str, Any], predictions: Path | None, images: dict[str, bytes]) -> str:
        from runassist.tasks.ner_report import errors_section

        return errors_section(scores, predictions, mode=self.task_cfg.scoring)

    # -- compare --------------------------------------------------------------
    def label_names(self, labels: Sequence[str] | None) -> set[str]:
        """Entity types: B-PER, I-PER -> PER."""
        return {label.split("-", 1)[1] if "-" in label else label for label in labels or () if label != "O"}

    def comparable(self, other: NerSection) -> list[str]:
        mine, theirs = self.task_cfg.scoring, other.scoring
        if mine == theirs:
            return []
        return [f"A scores entities the {mine} way and B the {theirs} way; both are scored the {mine} way here"]

    def compare(self, examples: Sequence[TokenExample], out_a: Sequence[TagPrediction],
                out_b: Sequence[TagPrediction], *, labels: list[str] | None, n: int, seed: int,
                notes: list[str]) -> dict[str, Any]:
        """Entity F1 with a paired bootstrap over sentences (one matrix product per resample)."""
        from runassist.metrics.bootstrap import compare_ner
        from runassist.metrics.entities import score_entities
        from runassist.metrics.tables import numeric_scores, per_label_rows, share_equal

        mode = self.task_cfg.scoring
        gold = [list(ex.tags or ()) for ex in examples]
        tags_a, tags_b = [list(p.tags) for p in out_a], [list(p.tags) for p in out_b]
        scores_a, scores_b = score_entities(gold, tags_a, mode=mode), score_entities(gold, tags_b, mode=mode)
        return {
            "mode": mode,
            "headline": "f1",
            "overall": {"f1": compare_ner(gold, tags_a, tags_b, mode=mode, n=n, seed=seed)},
            "scores": {"a": numeric_scores(scores_a), "b": numeric_scores(scores_b)},
            "per_label": per_label_rows(scores_a["per_type"], scores_b["per_type"]),
            "errors": {"a": scores_a.get("errors"), "b": scores_b.get("errors")},
            "agreement": share_equal(tags_a, tags_b),
        }

    def example_from_feedback(self, item: Any, corrected: Any) -> TokenExample:
        """``{"entities": [{"start", "end", "label"}, ...]}`` (character offsets into a text input, as the
        service returns them; an entity must cover whole words) or ``{"tags": [...]}`` (one per word)."""
        from runassist.data.tags import tag_error, to_iob2

        example = self.example_from_input(item)
        if not isinstance(corrected, dict) or not ({"entities", "tags"} & set(corrected)):
            raise ValueError('a NER correction is {"entities": [{"start": 0, "end": 5, "label": "PER"}, ...]} '
                             'or {"tags": ["B-PER", "O", ...]}')
        if "tags" in corrected:
            tags = corrected["tags"]
            if not (isinstance(tags, list) and len(tags) == len(example.tokens) and all(isinstance(t, str) for t in tags)):
                raise ValueError(f"tags: give one tag (a string) per word; the input has {len(example.tokens)} words")
            bad = next((t for t in tags if tag_error(t)), None)
            if bad is not None:
                raise ValueError(f"tags: {tag_error(bad)}")
            return TokenExample(tokens=example.tokens, tags=tuple(to_iob2(tags, "auto")), text=example.text,
                                offsets=example.offsets)
        if example.offsets is None:
            raise ValueError("entities with character offsets need a text input; for a word list give tags")
        tags = ["O"] * len(example.tokens)
        for i, ent in enumerate(corrected["entities"] or []):
            try:
                start, end, label = int(ent["start"]), int(ent["end"]), str(ent["label"])
            except (TypeError, KeyError, ValueError):
                raise ValueError(f"entities[{i}]: needs start, end (character offsets) and label") from None
            words = [w for w, (s, e) in enumerate(example.offsets) if s < end and e > start]
            if not words or example.offsets[words[0]][0] != start or example.offsets[words[-1]][1] != end:
                raise ValueError(f"entities[{i}]: {start}-{end} does not cover whole words of the input")
            if any(tags[w] != "O" for w in words):
                raise ValueError(f"entities[{i}]: overlaps another entity")
            tags[words[0]] = f"B-{label}"
            for w in words[1:]:
                tags[w] = f"I-{label}"
        return TokenExample(tokens=example.tokens, tags=tuple(tags), text=example.text, offsets=example.offsets)

    def dump_examples(self, examples: Sequence[TokenExample]) -> tuple[str, str]:
        blocks = ["\n".join(f"{w}\t{t}" for w, t in zip(ex.tokens, ex.tags or ())) for ex in examples]
        return ".conll", "\n\n".join(blocks) + ("\n" if blocks else "")

    def json_labels(self, output: dict[str, Any]) -> list[str]:
        return [str(e.get("label")) for e in output.get("entities") or [] if isinstance(e, dict)]

    def confidence(self, prediction: TagPrediction) -> float | None:
        return float(min(prediction.scores)) if prediction.scores else None

    def label_item_counts(self, examples: Sequence[TokenExample], predictions: Sequence[TagPrediction],
                          labels: Sequence[str]) -> dict[str, Any]:
        """Per entity type, per sentence: (correct, predicted, gold) entities."""
        from runassist.metrics.entities import sentence_counts_by_type

        gold = [list(ex.tags or ()) for ex in examples]
        return sentence_counts_by_type(gold, [list(p.tags) for p in predictions], mode=self.task_cfg.scoring)

    # -- agent tools and the page -------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "maxLength": max_chars,
                           "description": "a text; entities come back with character offsets"},
                          {"type": "array", "items": {"type": "string"},
                           "description": "a text already split into words"}]}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        return (f"Find named entities in texts {about}. Entity types: {', '.join(entity_types(labels or []))}. "
                "Returns one prediction per input, in order: its entities, each with label, text, start/end "
                "character offsets into the input (for a text) and word_start/word_end, and a score (0-1).")

    def labels_summary(self, labels: list[str] | None) -> str:
        return f"entity types: {', '.join(entity_types(labels or []))}"


def entity_types(labels: Sequence[str]) -> list[str]:
    """``["O", "B-PER", "I-PER", "B-LOC"]`` -> ``["PER", "LOC"]`` (first-seen order)."""
    types: dict[str, None] = {}
    for label in labels:
        if label != "O":
            types[label.split("-", 1)[1] if len(label) > 2 and label[1] == "-" else label] = None
    return list(types)


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """Make a predicted sequence valid IOB2: an ``I-X`` that does not continue an ``X`` span
    (after ``O``, at the start, or after another type) becomes ``B-X``.

    This is how conlleval reads such a tag anyway, so repairing never changes the
    conlleval score; it makes the output a valid file and the spans unambiguous.
    """
    return to_iob2(tags, "iob2")


def _first_subtokens(word_ids: Sequence[int | None]) -> dict[int, int]:
    first: dict[int, int] = {}
    for pos, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = pos
    return first


class _EntityScorer:
    """``NerTask.scorer``: each chunk's tags go into an ``EntityTally``; nothing of the chunk is kept."""

    def __init__(self, mode: str):
        from runassist.metrics.entities import EntityTally

        self.tally = EntityTally(mode=mode)

    def add(self, examples: Sequence[TokenExample], predictions: Sequence[TagPrediction]) -> None:
        self.tally.add([list(ex.tags or ()) for ex in examples], [list(p.tags) for p in predictions])

    def result(self) -> dict[str, Any]:
        return self.tally.scores()
