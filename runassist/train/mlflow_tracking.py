"""MLflow tracking: one MLflow run per runassist run, through MLflow's own client.

- Store: ``output.tracking_uri``, else ``sqlite:///<output.dir>/mlflow.db`` with artifacts in
  ``<output.dir>/mlartifacts`` (MLflow 3 keeps its plain-file store in maintenance mode).
- Tags: runassist version, git commit (when the working folder is a git checkout), config hash,
  data hash, the run folder, and the process that owns the run (host, pid, start time).
- Parameters: the resolved config flattened to ``section.key``; a value longer than ``PARAM_LIMIT``
  (a label list, a long prompt) is cut there and the full value goes to ``params_full.json``; the
  label list itself is the ``labels.json`` artifact, not a parameter (a long id2label crashing a
  run is the failure this avoids).
- Metrics with the global step: train/loss, train/lr per logging step; dev/<score> per evaluation.
- Artifacts at the end: config.yaml, summary.json, labels.json; the kept model once, on success
  (not for search trials: the study's run gets best.yaml, study.json and study.html).
- Status: FINISHED; FAILED on an exception; KILLED on Ctrl-C. A kill -9 runs no code, so it is
  found by whoever looks next: every tracker that opens in the same experiment marks the RUNNING
  runs of this host whose owning process is gone as FAILED (``reap_dead``). ``--resume`` reattaches
  to the run named in RUN/tracking.json, which goes back to RUNNING.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from runassist import __version__
from runassist.atomic import read_json, write_json
from runassist.config import OutputConfig
from runassist.train.tracking import Tracker

PARAM_LIMIT = 500  # the smallest limit MLflow servers have had for a parameter value (6,000 in MLflow 3)
BATCH = 100  # parameters per log_batch call, MLflow's cap
END_STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def tracking_uri(output: OutputConfig) -> str:
    if output.tracking_uri:
        return output.tracking_uri
    return f"sqlite:///{Path(output.dir).resolve() / 'mlflow.db'}"


def client_for(output: OutputConfig) -> Any:
    from mlflow.tracking import MlflowClient

    Path(output.dir).mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri(output))


def experiment_id(client: Any, output: OutputConfig) -> str:
    found = client.get_experiment_by_name(output.experiment)
    if found is not None:
        return found.experiment_id
    location = None if output.tracking_uri else (Path(output.dir).resolve() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(output.experiment, artifact_location=location)
    except Exception:  # another process created it first
        found = client.get_experiment_by_name(output.experiment)
        if found is None:
            raise
        return found.experiment_id


def owner_tags() -> dict[str, str]:
    import psutil

    return {"runassist.host": socket.gethostname(), "runassist.pid": str(os.getpid()),
            "runassist.started": repr(psutil.Process().create_time())}


def reap_dead(client: Any, exp_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this host whose process is gone (killed with -9, machine reset);
    runs of other hosts cannot be checked from here and are left as they are."""
    import psutil

    dead = []
    for run in client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get("runassist.host") != socket.gethostname() or "runassist.pid" not in tags:
            continue
        try:
            alive = abs(psutil.Process(int(tags["runassist.pid"])).create_time()
                        - float(tags["runassist.started"])) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            alive = False
        if not alive:
            client.set_tag(run.info.run_id, "runassist.failure", "its process ended without closing the run (killed)")
            client.set_terminated(run.info.run_id, "FAILED")
            dead.append(run.info.run_id)
    return dead


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}``; lists and None as their JSON text."""
    if isinstance(data, dict) and data:
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return {prefix: text}


def params_within_limits(params: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(what MLflow takes, the full values that had to be cut)."""
    kept, cut = {}, {}
    for key, value in params.items():
        if len(value) > PARAM_LIMIT:
            cut[key] = value
            value = value[:PARAM_LIMIT - 1] + "…"
        kept[key[:250]] = value
    return kept, cut


