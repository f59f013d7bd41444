"""compare_runs: two tiny NER runs scored on the same test file, per label and overall, with a
paired bootstrap; a run against itself is a zero difference within noise."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import make_ner_sentences, ner_overrides, write_conll
from runassist.tasks import load_config
from runassist.compare import _label_notes, compare_runs, render_comparison, verdict
from runassist.errors import RunassistError
from runassist.train.run import train


@pytest.fixture(scope="module")
def two_runs(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    files = {split: write_conll(base / f"{split}.conll", make_ner_sentences(n, seed))
             for split, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 24, 2))}
    runs = []
    for name, steps, seed in (("a", 12, 1), ("b", 40, 2)):
        overrides = ner_overrides(files, tiny_model, base / "runs", max_steps=steps, seed=seed, lr="1e-2",
                                  early_stopping="null", eval_every=steps) + [f"output.name={name}"]
        runs.append(train(load_config(None, overrides), progress=False).run)
    return runs[0], runs[1], files


def test_compare_structure_and_numbers(two_runs):
    a, b, files = two_runs
    result = compare_runs(a, b, n=500, seed=3)
    json.dumps(result, allow_nan=False)  # JSON-ready as it is (for --json)
    assert result["task"] == "ner" and result["headline"] == "f1"
    assert result["data"] == str(files["test"]) and result["n_items"] == 24
    assert result["a"]["name"] == "a" and result["b"]["name"] == "b"
    assert result["a"]["labels"] == result["b"]["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]

    # the scores are each run's own test scores, recomputed from the saved models
    for side, run in (("a", a), ("b", b)):
        saved = json.loads((run / "eval" / "test.json").read_text())
        for key in ("f1", "precision", "recall", "accuracy"):
            assert result["scores"][side][key] == pytest.approx(saved[key]), (side, key)
        per = {row["label"]: row for row in result["per_label"]}
        for type_, row in saved["per_type"].items():
            assert per[type_][side]["f1"] == pytest.approx(row["f1"])
            assert per[type_]["support"] == row["support"]

    rows = result["per_label"]
    assert {row["label"] for row in rows} >= {"LOC", "ORG", "PER"}
    for row in rows:
        for key in ("precision", "recall", "f1"):
            assert row["diff"][key] == pytest.approx(row["b"][key] - row["a"][key])

    boot = result["overall"]["f1"]
    assert boot["a"] == pytest.approx(result["scores"]["a"]["f1"])
    assert boot["b"] == pytest.approx(result["scores"]["b"]["f1"])
    assert boot["diff"] == pytest.approx(boot["b"] - boot["a"])
    assert boot["ci_low"] <= boot["ci_high"] and boot["n_resamples"] == 500 and boot["n_items"] == 24
    assert 0.0 < boot["p_value"] <= 1.0
    assert result["within_noise"] == boot["within_noise"] == (boot["ci_low"] <= 0.0 <= boot["ci_high"])
    assert result["verdict"] == boot["sentence"] == verdict(boot, "f1")
    # A (12 steps) has not learned to tag yet; B (40 steps) has: far more than test-sample luck
    assert boot["diff"] > 0.3 and not result["within_noise"] and boot["ci_low"] > 0
    assert boot["p_value"] == pytest.approx(2 / 501)  # no resample favours A: the smallest p 500 can show
    assert result["verdict"] == (f"B is better than A by {boot['diff']:.3f} F1 "
                                 f"(95% CI {boot['ci_low']:.3f}..{boot['ci_high']:.3f}, p=0.004)")
    assert 0.0 <= result["agreement"] <= 1.0
    assert result["notes"] == []

    # same seed, same resamples: the result is reproducible
    again = compare_runs(a, b, n=500, seed=3)
    assert again["overall"] == result["overall"]


def test_a_run_against_itself_is_within_noise(two_runs):
    a, _, _ = two_runs
    result = compare_runs(a, a, n=200)
    boot = result["overall"]["f1"]
    assert boot["diff"] == 0.0 and boot["ci_low"] == boot["ci_high"] == 0.0 and boot["p_value"] == 1.0
    assert result["within_noise"] is True
    assert result["agreement"] == 1.0
    assert all(row["diff"][k] == 0.0 for row in result["per_label"] for k in ("precision", "recall", "f1"))
    assert result["verdict"] == "the difference (0.000) is within noise: 95% CI 0.000..0.000"


def test_verdict_sentences():
    better_b = {"diff": 0.031, "ci_low": 0.012, "ci_high": 0.050, "p_value": 0.004, "within_noise": False}
    assert verdict(better_b, "f1") == "B is better than A by 0.031 F1 (95% CI 0.012..0.050, p=0.004)"
    better_a = {"diff": -0.031, "ci_low": -0.050, "ci_high": -0.012, "p_value": 0.0004, "within_noise": False}
    assert verdict(better_a, "accuracy") == "A is better than B by 0.031 accuracy (95% CI 0.012..0.050, p<0.001)"
    noise = {"diff": 0.004, "ci_low": -0.011, "ci_high": 0.019, "p_value": 0.6, "within_noise": True}
    assert verdict(noise, "macro_f1") == "the difference (0.004) is within noise: 95% CI -0.011..0.019"


def test_compare_on_dev_through_the_cli_and_render(two_runs):
    from rich.console import Console
    from typer.testing import CliRunner

    from runassist.cli import app

    a, b, files = two_runs
    out = CliRunner().invoke(app, ["runs", "compare", str(a), str(b), "--data", "dev", "--samples", "100", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["data"] == str(files["dev"]) and result["n_items"] == 16
    assert result["overall"]["f1"]["n_resamples"] == 100

    console = Console(record=True, width=140)
    render_comparison(result, console)
    text = console.export_text()
    for piece in ("A a (", "B b (", "per label", "LOC", "ORG", "PER", "95% CI", result["verdict"]):
        assert piece in text, piece


def _fake_run(source, folder, *, task=None, labels=None):
    """A copy of a run's config and task.json (no weights): enough for the checks that come first."""
    (folder / "model").mkdir(parents=True)
    raw = yaml.safe_load((source / "config.yaml").read_text())
    if task:
        raw["task"] = {"name": task}  # a task's section has its own keys
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    saved = json.loads((source / "model" / "task.json").read_text())
    if labels:
        saved["labels"] = labels
    (folder / "model" / "task.json").write_text(json.dumps(saved))
    return folder


