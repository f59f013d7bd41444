"""Entity-level NER scoring on word-level tags.

Tags are one per *word* (never per sub-token, which would count an entity several times).
A tag is ``O`` or ``P-TYPE`` with prefix ``P`` in ``B I E S`` (``U``/``L`` of BILOU are read
as ``S``/``E``); a bare ``B``/``I``/... has the type ``_``, as in seqeval.

Two ways to read a tag sequence into entities (``mode``):

``"conlleval"`` -- the chunk rules of CoNLL-2000 ``conlleval.pl``, as seqeval's default mode
    implements them.  Between word ``i-1`` (tag ``p``, type ``s``) and word ``i`` (``c``, ``t``):

    * a chunk *ends* after ``i-1`` if ``p`` is ``E`` or ``S``; or ``p`` is ``B``/``I`` and
      ``c`` is ``B``/``S``/``O``; or ``p`` is not ``O`` and ``s != t``;
    * a chunk *starts* at ``i`` if ``c`` is ``B`` or ``S``; or ``c`` is ``I``/``E`` and
      ``p`` is ``O``/``E``/``S``; or ``c`` is not ``O`` and ``s != t``.

    So ``I-PER I-PER`` is one PER entity (IOB1-style starts are accepted), and
    ``B-PER I-LOC`` is two entities, PER on word 0 and LOC on word 1.

``"strict"`` -- exact IOB2 spans (seqeval ``mode="strict", scheme=IOB2``), extended to BIOES:
    an entity is ``B-X (I-X)* [E-X]`` or ``S-X``; it ends at the first word that does not
    continue it.  An ``I-X``/``E-X`` that does not continue a ``B-X`` of the same type is
    not part of any entity, so ``I-PER I-PER`` holds no entity and ``B-PER I-LOC`` holds
    only PER on word 0.  On well-formed BIOES this equals seqeval's strict IOBES; on
    ill-formed BIOES (``B-X I-X O``, no ``E-X``) it keeps the IOB2 reading and accepts the span.

Entities are ``(type, start, end)`` with ``end`` exclusive, in word positions.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal, Sequence

import numpy as np

Mode = Literal["conlleval", "strict"]
Entity = tuple[str, int, int]

MODES = ("conlleval", "strict")
ERROR_KINDS = ("type", "boundary", "boundary_and_type", "missed", "spurious")
_PREFIXES = {"B": "B", "I": "I", "E": "E", "S": "S", "U": "S", "L": "E"}


def _split(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    prefix, _, type_ = tag.partition("-")
    if prefix not in _PREFIXES:
        raise ValueError(
            f"tag {tag!r} is not O or B-/I-/E-/S-/U-/L- followed by a type"
        )
    return _PREFIXES[prefix], type_ or "_"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; choose one of: {', '.join(MODES)}")


def _conlleval_entities(tags: Sequence[str]) -> list[Entity]:
    entities: list[Entity] = []
    prev_p, prev_t = "O", ""
    start = 0
    for i, tag in enumerate([*tags, "O"]):  # the trailing O closes a chunk running to the end
        p, t = _split(tag)
        ends = (
            prev_p in ("E", "S")
            or (prev_p in ("B", "I") and p in ("B", "S", "O"))
            or (prev_p != "O" and prev_t != t)
        )
        starts = (
            p in ("B", "S")
            or (p in ("I", "E") and prev_p in ("O", "E", "S"))
            or (p != "O" and prev_t != t)
        )
        if ends:
            entities.append((prev_t, start, i))
        if starts:
            start = i
        prev_p, prev_t = p, t
    return entities


def _strict_entities(tags: Sequence[str]) -> list[Entity]:
    split = [_split(tag) for tag in tags]
    entities: list[Entity] = []
    i, n = 0, len(split)
    while i < n:
        p, t = split[i]
        if p == "S":
            entities.append((t, i, i + 1))
            i += 1
        elif p == "B":
            j = i + 1
            while j < n and split[j] == ("I", t):
                j += 1
            if j < n and split[j] == ("E", t):
                j += 1
            entities.append((t, i, j))
            i = j
        else:  # O, or an I-/E- that continues nothing
            i += 1
    return entities


def extract_entities(tags: Sequence[str], *, mode: Mode = "conlleval") -> list[Entity]:
    """The entities in one sentence's word tags as ``(type, start, end_exclusive)``, in order.

    See the module docstring for the rules of ``"conlleval"`` and ``"strict"``.
    """
    _check_mode(mode)
    return _conlleval_entities(tags) if mode == "conlleval" else _strict_entities(tags)


def _pairs(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]):
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted sentences")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
        yield g, p


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    # An empty denominator scores 0, as seqeval and conlleval.pl do.
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _overlaps(a: Entity, b: Entity) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def _sentence_error_counts(gold_ents: Sequence[Entity], pred_ents: Sequence[Entity]) -> Counter:
    """One error per predicted entity that is not an exact match, plus one per gold
    entity that no prediction overlaps.

    A wrong prediction is ``type`` if some gold entity has its exact span, else
    ``boundary`` if an overlapping gold entity has its type, else ``boundary_and_type``
    if it overlaps any gold entity, else ``spurious``.  A gold entity overlapped by a wrong
    prediction is already counted through that prediction, so it is not also ``missed``.
    """
    counts: Counter = Counter({kind: 0 for kind in ERROR_KINDS})
    gold_set, pred_set = set(gold_ents), set(pred_ents)
    for p in pred_ents:
        if p in gold_set:
            continue
        hits = [g for g in gold_ents if _overlaps(g, p)]
        if not hits:
            counts["spurious"] += 1
        elif any(g[1:] == p[1:] for g in hits):
            counts["type"] += 1
        elif any(g[0] == p[0] for g in hits):
            counts["boundary"] += 1
        else:
            counts["boundary_and_type"] += 1
    for g in gold_ents:
        if g not in pred_set and not any(_overlaps(g, p) for p in pred_ents):
            counts["missed"] += 1
    return counts


def sentence_errors(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                    mode: Mode = "conlleval") -> list[dict[str, int]]:
    """Per-sentence entity counts and error counts, in sentence order.

    Each item: ``index, gold, predicted, correct, type, boundary, boundary_and_type,
    missed, spurious, errors`` (the sum of the five kinds).  Sort by ``errors`` to show
    the worst sentences, or use :func:`worst_sentences`.
    """
    _check_mode(mode)
    rows = []
    for i, (g, p) in enumerate(_pairs(gold, pred)):
        g_ents, p_ents = extract_entities(g, mode=mode), extract_entities(p, mode=mode)
        kinds = _sentence_error_counts(g_ents, p_ents)
        rows.append({
            "index": i,
            "gold": len(g_ents),
            "predicted": len(p_ents),
            "correct": len(set(g_ents) & set(p_ents)),
            **{kind: kinds[kind] for kind in ERROR_KINDS},
            "errors": sum(kinds[kind] for kind in ERROR_KINDS),
        })
    return rows


def worst_sentences(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                    mode: Mode = "conlleval", k: int = 10) -> list[dict[str, int]]:
    """The ``k`` sentences with most errors (ties: earlier first); error-free ones left out."""
    rows = [row for row in sentence_errors(gold, pred, mode=mode) if row["errors"]]
    rows.sort(key=lambda row: (-row["errors"], row["index"]))
    return rows[:k]


def error_breakdown(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                    mode: Mode = "conlleval") -> dict[str, int]:
    """Counts of each error kind over the corpus, plus ``total``.

    Kinds (see ``_sentence_error_counts`` for the exact rule): ``type`` (same span, wrong
    type), ``boundary`` (overlapping span, same type), ``boundary_and_type`` (overlapping,
    different span and type), ``missed`` (gold entity no prediction overlaps), ``spurious``
    (prediction overlapping no gold entity).  Every predicted entity is either correct or
    exactly one of type/boundary/boundary_and_type/spurious, so those four plus ``correct``
    add up to ``predicted``.
    """
    total: Counter = Counter({kind: 0 for kind in ERROR_KINDS})
    for row in sentence_errors(gold, pred, mode=mode):
        for kind in ERROR_KINDS:
            total[kind] += row[kind]
    out = {kind: int(total[kind]) for kind in ERROR_KINDS}
    out["total"] = sum(out.values())
    return out


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                    mode: Mode = "conlleval") -> np.ndarray:
    """Int array ``[n_sentences, 3]`` of per-sentence ``(correct, predicted, gold)`` entity
    counts; corpus micro P/R/F1 of any subset (e.g. a bootstrap resample) is a sum of rows."""
    _check_mode(mode)
    rows = []
    for g, p in _pairs(gold, pred):
        g_ents, p_ents = extract_entities(g, mode=mode), extract_entities(p, mode=mode)
        rows.append((len(set(g_ents) & set(p_ents)), len(p_ents), len(g_ents)))
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), 3)


def sentence_counts_by_type(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                            mode: Mode = "conlleval") -> dict[str, np.ndarray]:
    """Per entity type, ``[n_sentences, 3]`` of ``(correct, predicted, gold)``: the per-type rows of
    ``sentence_counts``, for a paired bootstrap of each type's F1 over sentences."""
    _check_mode(mode)
    per_sentence = []
    types: set[str] = set()
    for g, p in _pairs(gold, pred):
        g_ents, p_ents = set(extract_entities(g, mode=mode)), set(extract_entities(p, mode=mode))
        counts = Counter()
        for ent in g_ents & p_ents:
            counts[(ent[0], 0)] += 1
        for ent in p_ents:
            counts[(ent[0], 1)] += 1
        for ent in g_ents:
            counts[(ent[0], 2)] += 1
        types.update(ent[0] for ent in g_ents | p_ents)
        per_sentence.append(counts)
    out = {}
    for type_ in sorted(types):
        out[type_] = np.asarray([[c[(type_, k)] for k in range(3)] for c in per_sentence],
                                dtype=np.int64).reshape(len(per_sentence), 3)
    return out


