"""output.track: the MLflow store read back with MLflow's own client, TensorBoard's event file read
back with its EventAccumulator, a killed run FAILED, a resumed run continuing the same MLflow run,
and a broken tracker that does not stop training."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, ner_overrides

from runassist.tasks import load_config
from runassist.train.run import train

mlflow = pytest.importorskip("mlflow")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _client(run: Path):
    from mlflow.tracking import MlflowClient

    info = json.loads((run / "tracking.json").read_text())
    return MlflowClient(info["tracking_uri"]), info["mlflow_run_id"]


@pytest.mark.slow
def test_mlflow_and_tensorboard_hold_what_the_run_did(ner_files, tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "runs", log_every=1, epochs=2)
                      + ["output.track=[mlflow, tensorboard]"])
    run = train(cfg, progress=False).run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}
    evals = {r["step"]: r["f1"] for r in rows if r["kind"] == "eval"}

    client, run_id = _client(run)
    assert client.get_run(run_id).info.status == "FINISHED"
    got = client.get_run(run_id).data
    assert got.params["train.lr"] == "0.005" and got.params["train.batch_size"] == "8"
    assert got.params["task.name"] == "ner" and all(len(v) <= 500 for v in got.params.values())
    for tag in ("runassist.version", "runassist.config_hash", "runassist.data_hash"):
        assert got.tags[tag]
    history = client.get_metric_history(run_id, "train/loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses) and len(losses) == 16  # 8 steps x 2 epochs
    assert {m.step: m.value for m in client.get_metric_history(run_id, "dev/f1")} == pytest.approx(evals)
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "summary.json", "labels.json", "model"} <= top
    assert "model/model.safetensors" in {a.path for a in client.list_artifacts(run_id, "model")}

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(losses)
    assert {e.step: e.value for e in events.Scalars("dev/f1")} == pytest.approx(evals)


def test_a_broken_tracker_is_logged_once_and_training_goes_on(ner_files, tiny_model, tmp_path, caplog):
    # A tracking URI that cannot work: the run still finishes, with one warning.
    cfg = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "runs", max_steps=3)
                      + ["output.track=mlflow", "output.tracking_uri=nosuchscheme://x"])
    with caplog.at_level(logging.WARNING, logger="runassist.tracking"):
        result = train(cfg, progress=False)
    assert result.summary["status"] == "finished"
    warnings = [r for r in caplog.records if r.name == "runassist.tracking"]
    assert len(warnings) == 1 and "mlflow tracking stopped" in warnings[0].getMessage()


@pytest.mark.slow
def test_a_killed_run_is_failed_and_resume_continues_the_same_mlflow_run(ner_files, tiny_model, tmp_path):
    # 16 epochs of 8 steps: long enough to be killed mid-run
    items = ner_overrides(ner_files, tiny_model, tmp_path / "runs", log_every=8, epochs=16, checkpoint_every=4,
                          early_stopping="null") + ["output.track=mlflow", "output.name=killed"]
    from runassist.config import OutputConfig
    from runassist.train.mlflow_tracking import client_for, experiment_id

    # The store made here: a new SQLite store's tables take MLflow several seconds, in which this tiny
    # run would finish before it could be killed.
    experiment_id(client_for(OutputConfig(dir=str(tmp_path / "runs"))), OutputConfig(dir=str(tmp_path / "runs")))
    proc = subprocess.Popen([sys.executable, "-m", "runassist.cli", "train", *items, "--quiet", "--no-report"],
                            env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = tmp_path / "runs" / "killed"
    deadline = time.time() + 120
    while not ((run / "tracking.json").exists() and (run / "checkpoints" / "last" / "state.json").exists()):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"  # killed mid-run
    client, run_id = _client(run)
    assert client.get_run(run_id).info.status == "RUNNING"  # what a kill -9 leaves: no code ran

    # The next tracked run in the store finds the dead owner and says so.
    other = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "runs", max_steps=2)
                        + ["output.track=mlflow"])
    train(other, progress=False)
    killed = client.get_run(run_id)
    assert killed.info.status == "FAILED" and "killed" in killed.data.tags["runassist.failure"]

    result = train(None, resume=run, progress=False)
    assert _client(result.run)[1] == run_id  # the same MLflow run, not a new one
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert steps[-1] == result.summary["total_steps"] == 128 and steps[0] == 8
    assert int(resumed.data.tags["runassist.resumed_at_step"]) >= 4


@pytest.mark.slow  # a new MLflow store's tables take seconds
def test_a_run_that_raises_is_failed_in_mlflow(ner_files, tiny_model, tmp_path):
    from runassist.train.callbacks import Callback

    class Boom(Callback):
        def on_eval(self, ctx, info, scores):
            raise RuntimeError("disk on fire")

    cfg = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "runs", max_steps=2)
                      + ["output.track=mlflow", "output.name=boom"])
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(cfg, progress=False, callbacks=[Boom()])
    client, run_id = _client(tmp_path / "runs" / "boom")
    failed = client.get_run(run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["runassist.failure"] == "RuntimeError: disk on fire"
