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


# `runassist train` that cannot pass step $GATE_STEP: when that step's callbacks are done it writes
# $GATE_FILE and waits for the test's signal. No timing to race: the signal always lands there.
GATED = """
import os, sys, time
from pathlib import Path
from runassist.train import callbacks
marker, gate = Path(os.environ["GATE_FILE"]), int(os.environ["GATE_STEP"])
real = callbacks.Checkpoint.on_step
def on_step(self, ctx, info):
    real(self, ctx, info)
    if info.position.step == gate:
        marker.write_text(str(gate))
        while True:
            time.sleep(0.05)
callbacks.Checkpoint.on_step = on_step
from runassist.cli import main
main()
"""


def _gated(files, model, out, name, *, step: int, **kw) -> tuple[subprocess.Popen, "os.PathLike"]:
    marker = out.parent / f"{name}.gate"
    cmd = [sys.executable, "-c", GATED, *_cmd(files, model, out, name, **kw)[3:]]
    proc = subprocess.Popen(cmd, env={**ENV, "GATE_FILE": str(marker), "GATE_STEP": str(step)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def test_resume_refuses_new_config_and_missing_checkpoint(tmp_path):
    done = subprocess.run([*RUNASSIST, "train", "x.yaml", "--resume", str(tmp_path)], env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "model.source=RUN/model" in done.stderr
    (tmp_path / "config.yaml").write_text("task: ner\n")
    done = subprocess.run([*RUNASSIST, "train", "--resume", str(tmp_path)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "no checkpoint" in done.stderr


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
