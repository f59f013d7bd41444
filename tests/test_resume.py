"""Kill a real training process after a checkpoint, resume it, and get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import ner_overrides

RUNASSIST = [sys.executable, "-m", "runassist.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _cmd(files, model, out, name, **kw):
    return [*RUNASSIST, "train", "--quiet", "--no-report",
            *ner_overrides(files, model, out, **kw), f"output.name={name}"]


# `runassist train` held at one moment: when it gets there it writes $GATE_FILE and waits for the
# test's signal, so no timing can race. $GATE_KIND: "step" (after step $GATE_AT's callbacks),
# "write" (inside the $GATE_AT-th checkpoint of this process, its weights written, the rest not),
# "swap" (between the two renames that put that checkpoint in place).
GATED = """
import os, sys, time
from pathlib import Path
from runassist.train import callbacks, checkpoint
marker, kind, at = Path(os.environ["GATE_FILE"]), os.environ["GATE_KIND"], int(os.environ["GATE_AT"])
calls = [0]
def hold():
    marker.write_text(kind)
    while True:
        time.sleep(0.05)
if kind == "step":
    real_step = callbacks.Checkpoint.on_step
    def on_step(self, ctx, info):
        real_step(self, ctx, info)
        if info.position.step == at:
            hold()
    callbacks.Checkpoint.on_step = on_step
else:
    real_write, real_swap = checkpoint.save_model, checkpoint.swap_folder
    def save_model(model, path):
        real_write(model, path)
        calls[0] += 1
        if kind == "write" and calls[0] == at:
            hold()
    def swap_folder(staged, target):
        if kind == "swap" and calls[0] == at:
            old = target.with_name(f".{target.name}.old")
            if target.exists():
                target.rename(old)
            hold()
        real_swap(staged, target)
    checkpoint.save_model, checkpoint.swap_folder = save_model, swap_folder