class EntityTally:
    """Entity counts added a batch of sentences at a time; ``scores()`` gives ``score_entities``'s dict.
    What `evaluate` keeps of a large test set: counts per type and per error kind, not the sentences."""

    def __init__(self, *, mode: Mode = "conlleval"):
        _check_mode(mode)
        self.mode = mode
        self.gold_by_type: Counter = Counter()
        self.pred_by_type: Counter = Counter()
        self.correct_by_type: Counter = Counter()
        self.errors: Counter = Counter({kind: 0 for kind in ERROR_KINDS})
        self.words = self.right_words = self.sentences = 0

    def add(self, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
        if len(gold) != len(pred):
            raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted sentences")
        for i, (g, p) in enumerate(zip(gold, pred)):
            if len(g) != len(p):
                raise ValueError(f"sentence {self.sentences + i}: {len(g)} gold tags but {len(p)} predicted tags")
            self.words += len(g)
            self.right_words += sum(a == b for a, b in zip(g, p))
            g_ents, p_ents = extract_entities(g, mode=self.mode), extract_entities(p, mode=self.mode)
            self.gold_by_type.update(e[0] for e in g_ents)
            self.pred_by_type.update(e[0] for e in p_ents)
            self.correct_by_type.update(e[0] for e in set(g_ents) & set(p_ents))
            self.errors.update(_sentence_error_counts(g_ents, p_ents))
        self.sentences += len(gold)

    def scores(self) -> dict[str, Any]:
        per_type: dict[str, dict[str, Any]] = {}
        for type_ in sorted(set(self.gold_by_type) | set(self.pred_by_type)):
            c, n_pred, n_gold = self.correct_by_type[type_], self.pred_by_type[type_], self.gold_by_type[type_]
            precision, recall, f1 = _prf(c, n_pred, n_gold)
            per_type[type_] = {"precision": precision, "recall": recall, "f1": f1,
                               "support": n_gold, "predicted": n_pred, "correct": c}

        n_correct, n_pred, n_gold = (sum(self.correct_by_type.values()), sum(self.pred_by_type.values()),
                                     sum(self.gold_by_type.values()))
        precision, recall, f1 = _prf(n_correct, n_pred, n_gold)
        error_counts = {kind: int(self.errors[kind]) for kind in ERROR_KINDS}
        error_counts["total"] = sum(error_counts.values())
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "macro_f1": float(np.mean([t["f1"] for t in per_type.values()])) if per_type else 0.0,
            "accuracy": self.right_words / self.words if self.words else 0.0,
            "per_type": per_type,
            "counts": {"gold": n_gold, "predicted": n_pred, "correct": n_correct, "words": self.words},
            "errors": error_counts,
        }


