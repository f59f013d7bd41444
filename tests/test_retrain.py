"""Retraining without forgetting: new data that holds only a new label, warm-started from the
champion with its head rows kept; with replay the old labels stay where they were, without it
they are forgotten. And the champion is never touched."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from safetensors.torch import load_file

from conftest import train_tiny_ner, write_conll
from runassist.retrain import retrain
from runassist.tasks import load_config
from runassist.train.run import replay_sample

FILLERS = "the a of to in and is was on for with at by from city river street said went".split()
PRODUCTS = ["widget", "gizmo", "widget pro", "gizmo max"]


def _product_sentences(n: int, seed: int):
    """Sentences whose only entities are of a type the champion never saw (PROD)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sent = []
        for _ in range(rng.randint(4, 9)):
            if rng.random() < 0.35:
                words = rng.choice(PRODUCTS).split()
                sent += [(w, ("B-" if i == 0 else "I-") + "PROD") for i, w in enumerate(words)]
            sent.append((rng.choice(FILLERS), "O"))
        out.append(sent)
    return out


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def champion(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("retrain")
    run = train_tiny_ner(tiny_model, base, (96, 24, 60), steps=80, name="champion", warmup_ratio=0)
    new = write_conll(base / "new.conll", _product_sentences(96, 5))
    return base, run, new


def test_replay_sample_is_seeded_and_sized():
    old = list(range(100))
    assert replay_sample(old, 30, 1.0, seed=3) == replay_sample(old, 30, 1.0, seed=3)
    assert len(replay_sample(old, 30, 0.5, seed=3)) == 15
    assert replay_sample(old, 300, 1.0, seed=3) == old  # fewer old than asked: all of them
    assert replay_sample(old, 30, 0.0, seed=3) == []


@pytest.mark.slow
def test_replay_keeps_old_labels_and_without_it_they_are_forgotten(champion):
    base, run, new = champion
    before = _digest(run)
    old_f1 = json.loads((run / "eval" / "test.json").read_text())["f1"]
    assert old_f1 > 0.8  # a champion worth keeping
    common = ["train.max_steps=80", "train.lr=1e-2", "train.eval_every=80", "train.warmup_ratio=0"]
    kept = retrain(run, str(new), replay_ratio=1.0, overrides=common, samples=200)
    alone = retrain(run, str(new), replay_ratio=0.0, overrides=common, samples=200)

    # the new label joined the head after the old ones, whose rows started as the champion's
    labels = json.loads((run / "model" / "task.json").read_text())["labels"]
    new_labels = json.loads((base / "runs" / kept["run"].split("/")[-1] / "model" / "task.json").read_text())["labels"]
    assert new_labels[:len(labels)] == labels and set(new_labels[len(labels):]) == {"B-PROD", "I-PROD"}
    assert kept["replayed_from"] and kept["train_examples"] == 96 + 96
    assert alone["replayed_from"] is None and alone["train_examples"] == 96

    with_replay, without = kept["compared"]["test"], alone["compared"]["test"]
    assert with_replay["champion"] == pytest.approx(old_f1)
    assert with_replay["new"] >= old_f1 - 0.02, with_replay  # the old labels, remembered
    assert without["new"] < old_f1 - 0.1, without  # and forgotten without replay
    per = {row["label"]: row for row in without["per_label"]}
    assert any(per[t]["b"]["f1"] < per[t]["a"]["f1"] for t in ("PER", "LOC", "ORG"))
    assert _digest(run) == before  # the champion's folder is untouched


def test_extend_labels_keeps_the_champions_head_rows(champion, tiny_model):
    base, run, new = champion
    cfg = load_config(run / "config.yaml", [f"model.source={run / 'model'}", f"data.train={new}",
                                            "train.extend_labels=true", "output.name=null", "train.max_steps=1",
                                            "train.lr=1e-9", "train.warmup_ratio=0", "train.eval_every=1",
                                            "train.weight_decay=0", "train.dropout=0"])
    from runassist.tasks import make_task
    from runassist.tasks.base import TaskState
    from runassist.tasks.hf import keep_head_rows

    task = make_task(cfg)
    old = load_file(run / "model" / "model.safetensors")
    labels = json.loads((run / "model" / "task.json").read_text())["labels"]
    state = TaskState(labels=labels + ["B-PROD", "I-PROD"])
    model = task.build_model(str(run / "model"), state)
    restored = keep_head_rows(model, str(run / "model"), len(labels), len(state.labels))
    assert set(restored) == {"classifier.weight", "classifier.bias"}
    params = dict(model.named_parameters())
    n = len(labels)
    assert params["classifier.weight"].shape[0] == n + 2
    assert (params["classifier.weight"][:n] == old["classifier.weight"]).all()
    assert (params["classifier.bias"][:n] == old["classifier.bias"]).all()


@pytest.mark.slow
def test_a_killed_retrain_leaves_the_champion_and_the_registry_as_they_were(champion, tmp_path):
    import os
    import signal
    import subprocess
    import time

    from conftest import REPO
    from runassist.registry import Registry
    from serve_fixtures import RUNASSIST

    base, run, new = champion
    reg = Registry(tmp_path / "registry")
    reg.add("ner", run, alias="champion")
    before_registry, before_run = reg.path.read_bytes(), _digest(run)
    out = tmp_path / "runs"
    proc = subprocess.Popen([RUNASSIST, "retrain", "registry:ner@champion", "--data", str(new), "--promote",
                             f"output.dir={out}", "train.max_steps=4000", "train.eval_every=50", "train.threads=1"],
                            cwd=REPO, env={**os.environ, "RUNASSIST_REGISTRY": str(reg.root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        logged = list(out.glob("*/metrics.jsonl"))
        if logged and logged[0].stat().st_size > 0:  # training is under way
            break
        time.sleep(0.1)
    assert proc.poll() is None, "retrain ended before it could be killed mid-training"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reg.path.read_bytes() == before_registry
    assert reg.champion("ner") == (1, run.resolve())
    assert _digest(run) == before_run