from runassist.cli import main
main()
"""


def _gated(files, model, out, name, *, step: int = 0, kind: str = "step", at: int | None = None, resume: bool = False,
           **kw) -> tuple[subprocess.Popen, "os.PathLike"]:
    marker = out.parent / f"{name}.gate"
    marker.unlink(missing_ok=True)
    args = ["train", "--quiet", "--no-report", "--resume", str(out / name)] if resume \
        else _cmd(files, model, out, name, **kw)[3:]
    env = {**ENV, "GATE_FILE": str(marker), "GATE_KIND": kind, "GATE_AT": str(at if at is not None else step)}
    proc = subprocess.Popen([sys.executable, "-c", GATED, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "the run never reached its gate"
        time.sleep(0.02)
    return proc, marker


SETTINGS = dict(epochs=20, max_steps=120, checkpoint_every=10, eval_every=40, log_every=10, dropout=0.1, lr="3e-3",
                early_stopping="{patience: 5}")


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(ner_files, tiny_model, tmp_path):
    out = tmp_path / "runs"
    subprocess.run(_cmd(ner_files, tiny_model, out, "straight", **SETTINGS), check=True, env=ENV,
                   capture_output=True, text=True)
    # Same run, killed with SIGKILL (no chance to clean up) at step 25, five steps past a checkpoint.
    proc, _ = _gated(ner_files, tiny_model, out, "killed", step=25, **SETTINGS)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = out / "killed" / "checkpoints" / "last" / "state.json"
    assert json.loads(state.read_text())["position"]["step"] == 20
    summary = json.loads((out / "killed" / "summary.json").read_text())
    assert summary["status"] == "running"

    done = subprocess.run([*RUNASSIST, "train", "--quiet", "--no-report", "--resume", str(out / "killed")],
                          env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ("model/model.safetensors", "checkpoints/last/model.safetensors"):
        a = load_file(out / "straight" / name)
        b = load_file(out / "killed" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), (name, key)
    s1 = json.loads((out / "straight" / "summary.json").read_text())
    s2 = json.loads((out / "killed" / "summary.json").read_text())
    assert s2["status"] == "finished"
    assert s1["best"] == s2["best"]
    assert s1["test"] == pytest.approx(s2["test"])
    # metrics.jsonl of the resumed run has each step once, like the uninterrupted one
    steps1 = [(r["kind"], r["step"]) for r in map(json.loads, (out / "straight" / "metrics.jsonl").open())]
    steps2 = [(r["kind"], r["step"]) for r in map(json.loads, (out / "killed" / "metrics.jsonl").open())]
    assert steps1 == steps2


def test_resume_refuses_a_new_config_and_restarts_without_a_checkpoint(tmp_path):
    done = subprocess.run([*RUNASSIST, "train", "x.yaml", "--resume", str(tmp_path)], env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "model.source=RUN/model" in done.stderr
    (tmp_path / "config.yaml").write_text("task: ner\n")
    done = subprocess.run([*RUNASSIST, "train", "--resume", str(tmp_path)], env=ENV, capture_output=True, text=True)
    # killed before its first checkpoint: it starts over with its own config (here, one without data)
    assert done.returncode == 2 and "starts over from step 0" in done.stderr and "data.train" in done.stderr


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(ner_files, tiny_model, tmp_path):
    out = tmp_path / "runs"
    proc, _ = _gated(ner_files, tiny_model, out, "int", step=20, **{**SETTINGS, "checkpoint_every": 1000})
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    summary = json.loads((out / "int" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    state = json.loads((out / "int" / "checkpoints" / "last" / "state.json").read_text())
    assert state["position"]["step"] == 20  # the step the interrupt arrived after
    done = subprocess.run([*RUNASSIST, "train", "--quiet", "--no-report", "--resume", str(out / "int")],
                          env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "int" / "summary.json").read_text())["steps"] == 120


def _status(out, name) -> str:
    done = subprocess.run([*RUNASSIST, "runs", "--dir", str(out), "--json"], env=ENV, capture_output=True, text=True)
    return {row["name"]: row["status"] for row in json.loads(done.stdout)}[name]


def _checkpoint_step(run) -> int | None:
    for folder in ("last", ".last.old"):
        state = run / "checkpoints" / folder / "state.json"
        if state.exists():
            return json.loads(state.read_text())["position"]["step"]
    return None


@pytest.mark.slow
def test_five_kills_at_random_moments_then_the_uninterrupted_weights(ner_files, tiny_model, tmp_path):
    """kill -9 at five seeded moments: before the first checkpoint, mid-step, while a checkpoint's files
    are written and between the renames that swap it in. `runs` says interrupted each time; resuming
    each time ends with the weights, the best model and the metrics rows of a run never killed."""
    import random

    out = tmp_path / "runs"
    subprocess.run(_cmd(ner_files, tiny_model, out, "straight", **SETTINGS), check=True, env=ENV,
                   capture_output=True, text=True)
    rng = random.Random(19)
    moments = [("step", rng.randint(2, 9))]  # before the first checkpoint (step 10): the run starts over
    for kind in rng.sample(["step", "write", "swap", "write"], 4):
        moments.append((kind, rng.randint(1, 3)))
    done_steps = 0
    for n, (kind, at) in enumerate(moments):
        step = done_steps + rng.randint(1, 25) if kind == "step" and n else at
        proc, _ = _gated(ner_files, tiny_model, out, "killed", kind=kind, at=step, resume=n > 0, **SETTINGS)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _status(out, "killed") == "interrupted", (n, kind, step)
        done_steps = _checkpoint_step(out / "killed") or 0
        assert done_steps < 120, "the run finished before its last kill; move the moments earlier"
    assert _checkpoint_step(out / "killed") is not None
    finished = subprocess.run([*RUNASSIST, "train", "--quiet", "--no-report", "--resume", str(out / "killed")],
                              env=ENV, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert _status(out, "killed") == "finished"
    for name in ("model/model.safetensors", "checkpoints/last/model.safetensors"):
        a, b = load_file(out / "straight" / name), load_file(out / "killed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = {n: [json.loads(x) for x in (out / n / "metrics.jsonl").read_text().splitlines()]
            for n in ("straight", "killed")}
    assert [(r["kind"], r["step"]) for r in rows["killed"]] == [(r["kind"], r["step"]) for r in rows["straight"]]
    elapsed = [r["elapsed"] for r in rows["killed"]]
    assert elapsed == sorted(elapsed)  # one clock across the resumes, not restarting at each
