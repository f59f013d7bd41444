"""``predict --engine ray``: the same Predictor as a Ray Data job, for inputs bigger than one machine.

Ray Data reads JSONL or Parquet (a local path, a folder, or any fsspec URL: s3://, gs://, ...), hands
batches to ``map_batches`` over a pool of actors (``_RayPredictor``: the model is loaded once per
actor, one actor per worker), and writes JSONL or Parquet where ``-o`` points (a folder of part
files, as Ray writes them). ``ray.init()`` joins the cluster that ``RAY_ADDRESS`` names, else starts
a local Ray on this machine. Ray is an optional extra (``pip install 'runassist[ray]'``); nothing else
imports this module.

Each output row is the input row's columns plus ``prediction``: the task's JSON answer as a JSON
string (one column type for every batch, so Parquet part files always share one schema).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runassist.errors import RunassistError
from runassist.predict import Predictor


class _RayPredictor:
    """One Ray actor: a Predictor loaded once, called on batches (pandas DataFrames)."""

    def __init__(self, run: str, backend: str, precision: str, batch_size: int, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.predictor = Predictor.from_run(run, backend=backend, precision=precision, batch_size=batch_size,
                                            threads=threads)

    def __call__(self, batch: Any) -> Any:
        task = self.predictor.task
        rows = batch.to_dict("records")
        examples = []
        for row in rows:
            try:
                examples.append(task.example_from_row({k: ("" if v is None else str(v)) for k, v in row.items()}))
            except ValueError as exc:
                raise RunassistError(f"row {row!r}: {exc}") from None
        predictions = self.predictor.predict_examples(examples)
        batch = batch.copy()
        batch["prediction"] = [json.dumps(task.to_json(ex, p), ensure_ascii=False)
                               for ex, p in zip(examples, predictions)]
        return batch


def _is_parquet(path: str) -> bool:
    return path.rstrip("/").lower().endswith(".parquet")


def predict_ray(run: str | Path, source: str, output: str, *, workers: int = 2, batch_size: int = 64,
                backend: str = "torch", precision: str = "auto", threads: int | None = None,
                cpus: int | None = None) -> int:
    """Predict a JSONL or Parquet input with ``workers`` Ray actors; returns the number of rows written.
    ``threads``: torch threads per actor (default: the free cores shared out); ``cpus``: the logical CPUs a
    local Ray gets (default: this machine's, and at least one more than the actors hold)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RunassistError("--engine ray needs Ray Data: pip install 'runassist[ray]' "
                             "(or 'ray[data]' at the version pyproject.toml pins)") from None
    from runassist.predict_workers import worker_threads

    local = Path(source)
    if "://" not in source and local.is_file() and local.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        raise RunassistError(f"{source}: --engine ray reads JSONL (.jsonl) or Parquet (.parquet); "
                             "use the local engine for text, CSV/TSV and CoNLL")
    if "://" not in source and not local.exists():
        raise RunassistError(f"{source}: file not found")
    run = Path(run)
    predictor_check = Predictor.from_run(run, backend=backend, precision=precision, batch_size=batch_size)
    columns = predictor_check.task.input_columns()
    precision = predictor_check.precision
    del predictor_check  # the actors load their own; this one only checked the run and resolved precision
    threads = threads or worker_threads(workers)
    if not ray.is_initialized():
        # Ray's CPUs are logical: the actors hold workers x threads of them for their whole life, and
        # reading and writing need one more, or the job waits forever on a small machine.
        cpus = cpus or max(os.cpu_count() or 1, workers * threads + 1)
        ray.init(num_cpus=cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come out in input order, as the local engine writes them
    ds = ray.data.read_parquet(source) if _is_parquet(source) else ray.data.read_json(source, lines=True)
    rows = ds.count()  # Parquet: from its metadata; JSONL: a read without the model
    missing = [c for c in columns if c not in ds.columns()]
    if missing:
        raise RunassistError(f"{source}: no '{missing[0]}' column (data.text_column of the run's config); "
                             f"columns: {', '.join(ds.columns())}")
    ds = ds.map_batches(_RayPredictor, fn_constructor_kwargs={
        "run": str(run.resolve()), "backend": backend, "precision": precision, "batch_size": batch_size,
        "threads": threads}, batch_size=batch_size * 4, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads)
    if _is_parquet(output):
        ds.write_parquet(output)
    else:
        ds.write_json(output)
    return int(rows)
