"""The model registry and the promotion gate: aliases, history and rollback; a candidate refused when
one label is significantly worse even though it is better overall; an identical model passes; the
decision is reproducible with a seed; a kill during `promote` leaves the registry as it was."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, make_ner_sentences, train_tiny_ner, write_conll
from runassist.config import DataConfig, ModelConfig
from runassist.data.records import TokenExample
from runassist.errors import RunassistError
from runassist.gate import GateConfig, _judge_set, load_gate, promote
from runassist.registry import Registry, parse_reference
from runassist.tasks import task_class
from runassist.tasks.ner import TagPrediction


# -- the registry ---------------------------------------------------------------------------------

def _fake_run(folder, name):
    run = folder / name
    (run / "model").mkdir(parents=True)
    (run / "model" / "task.json").write_text('{"labels": ["O"]}')
    (run / "summary.json").write_text(json.dumps({"task": "ner", "test": {"metric": "f1", "value": 0.5}}))
    return run


def test_registry_versions_aliases_history_and_rollback(tmp_path):
    reg = Registry(tmp_path / "registry")
    runs = [_fake_run(tmp_path, f"run{i}") for i in range(3)]
    assert reg.add("ner", runs[0], alias="champion") == 1
    assert reg.add("ner", runs[1]) == 2
    assert reg.add("ner", runs[1]) == 2  # registered before: same number, nothing new
    assert reg.resolve("registry:ner@champion") == runs[0].resolve()
    assert reg.resolve("ner@2") == reg.resolve("registry:ner@v2") == runs[1].resolve()
    assert reg.resolve("registry:ner") == runs[0].resolve()  # no alias: the champion
    reg.set_alias("ner", "challenger", 2)
    reg.set_alias("ner", "champion", 2, reason="better")
    assert reg.read()["models"]["ner"]["aliases"] == {"champion": 2}  # a promoted challenger is no longer one
    assert reg.add("ner", runs[2], alias="champion") == 3
    assert reg.champion("ner") == (3, runs[2].resolve())
    assert reg.rollback("ner") == 2
    assert reg.rollback("ner") == 1
    with pytest.raises(RunassistError, match="no earlier champion"):
        reg.rollback("ner")
    events = [(e["event"], e.get("version")) for e in reg.history("ner")]
    assert events == [("add", 1), ("alias:champion", 1), ("add", 2), ("alias:challenger", 2),
                      ("alias:champion", 2), ("add", 3), ("alias:champion", 3), ("rollback", 2), ("rollback", 1)]
    with pytest.raises(RunassistError, match="no model 'other'"):
        reg.resolve("registry:other@champion")
    with pytest.raises(RunassistError, match="has no version 9"):
        reg.resolve("ner@9")
    with pytest.raises(RunassistError, match="not a trained run folder"):
        reg.add("ner", tmp_path)
    assert parse_reference("registry:x") == ("x", "champion")
    # the champion moved while a gate was deciding: refused, nothing written
    before = reg.path.read_bytes()
    with pytest.raises(RunassistError, match="changed"):
        reg.add("ner", runs[0], alias="champion", champion_was=3)
    assert reg.path.read_bytes() == before


@pytest.mark.slow
def test_registry_changes_from_many_processes_are_all_kept(tmp_path):
    """Eight processes each add five versions at once: the lock loses none and numbers none twice."""
    _fake_run(tmp_path, "r")
    code = ("import sys; from runassist.registry import Registry\n"
            "reg = Registry(sys.argv[1])\n"
            "for i in range(5):\n"
            "    import pathlib, shutil\n"
            "    run = pathlib.Path(sys.argv[2]) / f'r-{sys.argv[3]}-{i}'\n"
            "    shutil.copytree(pathlib.Path(sys.argv[2]) / 'r', run)\n"
            "    reg.add('m', run)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "registry"), str(tmp_path), str(k)],
                              cwd=REPO) for k in range(8)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    versions = Registry(tmp_path / "registry").read()["models"]["m"]["versions"]
    assert sorted(v["version"] for v in versions) == list(range(1, 41))
    assert len({v["run"] for v in versions}) == 40


# -- the gate on predictions made to order ----------------------------------------------------------

def _ner_task():
    cls = task_class("ner")
    return cls(cls.Section(), DataConfig(), ModelConfig())


def _sentences(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.choice(["PER", "LOC", "ORG"])
        out.append(TokenExample(tokens=("w", "Name", "w"), tags=("O", f"B-{kind}", "O")))
    return out


def _predict(examples, accuracy: dict[str, float], seed: int):
    """Predictions that find each gold entity with the given probability per type (else miss it)."""
    rng = random.Random(seed)
    preds = []
    for ex in examples:
        kind = ex.tags[1][2:]
        tags = ex.tags if rng.random() < accuracy[kind] else ("O", "O", "O")
        preds.append(TagPrediction(tags=tuple(tags), scores=(1.0,) * 3))
    return preds


LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def test_gate_refuses_a_candidate_better_overall_but_worse_on_one_label():
    task, examples = _ner_task(), _sentences(600, seed=1)
    champion = _predict(examples, {"PER": 0.70, "LOC": 0.90, "ORG": 0.70}, seed=2)
    candidate = _predict(examples, {"PER": 0.97, "LOC": 0.72, "ORG": 0.97}, seed=3)
    gate = GateConfig(epsilon=0.01, min_support=30, samples=500, seed=7)
    result = _judge_set(task, "test", examples, champion, candidate, LABELS, gate, mode_min=False)
    assert result["overall"]["b"] > result["overall"]["a"] + 0.05  # clearly better overall ...
    assert result["overall"]["passed"]
    rows = {r["label"]: r for r in result["per_label"]}
    assert not rows["LOC"]["passed"] and rows["LOC"]["rule"] == "non-inferiority"  # ... but LOC is worse
    assert rows["LOC"]["ci_high"] < 0
    assert rows["PER"]["passed"] and rows["ORG"]["passed"]
    assert not result["passed"] and any("LOC" in r for r in result["reasons"])
    # the same seed: the same figures; another seed: other resamples
    again = _judge_set(task, "test", examples, champion, candidate, LABELS, gate, mode_min=False)
    assert again == result
    other = _judge_set(task, "test", examples, champion, candidate, LABELS, gate.model_copy(update={"seed": 8}),
                       mode_min=False)
    assert other["per_label"][0]["ci_low"] != result["per_label"][0]["ci_low"]


def test_gate_passes_an_identical_model_and_judges_only_supported_labels():
    task, examples = _ner_task(), _sentences(300, seed=4)
    preds = _predict(examples, {"PER": 0.8, "LOC": 0.8, "ORG": 0.8}, seed=5)
    result = _judge_set(task, "test", examples, preds, list(preds), LABELS, GateConfig(), mode_min=False)
    assert result["passed"] and result["overall"]["diff"] == 0
    assert all(r["diff"] == 0 and r["passed"] for r in result["per_label"])
    few = _judge_set(task, "test", examples, preds, list(preds), LABELS, GateConfig(min_support=10_000),
                     mode_min=False)
    assert {r["rule"] for r in few["per_label"]} == {"significant drop"} and few["passed"]


def test_small_labels_and_further_sets_refuse_only_a_significant_drop():
    task, examples = _ner_task(), _sentences(240, seed=6)
    champion = _predict(examples, {"PER": 0.80, "LOC": 0.80, "ORG": 0.80}, seed=2)
    slightly = _predict(examples, {"PER": 0.80, "LOC": 0.76, "ORG": 0.80}, seed=2)  # a little worse on LOC, in noise
    gate = GateConfig(epsilon=0.01, min_support=1000, samples=400, seed=1)  # every label is "small" here
    primary = _judge_set(task, "test", examples, champion, slightly, LABELS, gate, mode_min=False)
    loc = {r["label"]: r for r in primary["per_label"]}["LOC"]
    assert loc["rule"] == "significant drop" and loc["ci_low"] < -0.01 <= 0 <= loc["ci_high"] and loc["passed"]
    assert primary["overall"]["rule"] == "non-inferiority"  # the test split's headline is always held to epsilon
    further = _judge_set(task, "feedback", examples, champion, slightly, LABELS, gate, mode_min=False, primary=False)
    assert further["overall"]["rule"] == "significant drop" and further["passed"]
    collapsed = _predict(examples, {"PER": 0.80, "LOC": 0.20, "ORG": 0.80}, seed=2)
    worse = _judge_set(task, "feedback", examples, champion, collapsed, LABELS, gate, mode_min=False, primary=False)
    loc = {r["label"]: r for r in worse["per_label"]}["LOC"]
    assert not loc["passed"] and loc["ci_high"] < 0
    assert any("significantly worse" in r for r in worse["reasons"])


def test_gate_settings_are_checked(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text("epsilon: 0.02\nmin_suport: 5\n")
    with pytest.raises(RunassistError, match="min_suport"):
        load_gate(path)
    path.write_text("epsilon: 0.02\nseed: 3\n")
    assert load_gate(path, {"seed": 9}).model_dump()["seed"] == 9


# -- promote on trained runs ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("gate")
    run = train_tiny_ner(tiny_model, base, (64, 16, 40), name="champion")
    copy = base / "runs" / "identical"
    shutil.copytree(run, copy)
    return base, run, copy


def test_promote_first_champion_then_identical_passes_and_slow_one_is_refused(trained):
    base, run, copy = trained
    reg = Registry(base / "registry-a")
    first = promote(run, "ner", GateConfig(samples=200), reg)
    assert first["passed"] and first["version"] == 1 and reg.champion("ner")[0] == 1
    same = promote(copy, "ner", GateConfig(samples=200, latency_ratio=3.0), reg)
    assert same["passed"], same["reasons"]
    assert same["sets"][0]["overall"]["diff"] == 0 and same["version"] == 2
    assert reg.champion("ner") == (2, copy.resolve())
    report = json.loads((copy / "promotion").glob("ner-*.json").__next__().read_text())
    assert report["passed"] and report["sets"][0]["n_items"] == 40
    assert "Promotion gate" in next((copy / "promotion").glob("ner-*.html")).read_text()
    # a budget no model can meet: refused, kept as the challenger, the champion unchanged
    slow = promote(run, "ner", GateConfig(samples=200, latency_ratio=0.01), reg)
    assert not slow["passed"] and any("time per item" in r for r in slow["reasons"])
    assert reg.champion("ner") == (2, copy.resolve())
    assert reg.read()["models"]["ner"]["aliases"]["challenger"] == 1
    last = reg.history("ner")[-1]
    assert last["event"] == "alias:challenger" and last["details"]["passed"] is False
    assert reg.rollback("ner") == 1


@pytest.mark.slow
def test_a_killed_promote_leaves_the_registry_as_it_was(trained):
    import psutil

    base, run, copy = trained
    reg = Registry(base / "registry-b")
    reg.add("ner", run, alias="champion")
    before = reg.path.read_bytes()
    big = write_conll(base / "big.conll", make_ner_sentences(3000, 9))  # judging takes a while
    env = {**os.environ, "RUNASSIST_REGISTRY": str(reg.root)}
    proc = subprocess.Popen([sys.executable, "-m", "runassist", "promote", str(copy), "--to", "ner",
                             "--data", str(big)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    weights = str(copy / "model" / "model.safetensors")
    deadline = time.monotonic() + 120
    loaded = False
    while time.monotonic() < deadline and proc.poll() is None and not loaded:
        try:  # both models are loaded (safetensors maps the candidate's weights): the gate is judging
            loaded = any(m.path == weights for m in psutil.Process(proc.pid).memory_maps())
        except psutil.Error:
            pass
        time.sleep(0.05)
    time.sleep(0.5)
    assert loaded and proc.poll() is None, "promote ended before it could be killed mid-way"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reg.path.read_bytes() == before
    assert reg.champion("ner") == (1, run.resolve())
    assert [e["event"] for e in reg.history("ner")] == ["add", "alias:champion"]