def config_hash(config: dict[str, Any]) -> str:
    """What the run trains: the config without where it writes (output) and the search space."""
    core = {k: v for k, v in config.items() if k not in ("output", "search")}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_hash(data: dict[str, Any]) -> str:
    """The bytes of the data files (a packaged alias such as wnut16:train: its name, which the pinned
    package fixes)."""
    digest = hashlib.sha256()
    for split in ("train", "dev", "test"):
        spec = data.get(split)
        digest.update(f"{split}={spec}\n".encode())
        path = Path(str(spec)) if spec else None
        if path is not None and path.is_file():
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, output: OutputConfig, *, every: int, parent_run: str | None = None):
        super().__init__(every=every)
        self.output, self.parent_run = output, parent_run
        self.client = None
        self.run_id: str | None = None

    def open(self, run: Path, resumed: bool, start_step: int) -> None:
        import yaml

        self.client = client_for(self.output)
        exp_id = experiment_id(self.client, self.output)
        reap_dead(self.client, exp_id)
        saved = read_json(run / "tracking.json") if (run / "tracking.json").exists() else {}
        if saved.get("mlflow_run_id"):
            # --resume: the same MLflow run goes on; its parameters were logged when it started.
            self.run_id = saved["mlflow_run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            for key, value in owner_tags().items():
                self.client.set_tag(self.run_id, key, value)
            self.client.set_tag(self.run_id, "runassist.resumed_at_step", str(start_step))
            return
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        tags = {"runassist.version": __version__, "runassist.config_hash": config_hash(config),
                "runassist.data_hash": data_hash(config.get("data") or {}), "runassist.run_dir": str(run.resolve()),
                **owner_tags()}
        commit = git_commit()
        if commit:
            tags["runassist.git_commit"] = commit
        if self.parent_run:
            tags["mlflow.parentRunId"] = self.parent_run
        created = self.client.create_run(exp_id, run_name=run.name, tags=tags)
        self.run_id = created.info.run_id
        write_json(run / "tracking.json", {"mlflow_run_id": self.run_id, "experiment_id": exp_id,
                                           "tracking_uri": tracking_uri(self.output)})
        params, cut = params_within_limits(flatten({k: v for k, v in config.items() if k != "search"}))
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH])
        if cut:
            self.client.log_dict(self.run_id, cut, "params_full.json")

    def _metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    log_step = _metrics
    log_eval = _metrics

    def close(self, run: Path, summary: dict[str, Any], status: str) -> None:
        if self.client is None or self.run_id is None:
            return
        try:
            for name in ("config.yaml", "summary.json", "labels.json"):
                if (run / name).exists():
                    self.client.log_artifact(self.run_id, str(run / name))
            # Once, not per checkpoint; and not for a search trial, whose weights most often get deleted
            # (the study keeps its best few): a study of 12 would upload 12 models.
            if status == "finished" and (run / "model").is_dir() and not self.parent_run:
                self.client.log_artifacts(self.run_id, str(run / "model"), "model")
            if status == "failed" and summary.get("error"):
                self.client.set_tag(self.run_id, "runassist.failure", str(summary["error"])[:PARAM_LIMIT])
        finally:
            self.client.set_terminated(self.run_id, END_STATUS.get(status, "FAILED"))


def open_parent_run(output: OutputConfig, *, name: str, run_id: str | None, tags: dict[str, str]) -> str:
    """The MLflow run a search study's trials hang under: ``run_id`` reopens it, else a new one."""
    client = client_for(output)
    exp_id = experiment_id(client, output)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    return client.create_run(exp_id, run_name=name, tags={"runassist.version": __version__, **tags}).info.run_id


def close_parent_run(output: OutputConfig, run_id: str, *, metrics: dict[str, float], status: str,
                     files: list[Path] = ()) -> None:
    """The study's run: its best value, its files (best.yaml, study.json, study.html), its status."""
    from mlflow.entities import Metric

    client = client_for(output)
    now = int(time.time() * 1000)
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for path in files:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)
