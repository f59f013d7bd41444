"""Predictor.from_run(path).predict(inputs) -> JSON-ready predictions; batch prediction on files.

The CLI's `predict`, `evaluate`, the HTTP service and the agent tools all go through this
class, so a model answers the same way everywhere.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from runassist.atomic import atomic_write, read_json
from runassist import runs
from runassist.errors import DataError, RunassistError
from runassist.inference import predict_examples
from runassist.tasks import make_task
from runassist.tasks.base import TaskState

BACKENDS = ("torch", "onnx")


class Predictor:
    def __init__(self, *, run: Path, task: Any, model: Any, processor: Any, state: TaskState, cfg: Any,
                 precision: str = "fp32", batch_size: int = 64, backend: str = "torch", guard: Any = None):
        self.run, self.task, self.model, self.processor, self.state, self.cfg = run, task, model, processor, state, cfg
        self.batch_size, self.backend, self.precision = batch_size, backend, precision
        self.guard = guard  # onnx_runtime.Guard: an int8 export's full-precision re-check, else None
        bf16 = precision == "bf16" and backend == "torch"
        self._autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else None

    @classmethod
    def from_run(cls, run: str | Path, *, backend: str = "torch", precision: str = "auto",
                 batch_size: int = 64, threads: int | None = None) -> "Predictor":
        """Load a trained run. ``precision="auto"`` predicts in the precision the run was trained and
        scored in (bf16 on CPUs that run it fast: ~1.8x faster than fp32 here, with 99.9% identical
        entities), so `evaluate` reproduces the scores in summary.json."""
        from runassist.tasks.hf import quiet_transformers

        run = runs.require(Path(run), "config.yaml", "model/task.json")
        if backend not in BACKENDS:
            raise RunassistError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if precision not in ("auto", "fp32", "bf16"):
            raise RunassistError(f"--precision {precision!r}: choose one of auto, fp32, bf16")
        if precision == "auto":
            precision = _trained_precision(run)
        if threads:
            torch.set_num_threads(threads)
        cfg = runs.load_config(run)
        task = make_task(cfg)
        saved = read_json(run / "model" / "task.json")
        state = TaskState(labels=saved["labels"], extras=saved.get("extras", {}))
        processor = task.load_processor(str(run / "model"))
        quiet_transformers()
        guard = None
        if backend == "onnx":
            from runassist.onnx_runtime import Guard, OnnxModel

            model = OnnxModel.load(run)
            guard = Guard.load(run, model)
        elif saved.get("adapter"):
            from peft import PeftModel

            from runassist.assets import resolve_model

            base = task.build_model(resolve_model(cfg.model.source), state)
            model = PeftModel.from_pretrained(base, str(run / "model")).merge_and_unload()
        else:
            model = task.build_model(str(run / "model"), state)
        if hasattr(model, "eval"):
            model.eval()
        return cls(run=run, task=task, model=model, processor=processor, state=state, cfg=cfg,
                   precision=precision, batch_size=batch_size, backend=backend, guard=guard)

    # -- predicting ---------------------------------------------------------
    def examples(self, inputs: Sequence[Any]) -> list[Any]:
        """Inputs as the task takes them; for a media task (``task.media``), also files as
        ``{"base64": ..., "name": ...}`` objects, decoded here and given to ``task.media_example``.
        A ValueError (MediaTooLarge for an over-size file) names the input."""
        media = getattr(self.task, "media", None)
        out = []
        for i, item in enumerate(inputs):
            try:
                if media and isinstance(item, dict) and "base64" in item:
                    data, name = decode_base64_input(item, default_name=f"inputs[{i}]")
                    out.append(self.task.media_example(data, name))
                else:
                    out.append(self.task.example_from_input(item))
            except ValueError as exc:
                raise type(exc)(f"inputs[{i}]: {exc}") from None
        return out

    def predict_examples(self, examples: Sequence[Any]) -> list[Any]:
        if not examples:
            return []
        return predict_examples(self.task, self.model, self.processor, examples, self.state,
                                batch_size=self.batch_size, autocast=self._autocast, guard=self.guard)

    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Inputs as the task takes them (``task.example_from_input``) in, JSON-ready dicts out."""
        examples = self.examples(inputs)
        return [self.task.to_json(ex, p) for ex, p in zip(examples, self.predict_examples(examples))]

    def info(self) -> dict[str, Any]:
        summary = read_json(self.run / "summary.json") if (self.run / "summary.json").exists() else {}
        return {"run": self.run.name, "task": self.task.name, "title": self.task.title, "labels": self.state.labels,
                "media": getattr(self.task, "media", None),
                "media_suffixes": list(getattr(self.task, "media_suffixes", ()) or ()),
                "labels_summary": self.task.labels_summary(self.state.labels),
                "base_model": self.cfg.model.source, "backend": self.backend,
                "metrics": {"best": summary.get("best"), "dev": summary.get("dev"), "test": summary.get("test")}}