def score_entities(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                   mode: Mode = "conlleval") -> dict[str, Any]:
    """Entity-level scores of predicted word tags against gold word tags.

    Returns (floats in [0, 1], ints for counts)::

        precision, recall, f1     micro over all entities (exact type and span)
        macro_f1                  mean per-type F1 over types seen in gold or predictions
        accuracy                  word-level tag accuracy (O words included, as conlleval)
        per_type                  {TYPE: {precision, recall, f1, support, predicted, correct}}
        counts                    {gold, predicted, correct, words}
        errors                    error_breakdown(): {type, boundary, boundary_and_type,
                                  missed, spurious, total}

    Raises ValueError naming the sentence when a gold and predicted sentence differ in length.
    """
    tally = EntityTally(mode=mode)
    tally.add(gold, pred)
    return tally.scores()


def format_table(scores: dict[str, Any]) -> str:
    """A plain-text report in the style of conlleval.pl, for logs::

        processed 12 words with 3 phrases; found: 3 phrases; correct: 2.
        accuracy:  91.67%; precision:  66.67%; recall:  66.67%; FB1:  66.67
                      LOC: precision: 100.00%; recall: 100.00%; FB1: 100.00  found: 1  gold: 1
    """
    counts = scores["counts"]
    lines = [
        f"processed {counts.get('words', 0)} words with {counts['gold']} phrases; "
        f"found: {counts['predicted']} phrases; correct: {counts['correct']}.",
        f"accuracy: {100 * scores['accuracy']:6.2f}%; precision: {100 * scores['precision']:6.2f}%; "
        f"recall: {100 * scores['recall']:6.2f}%; FB1: {100 * scores['f1']:6.2f}",
    ]
    width = max([17, *(len(t) for t in scores["per_type"])])
    for type_, row in scores["per_type"].items():
        lines.append(
            f"{type_:>{width}}: precision: {100 * row['precision']:6.2f}%; "
            f"recall: {100 * row['recall']:6.2f}%; FB1: {100 * row['f1']:6.2f}  "
            f"found: {row['predicted']}  gold: {row['support']}"
        )
    errors = scores.get("errors")
    if errors:
        lines.append("errors: " + "; ".join(f"{kind}: {errors[kind]}" for kind in (*ERROR_KINDS, "total")))
    return "\n".join(lines)
