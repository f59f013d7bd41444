"""The run folder: what a run leaves behind, and listing runs.

Layout of ``<output.dir>/<output.name>/``::

    config.yaml        the fully resolved config the run used
    env.json           the machine it ran on (runassist.env.snapshot())
    labels.json        the label list (and task extras, e.g. multi-label thresholds)
    metrics.jsonl      one line per logging step and per evaluation
    summary.json       headline results; written at the end (status: running -> finished/stopped/failed)
    model/             the kept (best) model: safetensors + tokenizer + config + task.json
    checkpoints/last/  everything needed to resume exactly
    eval/              <split>.json and predictions per evaluated split

Every file is written to a temporary name and renamed, so a crash never leaves a half file.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from runassist.atomic import atomic_write, read_json, write_json
from runassist.config import Config, OutputConfig, to_yaml
from runassist.errors import RunassistError


def split_name(spec: str) -> str:
    """The name a split's files get in eval/: `wnut16:test` -> `test`; `data/my-dev.conll` -> `my-dev`."""
    return spec.rsplit(":", 1)[1] if ":" in spec and not Path(spec).exists() else Path(spec).stem


def create(cfg: Config, facts: dict[str, Any] | None = None) -> Path:
    """Make a new run folder and write the resolved config and environment (``facts`` as collected by
    the caller, when given: what it chose its threads from) into it."""
    from runassist import env

    run = new_path(cfg.output, cfg.task.name)
    run.mkdir(parents=True)
    atomic_write(run / "config.yaml", to_yaml(cfg))
    write_json(run / "env.json", env.snapshot(facts=facts))
    return run


def new_path(output: OutputConfig, task: str) -> Path:
    base = Path(output.dir)
    if output.name:
        run = base / output.name
        if run.exists() and any(run.iterdir()):
            raise RunassistError(f"run folder {run} already exists; choose another output.name, "
                                 f"or resume it with `runassist train --resume {run}`")
        return run
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = base / f"{stamp}-{task}"
    n = 1
    while run.exists():
        n += 1
        run = base / f"{stamp}-{task}-{n}"
    return run


def owner() -> dict[str, Any]:
    """The process that runs a training: recorded in summary.json while it runs, so `runs` can tell a
    run in progress from one whose process was killed."""
    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(), "started": psutil.Process().create_time()}


def live_status(summary: dict[str, Any]) -> str:
    """``summary["status"]``, except that a run whose training process is gone is ``interrupted``
    (a kill -9 or a lost machine leaves "running" on disk). A run owned by another host, or one
    written before owners were recorded, cannot be checked and stays "running"."""
    import psutil

    status = summary.get("status", "no summary")
    own = summary.get("owner")
    if status != "running" or not isinstance(own, dict) or own.get("host") != socket.gethostname():
        return status
    try:
        alive = abs(psutil.Process(int(own["pid"])).create_time() - float(own["started"])) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):
        alive = False
    return "running" if alive else "interrupted"


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    # Appending one short line is atomic enough: a torn last line is skipped by read_metrics.
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    from runassist.data.io import split_lines

    for line in split_lines(path.read_text(encoding="utf-8")):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def load_config(run: Path) -> Config:
    from runassist.tasks import load_config as load

    return load(Path(run) / "config.yaml")


def require(run: Path, *names: str) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise RunassistError(f"{run}: no such run folder")
    missing = [n for n in names if not (run / n).exists()]
    if missing:
        raise RunassistError(f"{run}: incomplete run folder, missing {', '.join(missing)} "
                             "(did training finish? `runassist runs` shows each run's status)")
    return run


def iter_runs(base: Path) -> Iterator[Path]:
    base = Path(base)
    if not base.is_dir():
        return
    for child in sorted(base.iterdir()):
        if (child / "config.yaml").is_file():
            yield child


def describe(run: Path) -> dict[str, Any]:
    """One row of `runassist runs`."""
    run = Path(run)
    summary = read_json(run / "summary.json") if (run / "summary.json").exists() else {}
    try:
        cfg = load_config(run)
        task, model = cfg.task.name, cfg.model.source
    except RunassistError:
        task, model = "?", "?"
    best = summary.get("best") or {}
    test = summary.get("test") or {}
    metric = best.get("metric")
    return {
        "name": run.name,
        "path": str(run),
        "task": summary.get("task", task),
        "model": summary.get("model", model),
        "status": live_status(summary),
        "metric": metric,
        "dev": best.get("value"),
        "test": test.get(metric) if metric else None,
        "date": datetime.fromtimestamp((run / "config.yaml").stat().st_mtime).strftime("%Y-%m-%d %H:%M"),
    }


def list_runs(base: Path, *, task: str | None = None, sort: str = "date") -> list[dict[str, Any]]:
    rows = [describe(r) for r in iter_runs(base)]
    if task:
        rows = [r for r in rows if r["task"] == task]
    if sort in ("dev", "test"):
        rows.sort(key=lambda r: -1.0 if r[sort] is None else r[sort], reverse=True)
    elif sort in ("name", "date", "task", "status"):
        rows.sort(key=lambda r: str(r[sort]))
    else:
        raise RunassistError(f"--sort {sort!r}: choose one of date, name, task, status, dev, test")
    return rows
