"""Drift: the run's training reference, the service's counts in /metrics, and `runassist drift` on
what the feedback store saw: inputs like the training data are stable, foreign ones are not."""

from __future__ import annotations

import json
import subprocess

import pytest
from fastapi.testclient import TestClient

from conftest import REPO, make_ner_sentences, train_tiny_ner
from runassist.data_profile import compare, psi
from runassist.drift import drift_report
from runassist.feedback import FeedbackStore
from runassist.predict import Predictor
from runassist.serve.app import create_app
from serve_fixtures import RUNASSIST


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    return train_tiny_ner(tiny_model, tmp_path_factory.mktemp("drift"), (48, 40, 16))


def test_training_writes_the_reference_profile(run):
    profile = json.loads((run / "model" / "profile.json").read_text())
    assert profile["examples"] == 40 and profile["split"] == "dev"
    assert sum(profile["words"].values()) == pytest.approx(1.0)
    assert profile["unknown_rate"] == 0.0  # the tiny tokenizer covers every ASCII word
    assert set(profile["labels"]) <= {"PER", "LOC", "ORG"} and 0 <= profile["low_confidence_share"] <= 1


def test_psi_is_zero_for_equal_and_large_for_disjoint():
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0
    assert psi({"a": 1.0}, {"b": 1.0}) > 10
    ref = {"words": {"<=8": 1.0}, "labels": {"PER": 1.0}, "unknown_rate": 0.0, "low_confidence_share": 0.1}
    cur = {"words": {"<=8": 1.0}, "labels": {"PER": 1.0}, "unknown_rate": 0.5, "low_confidence_share": 0.15}
    result = compare(ref, cur)
    assert [r["drifted"] for r in result["measures"]] == [False, False, True, False] and result["drifted"]


def test_a_share_must_move_beyond_chance_to_drift():
    """0.05 of 40 -> 0.16 of 60 low-confidence predictions (2 -> ~10): z = 1.7, chance; the same
    move over 4,000 and 6,000 predictions is not."""
    ref = {"unknown_rate": 0.0, "low_confidence_share": 0.05}
    cur = {"unknown_rate": 0.0, "low_confidence_share": 0.16}
    small = compare({**ref, "examples": 40}, {**cur, "examples": 60})["measures"][-1]
    assert small["z"] == pytest.approx(1.68, abs=0.02) and not small["drifted"]
    large = compare({**ref, "examples": 4000}, {**cur, "examples": 6000})["measures"][-1]
    assert large["z"] > 10 and large["drifted"]


def test_service_counts_and_drift_sees_foreign_inputs(run, tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    like_training = [" ".join(w for w, _ in s) for s in make_ner_sentences(60, seed=1)]  # the dev distribution
    with TestClient(create_app(Predictor.from_run(run), feedback=store)) as client:
        for start in range(0, 60, 20):
            assert client.post("/v1/predict", json={"inputs": like_training[start:start + 20]}).status_code == 200
        metrics = client.get("/metrics").text
        assert "runassist_input_words_count 60.0" in metrics
        assert 'runassist_reference{measure="words_mean"}' in metrics
        assert "runassist_predicted_labels_total{label=" in metrics
    stable = drift_report(run, store)
    assert stable["current"]["examples"] == 60
    assert not stable["drifted"], stable["measures"]

    greek = "αβγδεζηθικλμνξοπρστυφχψω"
    foreign = [" ".join(greek[(n + i) % 24] * 3 for i in range(9)) + f" {n}" for n in range(60)]  # not in its vocabulary
    with TestClient(create_app(Predictor.from_run(run), feedback=store)) as client:
        assert client.post("/v1/predict", json={"inputs": foreign[:30]}).status_code == 200
        assert client.post("/v1/predict", json={"inputs": foreign[30:]}).status_code == 200
    since = store.predictions()[60]["created_at"]
    shifted = drift_report(run, store, since=since)
    assert shifted["current"]["examples"] == 60 and shifted["drifted"]
    rows = {r["measure"]: r for r in shifted["measures"]}
    assert rows["unknown sub-tokens"]["drifted"] and rows["unknown sub-tokens"]["current"] > 0.5
    # the command says so, and exits 1
    done = subprocess.run([RUNASSIST, "drift", str(run), "--db", str(tmp_path / "fb.sqlite"), "--since", since,
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["drifted"] is True
