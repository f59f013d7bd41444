"""Extractive question answering: the answer is a span of the context (SQuAD v1.1; with
``task.no_answer``, SQuAD v2.0: the context may hold no answer).

Encoding: question + context, the context cut into overlapping windows of sub-tokens
(``tasks.windows``: ``model.stride`` is the overlap in tokens, not the step between windows,
the reading transformers #18160 is about). A window holding the whole first gold answer is
labelled with its start and end token; a window holding none of it is labelled "no answer" (the
first position, [CLS]); a window that cuts the answer is left out of the loss, so the model is
never taught that a half-visible answer is no answer. Any answer of at most ``model.stride``
sub-tokens lies whole in some window.

Decoding: the ``n_best`` start and end positions of every window of a question are paired (end
not before start, at most ``max_answer_length`` sub-tokens); the best pair over all windows is
mapped back to character offsets of the user's context, so ``context[start:end]`` is the answer.
With ``no_answer``, the question gets no answer when the null score ([CLS] start + end, the
lowest over the windows, as in the SQuAD v2 reference) beats the best span by more than a
threshold fitted on dev to maximise F1 (saved with the run; transformers PR #7319 is about
applying it the wrong way round).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from runassist.config import TaskSection
from runassist.data.checks import CheckReport, SplitStats, percentiles
from runassist.data.records import QAExample, Split
from runassist.errors import DataError
from runassist.tasks.base import IGNORE_INDEX, Capabilities, Feature, TaskState, pad_inputs
from runassist.tasks.default import BaseTask
from runassist.tasks.layout import PairLayout
from runassist.tasks.windows import window_spans

_JSONL = (".jsonl", ".ndjson")
MIN_CONTEXT = 8  # sub-tokens of context a window keeps however long the question
_BATCH = 512


class QASection(TaskSection):
    name: Literal["qa"] = "qa"
    no_answer: bool = Field(False, description="SQuAD v2: a context may hold no answer; the threshold for saying "
                                               "so is fitted on dev and saved with the run")
    max_answer_length: int = Field(30, ge=1, description="longest answer, in sub-tokens")
    max_question_length: int = Field(64, ge=4, description="sub-tokens of a question kept; the rest is cut")
    n_best: int = Field(20, ge=1, description="start and end candidates per window paired when decoding")
    f1_unit: Literal["auto", "word", "char"] = Field(
        "auto", description="word (SQuAD rules) | char (CMRC 2018, for Chinese) | auto: char when most "
                            "context characters are Chinese")


@dataclass(frozen=True)
class AnswerPrediction:
    answer: str | None  # None: the context holds no answer (no_answer runs only)
    start: int | None  # character offsets into the context: context[start:end] == answer
    end: int | None
    score: float  # probability of this answer among the candidates considered
    null_margin: float  # null score minus the best span's score (what the threshold is compared with)
    span: tuple[str, int, int] | None = None  # the best span, even when no answer was given


class QATask(BaseTask):
    name = "qa"
    Section = QASection
    headline = "f1"
    capabilities = Capabilities(onnx=True, int8_guard=False)
    peft_task_type = "QUESTION_ANS"
    target_keys = ("start_positions", "end_positions")
    label_word = "kind of question"
    onnx_outputs = {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")}
    tool_name = "answer_question"
    curve_extras = ("exact",)

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name, "no_answer": True}, "model": {"source": "minilm", "max_length": 128},
                "data": {"train": "wnut16-qa:train", "dev": "wnut16-qa:dev", "test": "wnut16-qa:test"},
                "train": {"epochs": 4, "lr": 2e-4, "batch_size": 16}}

    @property
    def title(self) -> str:
        return f"{self.name} (with unanswerable questions)" if self.task_cfg.no_answer else self.name

    # -- data ---------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        """SQuAD JSON (.json), or JSON lines (.jsonl)."""
        from runassist.data.qa import scan_qa_jsonl, scan_squad_json

        fmt = self.data_cfg.format
        if fmt == "auto":
            fmt = "jsonl" if path.suffix.lower() in _JSONL else "json"
        if fmt not in ("json", "jsonl"):
            raise DataError(path, None, f"data.format {fmt!r}: QA reads SQuAD JSON or JSON lines")
        reader = scan_qa_jsonl if fmt == "jsonl" else scan_squad_json
        return reader(path, require_answers=require_labels)

    def label_set(self, examples: Sequence[QAExample]) -> None:
        return None

    def label_units(self, example: QAExample) -> tuple[str, ...]:
        if example.answers is None:
            return ()
        return ("answerable",) if example.answers else ("no answer",)

    def unlabelled(self, example: QAExample) -> QAExample:
        return dataclasses.replace(example, answers=None)

    def example_from_input(self, item: Any) -> QAExample:
        """``{"question": ..., "context": ...}``."""
        if not isinstance(item, dict) or set(item) != {"question", "context"}:
            raise ValueError('each input must be an object {"question": ..., "context": ...}')
        if not all(isinstance(item[k], str) and item[k].strip() for k in ("question", "context")):
            raise ValueError('"question" and "context" must be non-empty strings')
        return QAExample(question=item["question"], context=item["context"])

    def input_columns(self) -> list[str]:
        return ["question", "context"]

    def example_from_row(self, row: dict[str, str]) -> QAExample:
        return self.example_from_input({"question": row.get("question") or "", "context": row.get("context") or ""})

    # -- features -----------------------------------------------------------
    def encode(self, examples: Sequence[QAExample], tokenizer: Any, state: TaskState) -> list[Feature]:
        """One feature per context window; ``meta``: where the context starts in the window and the
        character offsets of its sub-tokens."""
        if not examples:
            return []
        layout = PairLayout.probe(tokenizer, pair=True)
        questions = tokenizer([ex.question for ex in examples], add_special_tokens=False)["input_ids"]
        contexts = tokenizer([ex.context for ex in examples], add_special_tokens=False, return_offsets_mapping=True,
                             verbose=False)
        stride = self.model_cfg.window_stride
        features: list[Feature] = []
        for index, ex in enumerate(examples):
            if ex.answers == () and not self.task_cfg.no_answer:
                raise DataError(ex.source or "input", None, f"question {ex.id or index} has no answer; set "
                                                            "task.no_answer: true for data with unanswerable questions")
            # A long question is cut, leaving the context at least MIN_CONTEXT sub-tokens per window.
            question = questions[index][:max(1, min(self.task_cfg.max_question_length,
                                                     self.model_cfg.max_length - layout.n_special - MIN_CONTEXT))]
            ids, offsets = contexts["input_ids"][index], [tuple(o) for o in contexts["offset_mapping"][index]]
            room = self.model_cfg.max_length - layout.n_special - len(question)
            if room < MIN_CONTEXT:
                raise DataError(ex.source or "input", None, f"the question leaves {room} sub-tokens of "
                                                            f"model.max_length={self.model_cfg.max_length} for the "
                                                            "context; raise max_length or lower max_question_length")
            first = len(layout.fixed[0]) + len(question) + len(layout.fixed[1])  # where the context starts
            answer = _token_span(ex.answers[0], offsets) if ex.answers else None
            for window, (start, end) in enumerate(window_spans(len(ids), room, min(stride, room // 2))):
                window_ids, types = layout.join(question, ids[start:end])
                target = None
                if ex.answers is not None:
                    target = _target(answer, start, end, first)
                features.append(Feature(example=index, inputs={"input_ids": window_ids, "token_type_ids": types}
                                        if "token_type_ids" in tokenizer.model_input_names
                                        else {"input_ids": window_ids},
                                        target=target, meta={"first": first, "offsets": offsets[start:end],
                                                             "window": window}))
        return features

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        stats = super().feature_stats(features)
        stats["windows_cutting_the_answer"] = sum(1 for f in features if f.target and f.target[0] == IGNORE_INDEX)
        return stats

    def collate(self, features: Sequence[Feature], tokenizer: Any) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, tokenizer.pad_token_id)
        if all(f.target is not None for f in features):
            batch["start_positions"] = torch.tensor([f.target[0] for f in features], dtype=torch.long)
            batch["end_positions"] = torch.tensor([f.target[1] for f in features], dtype=torch.long)
        return batch

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from transformers import AutoModelForQuestionAnswering

        from runassist.tasks.hf import load_model

        return load_model(AutoModelForQuestionAnswering, source, None, dropout=dropout)

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        """Mean of the start and end cross-entropies over the windows that have a target (a window
        that cuts its answer has none); a batch of such windows only gives a zero loss, not NaN."""
        start, end = batch["start_positions"], batch["end_positions"]
        kept = (start != IGNORE_INDEX).sum().clamp(min=1)
        total = (F.cross_entropy(outputs.start_logits.float(), start, ignore_index=IGNORE_INDEX, reduction="sum")
                 + F.cross_entropy(outputs.end_logits.float(), end, ignore_index=IGNORE_INDEX, reduction="sum"))
        return total / (2 * kept)

    def infer(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], features: Sequence[Feature],
              processor: Any = None) -> list[Any]:
        """Per window: ``[2, tokens]``, start logits then end logits."""
        outputs = self.forward(model, batch)
        start = outputs.start_logits.float().cpu().numpy()
        end = outputs.end_logits.float().cpu().numpy()
        return [np.stack([start[row, :f.size], end[row, :f.size]]) for row, f in enumerate(features)]

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[QAExample], features: Sequence[Feature], outputs: Sequence[np.ndarray],
               state: TaskState) -> list[AnswerPrediction]:
        threshold = float(state.extras.get("null_threshold", 0.0))
        predictions = []
        for ex, (spans, null) in zip(examples, self._candidates(len(examples), features, outputs)):
            predictions.append(_choose(ex, spans, null, threshold if self.task_cfg.no_answer else None))
        return predictions

    def _candidates(self, n: int, features: Sequence[Feature], outputs: Sequence[np.ndarray]):
        """Per example: {(start char, end char): best score} over all windows, and the null score."""
        spans: list[dict[tuple[int, int], float]] = [{} for _ in range(n)]
        null = [np.inf] * n
        k, longest = self.task_cfg.n_best, self.task_cfg.max_answer_length
        for feature, out in zip(features, outputs):
            first, offsets = feature.meta["first"], feature.meta["offsets"]
            starts, ends = out[0][first:first + len(offsets)], out[1][first:first + len(offsets)]
            null[feature.example] = min(null[feature.example], float(out[0][0] + out[1][0]))
            best = spans[feature.example]
            for i in np.argsort(-starts, kind="stable")[:k]:
                for j in np.argsort(-ends, kind="stable")[:k]:
                    if j < i or j - i + 1 > longest:
                        continue
                    span = (int(offsets[i][0]), int(offsets[j][1]))
                    if span[1] <= span[0]:
                        continue  # sub-tokens without characters (a lone special piece)
                    score = float(starts[i] + ends[j])
                    if score > best.get(span, -np.inf):
                        best[span] = score
        return list(zip(spans, null))

    def fit(self, examples: Sequence[QAExample], features: Sequence[Feature], outputs: Sequence[np.ndarray],
            state: TaskState) -> dict[str, Any]:
        """With no_answer: the null threshold that maximises F1 on these (dev) questions."""
        if not self.task_cfg.no_answer:
            return {}
        from runassist.metrics.squad import best_null_threshold

        from runassist.metrics.squad import scored_answers

        diffs, has, f1s = [], [], []
        unit = self._unit(examples)
        f1_fn = self._f1_fn(examples)
        for ex, (spans, null) in zip(examples, self._candidates(len(examples), features, outputs)):
            pred = _choose(ex, spans, null, None)
            answers = [text for text, _ in ex.answers or ()]
            diffs.append(pred.null_margin)
            has.append(bool(answers))
            # the F1 its best span would score, by the same rules as score()
            f1s.append(max(f1_fn(g, pred.span[0] if pred.span else "") for g in scored_answers(answers, unit)))
        return {"null_threshold": best_null_threshold(diffs, has, f1s)}

    def _unit(self, examples: Sequence[QAExample]) -> str:
        if self.task_cfg.f1_unit != "auto":
            return self.task_cfg.f1_unit
        text = "".join(ex.context for ex in examples[:200])
        cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
        letters = sum(1 for ch in text if ch.isalnum())
        return "char" if letters and cjk / letters > 0.5 else "word"

    def _f1_fn(self, examples: Sequence[QAExample]):
        from runassist.metrics import squad

        return squad.char_f1 if self._unit(examples) == "char" else squad.f1

    def score(self, examples: Sequence[QAExample], predictions: Sequence[AnswerPrediction],
              state: TaskState) -> dict[str, Any]:
        from runassist.metrics.squad import score_answers

        gold = [[text for text, _ in ex.answers or ()] for ex in examples]
        unit = self._unit(examples)
        return {**score_answers(gold, [p.answer or "" for p in predictions], unit=unit), "f1_unit": unit}

    def to_json(self, example: QAExample, prediction: AnswerPrediction) -> dict[str, Any]:
        return {"answer": prediction.answer, "start": prediction.start, "end": prediction.end,
                "score": round(prediction.score, 4)}

    def outcome(self, prediction: AnswerPrediction) -> tuple:
        return prediction.answer, prediction.start, prediction.end

    def gold_json(self, example: QAExample) -> dict[str, Any]:
        return {"id": example.id, "question": example.question, "context": example.context,
                "gold": None if example.answers is None else [text for text, _ in example.answers]}

    def export_probe(self) -> list[QAExample]:
        return [QAExample("what does runassist export ?", "runassist exports this model to onnx for fast inference ."),
                QAExample("who ?", "a short one")]

    # -- check-data -----------------------------------------------------------
    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        super().check_labels(read, report)
        if not self.task_cfg.no_answer:
            for name, examples in read.items():
                unanswerable = [ex for ex in examples if ex.answers == ()]
                if unanswerable:
                    report.errors.append(f"{unanswerable[0].source}: {len(unanswerable)} questions in {name} have no "
                                         "answer; set task.no_answer: true (SQuAD v2)")

    def split_stats(self, spec: str, examples: Sequence[QAExample]) -> SplitStats:
        stats = super().split_stats(spec, examples)
        stats.words = sum(len(ex.question.split()) + len(ex.context.split()) for ex in examples)
        stats.length = percentiles([len(ex.context) for ex in examples])
        return stats

    def overlap_key(self, example: QAExample) -> tuple[str, str]:
        return " ".join(example.question.split()), " ".join(example.context.split())

    def check_processor(self, name: str, examples: Sequence[QAExample], tokenizer: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Sub-token lengths; questions read through several windows; answers too long to predict."""
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        lengths, long_answers, windowed, first = [], 0, 0, ""
        for i in range(0, len(examples), _BATCH):
            chunk = examples[i:i + _BATCH]
            q = tokenizer([ex.question for ex in chunk], add_special_tokens=False)["input_ids"]
            c = tokenizer([ex.context for ex in chunk], add_special_tokens=False, return_offsets_mapping=True,
                          verbose=False)
            for n, ex in enumerate(chunk):
                total = min(len(q[n]), self.task_cfg.max_question_length) + len(c["input_ids"][n]) + specials
                lengths.append(total)
                windowed += total > self.model_cfg.max_length
                offsets = [tuple(o) for o in c["offset_mapping"][n]]
                for answer in ex.answers or ():
                    span = _token_span(answer, offsets)
                    if span and span[1] - span[0] + 1 > self.task_cfg.max_answer_length:
                        long_answers += 1
                        first = first or ex.source
        stats.subtokens = percentiles(lengths)
        stats.over_max_length = windowed
        if windowed:
            report.warnings.append(f"{name}: {windowed} of {len(examples)} questions with their context are longer "
                                   f"than model.max_length={self.model_cfg.max_length} and are read in overlapping "
                                   f"windows (model.stride={self.model_cfg.window_stride})")
        if long_answers:
            report.warnings.append(f"{first}: {long_answers} answers in {name} are longer than "
                                   f"task.max_answer_length={self.task_cfg.max_answer_length} sub-tokens; the model "
                                   "cannot give them")

    # -- report ---------------------------------------------------------------
    def report_errors(self, scores: dict[str, Any], predictions: Path | None, images: dict[str, bytes]) -> str:
        from runassist.htmlparts import e, missing, table

        if predictions is None:
            return missing("No predictions file (eval/<split>.jsonl): wrong answers cannot be shown.")
        from runassist.metrics.squad import char_exact, exact

        same = char_exact if (scores or {}).get("f1_unit") == "char" else exact
        rows = []
        for line in predictions.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            golds = row.get("gold") or []
            answer = row.get("answer") or ""
            if not any(same(g, answer) for g in golds or [""]):
                rows.append([e(row.get("question", "")), e(" | ".join(golds) or "(no answer)"),
                             '<span class="bad">' + e(answer or "(no answer)") + "</span>", e(row.get("score"))])
        if not rows:
            return "<p>Every test question is answered exactly.</p>"
        return (f'<p class="small">{len(rows)} test questions are not answered exactly; the first 15:</p>'
                + table(["question", "gold", "predicted", "score"], rows[:15], cls="mistakes"))

    # -- agent tools and the page -------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        text = {"type": "string", "maxLength": max_chars}
        return {"type": "object", "required": ["question", "context"], "additionalProperties": False,
                "properties": {"question": {**text, "description": "the question"},
                               "context": {**text, "description": "the text that holds the answer"}}}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        none = (" When the context does not answer the question, answer is null." if self.task_cfg.no_answer else "")
        return (f"Answer questions from a given context {about}: the answer is a span of the context. Returns one "
                "prediction per input, in order: answer, start and end character offsets into the context, and a "
                f"score (0-1).{none}")

    def labels_summary(self, labels: list[str] | None) -> str:
        return "answers are spans of the context" + (", or none" if self.task_cfg.no_answer else "")