def test_refuses_what_cannot_be_compared(two_runs, tmp_path):
    a, _, _ = two_runs
    other_task = _fake_run(a, tmp_path / "classify", task="classify", labels=["neg", "pos"])
    with pytest.raises(RunassistError, match="cannot compare a ner run .* with a classify run"):
        compare_runs(a, other_task)
    animals = _fake_run(a, tmp_path / "animals", labels=["O", "B-ANIMAL", "I-ANIMAL"])
    with pytest.raises(RunassistError, match="share no entity types .*ANIMAL"):
        compare_runs(a, animals)
    with pytest.raises(RunassistError, match="no such run folder"):
        compare_runs(a, tmp_path / "nope")
    shutil.rmtree(tmp_path / "animals" / "model")
    with pytest.raises(RunassistError, match="missing model/task.json"):
        compare_runs(a, animals)


def test_partly_different_labels_are_compared_with_a_note():
    from runassist.config import DataConfig, ModelConfig
    from runassist.tasks.classify import ClassifySection, ClassifyTask

    task = ClassifyTask(ClassifySection(), DataConfig(), ModelConfig())
    info = {"name": "x"}
    notes = _label_notes(task, {**info, "labels": ["neg", "pos"]}, {**info, "labels": ["neg", "neu", "pos"]})
    assert notes == ["labels only B was trained on: neu; A can never predict them, which counts against A"]
    with pytest.raises(RunassistError, match="share no labels"):
        _label_notes(task, {**info, "labels": ["a"]}, {**info, "labels": ["b"]})
    with pytest.raises(RunassistError, match="single-label run .* multi-label"):
        task.comparable(ClassifySection(multi_label=True))