def decode_base64_input(item: dict[str, Any], *, default_name: str = "upload") -> tuple[bytes, str]:
    """``{"base64": "<data>", "name": "a.png"}`` (a ``data:image/png;base64,`` prefix allowed) -> (bytes, name)."""
    import base64
    import binascii

    unknown = set(item) - {"base64", "name"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; a file input has keys: base64, name")
    data, name = item.get("base64"), item.get("name", default_name)
    if not isinstance(data, str) or not isinstance(name, str):
        raise ValueError('a file input is {"base64": "<the file in base64>", "name": "optional.png"} (strings)')
    if data.startswith("data:"):
        header, comma, data = data.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ValueError("a data: URL must be base64-encoded (data:<type>;base64,<data>)")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: 'base64' is not valid base64") from None
    if not raw:
        raise ValueError(f"{name}: the file is empty")
    return raw, name


def media_files(root: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files under ``root`` (recursive) with one of ``suffixes``, sorted; hidden ones skipped."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def is_media_input(task: Any, source: str) -> bool:
    """A media task's ``predict`` input that is files rather than its own data format: a media file, a
    folder of them, or a plain list of paths (stdin, or a file that is not a manifest the task reads)."""
    if not getattr(task, "media", None):
        return False
    if source == "-":
        return True
    path = Path(source)
    return path.is_dir() or path.suffix.lower() in task.media_suffixes or path.suffix.lower() in (".txt", ".lst", "")


def read_media(task: Any, source: str) -> list[Any]:
    """The examples of a media file, a folder of them (recursive, sorted, by ``task.media_suffixes``), or
    a list of paths, one a line (relative to the list file; to the working folder on stdin). Every file's
    bytes go through ``task.media_example``. An unreadable file stops prediction with its name: a folder's
    predictions with files silently missing would read as complete (`check-data` lists every bad file)."""
    if source == "-":
        files = [Path(line.strip()) for line in _read_lines("-")]
    else:
        path = Path(source)
        if path.is_dir():
            files = media_files(path, task.media_suffixes)
            if not files:
                raise DataError(path, None, f"no {task.media} files ({', '.join(task.media_suffixes)}) in this folder")
        elif path.suffix.lower() in task.media_suffixes:
            files = [path]
        else:
            if not path.is_file():
                raise DataError(source, None, "file not found")
            files = [path.parent / line.strip() for line in _read_lines(source)]
    examples = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DataError(file, None, f"cannot read ({exc.strerror})") from None
        try:
            examples.append(task.media_example(data, str(file)))
        except ValueError as exc:
            message = str(exc)
            raise DataError(file, None, message.removeprefix(f"{file}: ")) from None
    return examples


def _trained_precision(run: Path) -> str:
    summary = read_json(run / "summary.json") if (run / "summary.json").exists() else {}
    trained = (summary.get("engine") or {}).get("precision")
    if trained in ("fp32", "bf16"):
        return trained
    from runassist import env

    return "bf16" if env.bf16_fast({"cpu": env.cpu_facts(measure=False)}) else "fp32"


# -- files ------------------------------------------------------------------

def predict_file(predictor: Predictor, source: str, output: str | None = None, *, fmt: str = "auto") -> int:
    """Predict every item of a file (or '-' for stdin) and write the results.

    Input: a file the task reads (CoNLL, JSONL; labels, where present, are kept as gold), a
    CSV/TSV (the task's input columns, ``data.text_column`` by default; every column is kept and
    prediction columns are added), or plain text, one input a line. Output: JSONL, CSV/TSV, or a
    format of the task's own (``task.output_formats``, e.g. CoNLL for NER).
    Returns the number of items predicted.
    """
    task = predictor.task
    media = is_media_input(task, source)
    kind = "media" if media else _input_kind(source)
    formats = task.output_formats
    if fmt == "auto":
        fmt = "conll" if kind == "conll" and "conll" in formats else "csv" if kind in ("csv", "tsv") else "jsonl"
    if fmt not in formats:
        raise RunassistError(f"--format {fmt!r}: a {task.name} run writes {', '.join(('auto', *formats))}")
    rows = None
    if media:
        examples = read_media(task, source)
    elif kind in ("csv", "tsv") and not getattr(task, "media", None):
        rows, header = _read_table(source, kind)
        for name in task.input_columns():
            if name not in header:
                raise DataError(source, 1, f"no '{name}' column (data.text_column / data.text_pair_column of the "
                                           f"run's config); columns: {', '.join(header)}")
        examples = [task.example_from_row(r) for r in rows]
    elif kind in ("conll", "jsonl") or getattr(task, "media", None):  # a media task's manifest or IDX file
        examples = task.read(source, require_labels=False)
    else:
        examples = predictor.examples(_read_lines(source))
    predictions = predictor.predict_examples(examples)
    if fmt == "jsonl":
        text = "".join(json.dumps(task.to_json(ex, p), ensure_ascii=False) + "\n" for ex, p in zip(examples, predictions))
    elif fmt == "csv":
        results = [task.to_json(ex, p) for ex, p in zip(examples, predictions)]
        if rows is None and getattr(task, "media", None):  # the file name first, then the prediction
            rows = [{"file": r.pop("file", getattr(e, "name", ""))} for r, e in zip(results, examples)]
        text = _table_text(rows if rows is not None else [{"text": getattr(e, "text", "")} for e in examples],
                           results, delimiter="\t" if kind == "tsv" else ",")
    else:
        text = task.format_output(fmt, examples, predictions)
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        atomic_write(Path(output), text)
    return len(predictions)


def predict_chain(first: Predictor, second: Predictor, items: Sequence[Any]) -> list[dict[str, Any]]:
    """``second`` run on what ``first`` found in each input (``runassist predict NER_RUN,RE_RUN``: the
    relations between the entities a NER run found). The second task makes its examples from the
    first's JSON answer (``task.chain_examples``) and words the result (``task.chain_json``)."""
    rows = first.predict(items)
    try:
        groups = [second.task.chain_examples(item, row) for item, row in zip(items, rows)]
    except ValueError as exc:
        raise RunassistError(f"{first.run.name},{second.run.name}: {exc}") from None
    predictions = second.predict_examples([ex for group in groups for ex in group])
    out, at = [], 0
    for item, row, group in zip(items, rows, groups):
        out.append(second.task.chain_json(item, row, group, predictions[at:at + len(group)]))
        at += len(group)
    return out


def predict_chain_file(first: Predictor, second: Predictor, source: str, output: str | None = None) -> int:
    """Text, one document a line (or '-' for stdin), through two chained runs, as JSON lines."""
    if _input_kind(source) != "lines":
        raise DataError(source, None, "chained runs read plain text, one document a line")
    results = predict_chain(first, second, _read_lines(source))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        atomic_write(Path(output), text)
    return len(results)


def _input_kind(source: str) -> str:
    if source == "-":
        return "lines"
    path = Path(source)
    if not path.is_file():
        raise DataError(source, None, "file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix in (".conll", ".bio", ".iob", ".iob2", ".bioes"):
        return "conll"
    return "conll" if _looks_like_conll(path) else "lines"


def _looks_like_conll(path: Path) -> bool:
    """A .txt file is CoNLL when its first non-blank lines are `token ... TAG` with a BIO-style tag."""
    import re

    tag = re.compile(r"^(O|[BIESUL]-\S+)$")
    seen = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                continue
            if len(parts) < 2 or not tag.match(parts[-1]):
                return False
            seen += 1
            if seen >= 20:
                break
    return seen > 0


def _read_lines(source: str) -> list[str]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    from runassist.data.io import split_lines

    return [line for line in split_lines(text) if line.strip()]


def _read_table(source: str, kind: str) -> tuple[list[dict[str, str]], list[str]]:
    with open(source, encoding="utf-8-sig", newline="") as handle:  # -sig: Excel's "CSV UTF-8" starts with a BOM
        reader = csv.DictReader(handle, delimiter="\t" if kind == "tsv" else ",")
        rows = list(reader)
        return rows, list(reader.fieldnames or [])


def _table_text(rows: Iterable[dict[str, Any]], results: Sequence[dict[str, Any]], *, delimiter: str) -> str:
    """The rows with the prediction's fields added as ``pred_*`` columns (lists and objects as JSON)."""
    merged = []
    for row, result in zip(rows, results):
        extra = {f"pred_{k}": (v if isinstance(v, (str, int, float)) else json.dumps(v, ensure_ascii=False))
                 for k, v in result.items() if k not in ("tokens",)}
        merged.append({**row, **extra})
    buffer = io.StringIO()
    if merged:
        writer = csv.DictWriter(buffer, fieldnames=list(merged[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(merged)
    return buffer.getvalue()
