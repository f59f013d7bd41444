"""Relation extraction scores by the field's two reference rules.

``score_relations`` (the TACRED scorer): micro precision, recall and F1 over every relation but
the negative one (``no_relation``): a prediction of the negative label is no prediction, gold
negatives are nothing to find, so a model that says ``no_relation`` everywhere scores 0, not its
high accuracy. Also the per-relation table and the confusion matrix (scikit-learn's).

``semeval_macro_f1`` (the SemEval-2010 Task 8 official score, ``semeval2010_task8_scorer``'s
"(9+1)-way evaluation with directionality taken into account"): per relation type, direction
stripped (``Cause-Effect(e1,e2)`` -> ``Cause-Effect``), precision and recall where only the right
type *in the right direction* is correct; F1 macro-averaged over the types, ``Other`` left out.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from runassist.metrics.classification import score_single

_DIRECTION = re.compile(r"\((e[12]),(e[12])\)$")


def score_relations(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str], *,
                    negative: str = "no_relation") -> dict[str, Any]:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold relations but {len(pred)} predictions")
    correct = sum(1 for g, p in zip(gold, pred) if g == p and g != negative)
    guessed = sum(1 for p in pred if p != negative)
    found = sum(1 for g in gold if g != negative)
    precision = correct / guessed if guessed else 1.0  # the TACRED scorer's convention; F1 is 0 either way
    recall = correct / found if found else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    table = score_single(gold, pred, labels)
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": table["accuracy"],
            "macro_f1": table["macro_f1"], "per_class": {k: v for k, v in table["per_class"].items() if k != negative},
            "confusion": table["confusion"], "counts": {"correct": correct, "predicted": guessed, "gold": found}}


def relation_type(label: str) -> str:
    """``Cause-Effect(e2,e1)`` -> ``Cause-Effect``."""
    return _DIRECTION.sub("", label)


def semeval_macro_f1(gold: Sequence[str], pred: Sequence[str], *, other: str = "Other") -> float:
    types = sorted({relation_type(g) for g in gold} - {other})
    scores = []
    for kind in types:
        correct = sum(1 for g, p in zip(gold, pred) if g == p and relation_type(g) == kind)
        predicted = sum(1 for p in pred if relation_type(p) == kind)
        actual = sum(1 for g in gold if relation_type(g) == kind)
        precision = correct / predicted if predicted else 0.0
        recall = correct / actual if actual else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores) if scores else 0.0