def _token_span(answer: tuple[str, int], offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The first and last context sub-token of an answer (text, character start), or None."""
    text, start = answer
    end = start + len(text)
    inside = [i for i, (a, b) in enumerate(offsets) if b > start and a < end and b > a]
    return (inside[0], inside[-1]) if inside else None


def _target(answer: tuple[int, int] | None, start: int, end: int, first: int) -> tuple[int, int]:
    """(start, end) positions of the answer in a window of context tokens [start, end): the
    answer's own, (0, 0) for no answer here, or ignored when the window cuts it."""
    if answer is None or answer[1] < start or answer[0] >= end:
        return (0, 0)
    if answer[0] < start or answer[1] >= end:
        return (IGNORE_INDEX, IGNORE_INDEX)
    return (first + answer[0] - start, first + answer[1] - start)


def _choose(example: QAExample, spans: dict[tuple[int, int], float], null: float,
            threshold: float | None) -> AnswerPrediction:
    """The best span; with a threshold (no_answer runs), no answer when the null score beats it by more."""
    if not spans:
        return AnswerPrediction(None, None, None, 1.0, float("inf"))
    ranked = sorted(spans.items(), key=lambda kv: -kv[1])[:20]
    (start, end), best = ranked[0]
    margin = null - best
    scores = np.array([s for _, s in ranked] + ([null] if threshold is not None else []), dtype=np.float64)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    span = (example.context[start:end], start, end)
    if threshold is not None and margin > threshold:
        return AnswerPrediction(None, None, None, float(probs[-1]), margin, span)
    return AnswerPrediction(span[0], start, end, float(probs[0]), margin, span)
