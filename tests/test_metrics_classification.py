"""Classification metrics against scikit-learn, and per-label threshold tuning."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, hamming_loss,
                             precision_score, recall_score)

from runassist.metrics.classification import score_multi, score_single, tune_thresholds

LABELS = ["neg", "neu", "pos", "rare"]  # "rare" never occurs: counts as F1 0 in macro


def test_score_single_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        gold = list(rng.choice(LABELS[:3], size=200))
        pred = [g if rng.random() < 0.6 else str(rng.choice(LABELS)) for g in gold]
        s = score_single(gold, pred, LABELS)
        kw = {"labels": LABELS, "zero_division": 0}
        assert s["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
        assert s["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", **kw), abs=1e-12)
        assert s["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted", **kw), abs=1e-12)
        assert s["macro_precision"] == pytest.approx(precision_score(gold, pred, average="macro", **kw))
        assert s["macro_recall"] == pytest.approx(recall_score(gold, pred, average="macro", **kw))
        per_f1 = f1_score(gold, pred, average=None, **kw)
        for i, label in enumerate(LABELS):
            assert s["per_class"][label]["f1"] == pytest.approx(per_f1[i])
            assert s["per_class"][label]["support"] == gold.count(label)
        assert s["confusion"]["labels"] == LABELS
        assert s["confusion"]["matrix"] == confusion_matrix(gold, pred, labels=LABELS).tolist()
        for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"):
            assert isinstance(s[key], float) and 0.0 <= s[key] <= 1.0


def test_score_single_hand_example():
    s = score_single(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert s["accuracy"] == 0.75
    assert s["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                   "support": 2}
    assert s["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert s["confusion"]["matrix"] == [[1, 1], [0, 2]]  # rows gold, columns predicted


def test_unknown_labels_are_named():
    with pytest.raises(ValueError, match="'zzz'"):
        score_single(["a"], ["zzz"], ["a", "b"])
    with pytest.raises(ValueError, match="'zzz'"):
        score_multi([{"a"}], [{"zzz"}], ["a", "b"])
    with pytest.raises(ValueError, match="1 gold labels but 2"):
        score_single(["a"], ["a", "b"], ["a", "b"])


def test_score_multi_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = ["sport", "politics", "tech", "health", "rare"]
    y_true = (rng.random((150, 5)) < [0.4, 0.3, 0.2, 0.1, 0.0]).astype(int)
    flip = rng.random(y_true.shape) < 0.15
    y_pred = np.where(flip, 1 - y_true, y_true)
    gold = [{labels[j] for j in np.flatnonzero(row)} for row in y_true]
    pred = [[labels[j] for j in np.flatnonzero(row)] for row in y_pred]
    s = score_multi(gold, pred, labels)
    assert s["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
    assert s["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert s["micro_precision"] == pytest.approx(precision_score(y_true, y_pred, average="micro"))
    assert s["micro_recall"] == pytest.approx(recall_score(y_true, y_pred, average="micro"))
    assert s["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert s["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred))
    for j, label in enumerate(labels):
        assert s["per_class"][label]["support"] == int(y_true[:, j].sum())


def test_score_multi_hand_example():
    s = score_multi([{"a", "b"}, {"b"}, set()], [{"a"}, {"b", "c"}, set()], ["a", "b", "c"])
    # tp=2 (a in 0, b in 1), predicted 3, gold 3
    assert s["micro_precision"] == pytest.approx(2 / 3)
    assert s["micro_f1"] == pytest.approx(2 / 3)
    assert s["subset_accuracy"] == pytest.approx(1 / 3)
    assert s["hamming_loss"] == pytest.approx(2 / 9)


def test_thresholds_obviously_0_3():
    rng = np.random.default_rng(2)
    n = 400
    gold = np.zeros((n, 3), dtype=int)
    probs = np.zeros((n, 3))
    # label 0: positives score in [0.31, 0.45], negatives in [0.0, 0.27] -> only 0.30 separates
    gold[:, 0] = rng.random(n) < 0.3
    probs[:, 0] = np.where(gold[:, 0], rng.uniform(0.31, 0.45, n), rng.uniform(0.0, 0.27, n))
    # label 1: perfectly separated over a wide range -> tie, closest to 0.5 wins
    gold[:, 1] = rng.random(n) < 0.5
    probs[:, 1] = np.where(gold[:, 1], 0.92, 0.08)
    # label 2: no positives at all -> untouched default
    probs[:, 2] = rng.random(n)
    thresholds = tune_thresholds(probs, gold)
    assert thresholds.shape == (3,)
    assert thresholds.tolist() == pytest.approx([0.3, 0.5, 0.5])


def test_thresholds_custom_grid_and_shape_check():
    probs = np.array([[0.9], [0.6], [0.2]])
    gold = np.array([[1], [1], [0]])
    assert tune_thresholds(probs, gold, grid=[0.1, 0.7]).tolist() == [0.1]  # F1 0.8 vs 0.667
    with pytest.raises(ValueError, match="n_labels"):
        tune_thresholds(probs, gold[:2])
