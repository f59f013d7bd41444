"""Paired bootstrap: identical systems are within noise, a clearly better one is not, and
the fast count path gives exactly what recomputing the metric on each resample gives."""

from __future__ import annotations

import random

import numpy as np
import pytest

from runassist.metrics.bootstrap import (compare_classify, compare_ner, paired_bootstrap,
                                         paired_bootstrap_counts)
from runassist.metrics.classification import score_single
from runassist.metrics.entities import score_entities

KEYS = {"a", "b", "diff", "ci_low", "ci_high", "p_value", "n_items", "n_resamples", "within_noise"}


def _accuracy_systems(n=500, right_a=0.6, right_b=0.8, seed=0):
    rng = np.random.default_rng(seed)
    labels = ["x", "y", "z"]
    gold = [str(v) for v in rng.choice(labels, size=n)]

    def system(share):
        right = np.zeros(n, dtype=bool)
        right[rng.permutation(n)[: int(share * n)]] = True
        wrong = {"x": "y", "y": "z", "z": "x"}
        return [g if r else wrong[g] for g, r in zip(gold, right)]

    return gold, system(right_a), system(right_b)


def test_identical_systems_are_within_noise():
    gold, pred, _ = _accuracy_systems()
    for metric in ("accuracy", "macro_f1", "micro_f1"):
        r = compare_classify(gold, pred, pred, metric=metric, n=300)
        assert set(r) == KEYS
        assert r["diff"] == 0.0 and r["a"] == r["b"]
        assert r["ci_low"] <= 0.0 <= r["ci_high"]
        assert r["within_noise"] is True
        assert r["p_value"] == 1.0


def test_clearly_better_system_is_not_noise():
    gold, a, b = _accuracy_systems()  # A right on 60%, B right on 80% of 500 items
    r = compare_classify(gold, a, b, metric="accuracy", n=1000)
    assert r["a"] == pytest.approx(0.6) and r["b"] == pytest.approx(0.8)
    assert r["diff"] == pytest.approx(0.2)
    assert 0.0 < r["ci_low"] < 0.2 < r["ci_high"]
    assert r["within_noise"] is False
    assert r["p_value"] < 0.05
    assert r["p_value"] == pytest.approx(2 / 1001)  # no resample flips the sign
    assert r["n_items"] == 500 and r["n_resamples"] == 1000
    # And the other way round: same interval mirrored, same p.
    back = compare_classify(gold, b, a, metric="accuracy", n=1000)
    assert back["diff"] == pytest.approx(-0.2)
    assert back["ci_high"] < 0 and back["p_value"] == r["p_value"]


def test_count_path_equals_recomputing_the_metric():
    gold, a, b = _accuracy_systems(n=120, right_a=0.7, right_b=0.75, seed=3)
    labels = sorted(set(gold) | set(a) | set(b))
    fast = compare_classify(gold, a, b, metric="macro_f1", n=150, seed=7)
    slow = paired_bootstrap(lambda g, p: score_single(g, p, labels)["macro_f1"], gold, a, b,
                            n=150, seed=7)
    assert fast["a"] == pytest.approx(score_single(gold, a, labels)["macro_f1"], abs=1e-12)
    for key in ("a", "b", "diff", "ci_low", "ci_high", "p_value"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key
    assert fast["within_noise"] == slow["within_noise"]


def _ner_corpus(n=150, seed=5):
    rng = random.Random(seed)
    types = ["PER", "LOC", "ORG"]
    gold = []
    for _ in range(n):
        tags = []
        while len(tags) < rng.randint(3, 12):
            if rng.random() < 0.3:
                t = rng.choice(types)
                tags += [f"B-{t}"] + [f"I-{t}"] * rng.randint(0, 2)
            else:
                tags.append("O")
        gold.append(tags)

    def noisy(p):
        return [[rng.choice(["O", "B-PER", "I-LOC"]) if rng.random() < p else t for t in s]
                for s in gold]

    return gold, noisy(0.25), noisy(0.02)


@pytest.mark.parametrize("mode", ["conlleval", "strict"])
def test_compare_ner_equals_recomputed_corpus_f1(mode):
    gold, a, b = _ner_corpus()
    fast = compare_ner(gold, a, b, mode=mode, n=100, seed=1)
    slow = paired_bootstrap(lambda g, p: score_entities(g, p, mode=mode)["f1"], gold, a, b,
                            n=100, seed=1)
    assert fast["a"] == pytest.approx(score_entities(gold, a, mode=mode)["f1"], abs=1e-12)
    for key in ("a", "b", "diff", "ci_low", "ci_high", "p_value"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key
    assert fast["within_noise"] is False and fast["diff"] > 0


def test_counts_fast_path_and_multilabel():
    right_a = np.array([1, 0] * 50)
    r = paired_bootstrap_counts(right_a, right_a, stat="mean", n=50)
    assert r["a"] == 0.5 and r["within_noise"] is True
    gold = [{"a"}, {"a", "b"}, {"b"}, set()] * 25
    r = compare_classify(gold, gold, [{"a"}] * 100, metric="micro_f1", n=200)
    assert r["a"] == 1.0 and r["b"] < 1.0 and r["within_noise"] is False


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same number of items"):
        compare_classify(["x"], ["x", "y"], ["x"])
    with pytest.raises(ValueError, match="unknown metric"):
        compare_classify(["x"], ["x"], ["x"], metric="auc")
    with pytest.raises(ValueError, match="no items"):
        paired_bootstrap_counts(np.zeros((0, 3)), np.zeros((0, 3)))
