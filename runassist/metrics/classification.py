"""Single- and multi-label classification metrics, and per-label threshold tuning.

The scores come from scikit-learn (the reference everyone compares against); averages run
over the ``labels`` passed in, so a label absent from both gold and predictions counts as
F1 0 in the macro average -- pass the task's label list, not whatever the data happened
to contain.  All floats are plain Python floats in [0, 1], ready for JSON.
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, confusion_matrix, hamming_loss,
                             precision_recall_fscore_support)

DEFAULT_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # 0.05, 0.10, ..., 0.95


def _check_known(found: set[str], labels: Sequence[str], where: str) -> None:
    unknown = found - set(labels)
    if unknown:
        raise ValueError(f"{where} labels {sorted(unknown)} are not in the label list "
                         f"{list(labels)}")


def _per_class(labels: Sequence[str], p, r, f, support) -> dict[str, dict[str, Any]]:
    return {label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)}


def score_single(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Scores for one label per item.

    Returns ``accuracy, macro_f1, weighted_f1, macro_precision, macro_recall, per_class``
    (``{label: {precision, recall, f1, support}}``) and ``confusion``
    (``{"labels": [...], "matrix": [[...]]}``, rows gold, columns predicted).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    labels = list(labels)
    _check_known(set(gold), labels, "gold")
    _check_known(set(pred), labels, "predicted")
    if not gold:
        raise ValueError("nothing to score: no items")
    p, r, f, support = precision_recall_fscore_support(gold, pred, labels=labels, average=None,
                                                       zero_division=0)
    total = support.sum()
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(np.mean(f)),
        "weighted_f1": float(np.average(f, weights=support)) if total else 0.0,
        "macro_precision": float(np.mean(p)),
        "macro_recall": float(np.mean(r)),
        "per_class": _per_class(labels, p, r, f, support),
        "confusion": {"labels": labels,
                      "matrix": confusion_matrix(gold, pred, labels=labels).tolist()},
    }


def to_indicator(items: Sequence[Collection[str]], labels: Sequence[str]) -> np.ndarray:
    """``[{"a"}, {"a", "c"}]`` with labels ``a b c`` -> ``[[1, 0, 0], [1, 0, 1]]`` (int8)."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(items), len(labels)), dtype=np.int8)
    for row, item in enumerate(items):
        if isinstance(item, str):
            raise TypeError(f"item {row} is the string {item!r}; multi-label items are "
                            f"collections of labels, e.g. [{item!r}]")
        for label in item:
            if label not in index:
                raise ValueError(f"item {row}: label {label!r} is not in the label list {list(labels)}")
            out[row, index[label]] = 1
    return out


def score_multi(gold: Sequence[Collection[str]], pred: Sequence[Collection[str]],
                labels: Sequence[str]) -> dict[str, Any]:
    """Scores for any number of labels per item.

    Returns ``micro_f1, macro_f1, micro_precision, micro_recall, subset_accuracy`` (items
    whose whole label set is right), ``hamming_loss`` (share of wrong item-label cells) and
    ``per_class`` (``{label: {precision, recall, f1, support}}``).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold items but {len(pred)} predictions")
    if not gold:
        raise ValueError("nothing to score: no items")
    labels = list(labels)
    y_true, y_pred = to_indicator(gold, labels), to_indicator(pred, labels)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    return {
        "micro_f1": float(mf),
        "macro_f1": float(np.mean(f)),
        "micro_precision": float(mp),
        "micro_recall": float(mr),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "per_class": _per_class(labels, p, r, f, support),
    }


def tune_thresholds(probs: np.ndarray, gold: np.ndarray, *, grid: Sequence[float] | None = None) -> np.ndarray:
    """Per-label decision thresholds that maximise each label's F1 on dev.

    ``probs`` ``[n, L]`` are probabilities, ``gold`` ``[n, L]`` is 0/1; a label is
    predicted when ``prob >= threshold``.  Ties go to the threshold closest to 0.5 (the
    untuned default), then to the lower one; a label with no positives in ``gold`` keeps
    0.5, as there is nothing to tune it on.  Returns a float array ``[L]``.
    """
    # Written with numpy rather than sklearn: one broadcast scores every (label, threshold)
    # pair at once, where precision_recall_curve would loop over labels in Python.
    probs = np.asarray(probs, dtype=np.float64)
    gold = np.asarray(gold).astype(bool)
    if probs.ndim != 2 or probs.shape != gold.shape:
        raise ValueError(f"probs {probs.shape} and gold {gold.shape} must both be [n_items, n_labels]")
    grid_arr = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    if grid_arr.ndim != 1 or grid_arr.size == 0:
        raise ValueError("grid must be a non-empty 1-d list of thresholds")

    predicted = probs[:, :, None] >= grid_arr[None, None, :]                    # [n, L, G]
    tp = (predicted & gold[:, :, None]).sum(axis=0)                             # [L, G]
    n_pred = predicted.sum(axis=0)
    n_gold = gold.sum(axis=0)[:, None]
    denom = n_pred + n_gold
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)

    # Sort candidates by (closeness to 0.5, value) once; argmax then returns the first best.
    order = np.lexsort((grid_arr, np.abs(grid_arr - 0.5)))
    best = order[np.argmax(f1[:, order], axis=1)]
    thresholds = grid_arr[best].astype(np.float64)
    thresholds[n_gold[:, 0] == 0] = 0.5
    return thresholds


def item_counts_by_label(gold: Sequence[Collection[str]], pred: Sequence[Collection[str]],
                         labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Per label, ``[n_items, 3]`` of ``(correct, predicted, gold)`` (0/1 each): summed over any
    subset of items they give that label's precision, recall and F1 (a paired bootstrap per label)."""
    g, p = to_indicator(gold, labels).astype(bool), to_indicator(pred, labels).astype(bool)
    return {label: np.stack([g[:, j] & p[:, j], p[:, j], g[:, j]], axis=1).astype(np.int64)
            for j, label in enumerate(labels)}
