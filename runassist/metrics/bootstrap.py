"""Paired bootstrap: is run B really better than run A on the same test items, or is the
difference within the noise of which items happened to be in the test set?

Each resample draws ``n_items`` items with replacement (the same draw for both systems,
hence *paired*) and recomputes the corpus-level metric of A and of B on it -- corpus F1
from summed counts, never an average of per-sentence F1.

Reported, with ``d = metric(B) - metric(A)`` on the full test set and ``d_i`` on resample i:

* ``ci_low``, ``ci_high``: the 2.5th and 97.5th percentiles of ``d_i`` (95% percentile CI);
  ``within_noise`` is True when that interval contains 0.
* ``p_value`` (two-sided, sign-flip): with ``k`` the number of resamples whose ``d_i`` is
  on the other side of 0 from ``d`` or at 0 (``d_i <= 0`` when ``d > 0``, ``d_i >= 0``
  when ``d < 0``), ``p = min(1, 2 * (k + 1) / (n + 1))``.  The ``+1`` keeps p above 0
  with finitely many resamples (so 1000 resamples can show p ~ 0.002 at best, never 0);
  ``d == 0`` gives ``p = 1``.

For speed, metrics that are functions of per-item counts (NER micro F1, accuracy,
macro/micro F1) go through :func:`paired_bootstrap_counts`, where a resample is one
matrix product; :func:`paired_bootstrap` takes any ``score_fn`` at Python speed.  Both
draw the same resamples for the same ``seed`` and ``n_items``.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator, Literal, Sequence

import numpy as np

StatFn = Callable[[np.ndarray], np.ndarray]
_MAX_CELLS = 2_000_000  # indices drawn per chunk of resamples; bounds memory on big test sets


def _resamples(n_items: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of resampled item indices, each ``[m, n_items]``; ``n`` rows in all."""
    if n_items < 1:
        raise ValueError("nothing to resample: no items")
    if n < 1:
        raise ValueError(f"n (resamples) must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n, _MAX_CELLS // n_items))
    for start in range(0, n, chunk):
        yield rng.integers(0, n_items, size=(min(chunk, n - start), n_items))


def _summarise(a: float, b: float, diffs: np.ndarray, n_items: int) -> dict[str, Any]:
    diff = b - a
    ci_low, ci_high = np.percentile(diffs, [2.5, 97.5])
    if diff > 0:
        k = int(np.sum(diffs <= 0))
    elif diff < 0:
        k = int(np.sum(diffs >= 0))
    else:
        k = len(diffs)
    p_value = 1.0 if diff == 0 else min(1.0, 2 * (k + 1) / (len(diffs) + 1))
    return {
        "a": float(a),
        "b": float(b),
        "diff": float(diff),
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": float(p_value),
        "n_items": int(n_items),
        "n_resamples": int(len(diffs)),
        "within_noise": bool(ci_low <= 0 <= ci_high),
    }


def paired_bootstrap(score_fn: Callable[[list, list], float], gold: Sequence, pred_a: Sequence,
                     pred_b: Sequence, *, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of any corpus-level metric.

    ``score_fn(gold_items, pred_items) -> float`` scores a list of items (sentences for NER,
    documents for classification) as a whole.  Returns ``a, b, diff`` (b - a), ``ci_low,
    ci_high`` (95%), ``p_value``, ``n_items``, ``n_resamples``, ``within_noise`` (see the
    module docstring for the exact definitions).
    """
    if not (len(gold) == len(pred_a) == len(pred_b)):
        raise ValueError(f"gold, pred_a, pred_b must have the same number of items, "
                         f"got {len(gold)}, {len(pred_a)}, {len(pred_b)}")
    gold, pred_a, pred_b = list(gold), list(pred_a), list(pred_b)
    a, b = float(score_fn(gold, pred_a)), float(score_fn(gold, pred_b))
    diffs = []
    for chunk in _resamples(len(gold), n, seed):
        for idx in chunk:
            g = [gold[i] for i in idx]
            diffs.append(float(score_fn(g, [pred_b[i] for i in idx]))
                         - float(score_fn(g, [pred_a[i] for i in idx])))
    return _summarise(a, b, np.asarray(diffs), len(gold))


# Statistics over summed count columns.  Each takes sums ``[m, k]`` and returns ``[m]``.

def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def f1_from_counts(sums: np.ndarray) -> np.ndarray:
    """Micro F1 from columns ``(correct, predicted, gold)``: 2c / (p + g)."""
    return _safe_div(2.0 * sums[:, 0], (sums[:, 1] + sums[:, 2]).astype(np.float64))


def macro_f1_from_counts(sums: np.ndarray) -> np.ndarray:
    """Macro F1 from columns ``[tp_1..tp_L, pred_1..pred_L, gold_1..gold_L]``."""
    tp, pred, gold = np.split(sums.astype(np.float64), 3, axis=1)
    return _safe_div(2.0 * tp, pred + gold).mean(axis=1)


def micro_f1_from_counts(sums: np.ndarray) -> np.ndarray:
    """Micro F1 from columns ``[tp_1..tp_L, pred_1..pred_L, gold_1..gold_L]``."""
    tp, pred, gold = np.split(sums.astype(np.float64), 3, axis=1)
    return _safe_div(2.0 * tp.sum(axis=1), pred.sum(axis=1) + gold.sum(axis=1))


STATS: dict[str, StatFn] = {
    "f1": f1_from_counts,
    "macro_f1": macro_f1_from_counts,
    "micro_f1": micro_f1_from_counts,
}


def paired_bootstrap_counts(counts_a: np.ndarray, counts_b: np.ndarray, *,
                            stat: str | StatFn = "f1", n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap where the metric is a function of per-item counts summed over items.

    ``counts_a``/``counts_b`` are ``[n_items, k]`` (for NER: per-sentence ``(correct,
    predicted, gold)`` from ``entities.sentence_counts``).  ``stat`` is ``"f1"``,
    ``"macro_f1"``, ``"micro_f1"``, ``"mean"`` (column 0 summed / n_items, e.g. accuracy
    from a 0/1 column), or a function from summed counts ``[m, k]`` to values ``[m]``.
    Returns the same keys as :func:`paired_bootstrap`.
    """
    counts_a = np.asarray(counts_a)
    counts_b = np.asarray(counts_b)
    if counts_a.ndim == 1:  # one count per item, e.g. a 0/1 "was right" column
        counts_a = counts_a[:, None]
    if counts_b.ndim == 1:
        counts_b = counts_b[:, None]
    if counts_a.shape != counts_b.shape or counts_a.ndim != 2:
        raise ValueError(f"counts_a {counts_a.shape} and counts_b {counts_b.shape} must both be [n_items, k]")
    n_items = counts_a.shape[0]
    if stat == "mean":
        fn: StatFn = lambda sums: sums[:, 0] / n_items  # noqa: E731
    elif isinstance(stat, str):
        if stat not in STATS:
            raise ValueError(f"unknown stat {stat!r}; choose one of: mean, {', '.join(STATS)}")
        fn = STATS[stat]
    else:
        fn = stat
    # Both systems share the resample, so stack their columns and do one product per chunk.
    both = np.concatenate([counts_a, counts_b], axis=1).astype(np.float64)
    k = counts_a.shape[1]
    total = both.sum(axis=0, keepdims=True)
    a, b = float(fn(total[:, :k])[0]), float(fn(total[:, k:])[0])
    diffs = []
    for idx in _resamples(n_items, n, seed):
        m = idx.shape[0]
        # How often each item was drawn in each resample: weights [m, n_items].
        flat = (idx + np.arange(m)[:, None] * n_items).ravel()
        weights = np.bincount(flat, minlength=m * n_items).reshape(m, n_items).astype(np.float64)
        sums = weights @ both
        diffs.append(fn(sums[:, k:]) - fn(sums[:, :k]))
    return _summarise(a, b, np.concatenate(diffs), n_items)


def compare_ner(gold: Sequence[Sequence[str]], pred_a: Sequence[Sequence[str]],
                pred_b: Sequence[Sequence[str]], *, mode: Literal["conlleval", "strict"] = "conlleval",
                n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of entity micro F1 over sentences (see ``paired_bootstrap``)."""
    from runassist.metrics.entities import sentence_counts

    return paired_bootstrap_counts(sentence_counts(gold, pred_a, mode=mode),
                                   sentence_counts(gold, pred_b, mode=mode),
                                   stat="f1", n=n, seed=seed)


CLASSIFY_METRICS = ("accuracy", "macro_f1", "micro_f1")


def _item_counts(gold: np.ndarray, pred: np.ndarray, metric: str) -> np.ndarray:
    if metric == "accuracy":  # exact match per item (subset accuracy for multi-label)
        return np.all(gold == pred, axis=1).astype(np.int64)[:, None]
    return np.concatenate([gold & pred, pred, gold], axis=1).astype(np.int64)


def compare_classify(gold: Sequence[str] | Sequence[Collection[str]],
                     pred_a: Sequence[str] | Sequence[Collection[str]],
                     pred_b: Sequence[str] | Sequence[Collection[str]], *,
                     metric: str = "accuracy", labels: Sequence[str] | None = None,
                     n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of a classification metric over documents.

    Items are labels (single-label) or collections of labels (multi-label). ``metric`` is
    ``"accuracy"`` (subset accuracy for multi-label), ``"macro_f1"`` or ``"micro_f1"``;
    averages run over ``labels`` (default: every label seen in gold or either prediction),
    so the values equal ``score_single``/``score_multi`` given the same labels.
    """
    from runassist.metrics.classification import to_indicator

    if metric not in CLASSIFY_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(CLASSIFY_METRICS)}")
    if not (len(gold) == len(pred_a) == len(pred_b)):
        raise ValueError(f"gold, pred_a, pred_b must have the same number of items, "
                         f"got {len(gold)}, {len(pred_a)}, {len(pred_b)}")
    single = len(gold) > 0 and isinstance(gold[0], str)

    def as_sets(items):
        return [[item] for item in items] if single else list(items)

    g, a, b = as_sets(gold), as_sets(pred_a), as_sets(pred_b)
    if labels is None:
        labels = sorted({label for items in (g, a, b) for item in items for label in item})
    g_ind, a_ind, b_ind = (to_indicator(x, labels).astype(bool) for x in (g, a, b))
    stat = "mean" if metric == "accuracy" else metric
    return paired_bootstrap_counts(_item_counts(g_ind, a_ind, metric), _item_counts(g_ind, b_ind, metric),
                                   stat=stat, n=n, seed=seed)
