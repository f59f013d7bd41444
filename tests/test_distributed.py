"""`accelerate launch` with two CPU processes (gloo) runs the same train command and yields a valid run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import ner_overrides


@pytest.mark.slow
def test_two_processes_train_one_valid_run(ner_files, tiny_model, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # --multi_gpu with ACCELERATE_USE_CPU gives two linked gloo processes (see INTEGRATION-NOTES).
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "runassist.cli", "train", "--quiet",
           *ner_overrides(ner_files, tiny_model, tmp_path / "runs", epochs=8, lr="1e-2", early_stopping="null"),
           "output.name=ddp"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["engine"]["processes"] == 2
    assert summary["engine"]["replicas_in_sync"] is True
    assert "MULTI_CPU" in summary["engine"]["distributed"]
    # 64 examples, batch 8, two ranks: 4 updates an epoch per rank, 8 epochs
    assert summary["steps"] == 32
    assert load_file(run / "model" / "model.safetensors")
    # the two processes learned together: the saved model tags the test names, and reloading it in
    # one process scores exactly what the run reported
    from runassist.evaluate import evaluate

    assert summary["test"]["f1"] > 0.5, summary["test"]
    assert evaluate(run)["scores"]["f1"] == summary["test"]["f1"]
    assert done.stdout.strip().splitlines()[-1] == str(run)  # printed once, by the main process
