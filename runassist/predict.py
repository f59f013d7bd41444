"""Predictor.from_run(path).predict(inputs) -> JSON-ready predictions; batch prediction on files.

The CLI's `predict`, `evaluate`, the HTTP service and the agent tools all go through this
class, so a model answers the same way everywhere.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch

from runassist import heap, runs
from runassist.atomic import atomic_write, is_special, read_json
from runassist.errors import DataError, RunassistError
from runassist.inference import predict_examples
from runassist.predict_input import DEFAULT_CHUNK_SIZE, input_kind, input_size, read_chunks
from runassist.predict_output import DeviceOutput, ResumableOutput, StdoutOutput, chunk_text, empty_text, output_format
from runassist.predict_progress import Progress
from runassist.tasks import make_task
from runassist.tasks.base import TaskState

BACKENDS = ("torch", "onnx", "openvino")


class Predictor:
    def __init__(self, *, run: Path, task: Any, model: Any, processor: Any, state: TaskState, cfg: Any,
                 precision: str = "fp32", batch_size: int = 64, backend: str = "torch", guard: Any = None,
                 compiled: bool = False):
        self.run, self.task, self.model, self.processor, self.state, self.cfg = run, task, model, processor, state, cfg
        self.batch_size, self.backend, self.precision, self.compiled = batch_size, backend, precision, compiled
        self.guard = guard  # onnx_runtime.Guard: an int8 export's full-precision re-check, else None
        bf16 = precision == "bf16" and backend == "torch"
        self._autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else None

    @classmethod
    def from_run(cls, run: str | Path, *, backend: str = "torch", precision: str = "auto",
                 batch_size: int = 64, threads: int | None = None, compile: bool = False) -> Predictor:
        """Load a trained run. ``precision="auto"`` predicts in the precision the run was trained and
        scored in (bf16 on CPUs that run it fast: ~1.8x faster than fp32 here, with 99.9% identical
        entities), so `evaluate` reproduces the scores in summary.json.

        ``compile`` (torch backend): ``torch.compile(model, dynamic=True)``. On the NER demo in bf16
        it predicted 1.29x the texts/s of eager after ~50 s of compiling the first batches (fp32:
        ~1.0-1.08x), 99.9% identical entities: worth it for inputs of tens of thousands of texts,
        not for a few (bench/README.md, "torch.compile and OpenVINO")."""
        from runassist.tasks.hf import quiet_transformers

        run = runs.require(Path(run), "config.yaml", "model/task.json")
        if backend not in BACKENDS:
            raise RunassistError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if compile and backend != "torch":
            raise RunassistError(f"--compile compiles the torch model; the {backend} backend runs an exported graph")
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
        elif backend == "openvino":  # the fp32 export in OpenVINO: bf16 by itself on CPUs with AMX / avx512_bf16
            from runassist.openvino_runtime import OpenVinoModel

            model = OpenVinoModel.load(run)
        elif saved.get("adapter"):
            from peft import PeftModel

            from runassist.assets import resolve_model

            base = task.build_model(resolve_model(cfg.model.source), state)
            model = PeftModel.from_pretrained(base, str(run / "model")).merge_and_unload()
        else:
            model = task.build_model(str(run / "model"), state)
        if hasattr(model, "eval"):
            model.eval()
        if compile:
            # dynamic: every length-sorted batch has another length; static shapes would recompile for each.
            model = torch.compile(model, dynamic=True)
        return cls(run=run, task=task, model=model, processor=processor, state=state, cfg=cfg,
                   precision=precision, batch_size=batch_size, backend=backend, guard=guard, compiled=compile)

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


def _trained_precision(run: Path) -> str:
    summary = read_json(run / "summary.json") if (run / "summary.json").exists() else {}
    trained = (summary.get("engine") or {}).get("precision")
    if trained in ("fp32", "bf16"):
        return trained
    from runassist import env

    return "bf16" if env.bf16_fast({"cpu": env.cpu_facts(measure=False)}) else "fp32"


# -- files ------------------------------------------------------------------

def predict_file(predictor: Predictor, source: str, output: str | None = None, *, fmt: str = "auto",
                 chunk_size: int = DEFAULT_CHUNK_SIZE, resume: bool = False, workers: int = 1,
                 quiet: bool = True) -> int:
    """Predict every item of a file (or '-' for stdin) and write the results, a chunk at a time.

    Input: a file the task reads (CoNLL, JSONL; labels, where present, are kept as gold), a
    CSV/TSV (the task's input columns, ``data.text_column`` by default; every column is kept and
    prediction columns are added), or plain text, one input a line. Output: JSONL, CSV/TSV, or a
    format of the task's own (``task.output_formats``, e.g. CoNLL for NER).

    Memory is bounded by ``chunk_size`` examples whatever the file's size: each chunk is read,
    predicted (length-sorted inside the chunk) and written in input order before the next is read.
    A file output goes through ``OUTPUT.partial`` and ``OUTPUT.progress`` (``predict_output``), so
    ``resume=True`` continues an interrupted run after its last complete chunk, byte-identical to
    an uninterrupted one; stdout cannot be resumed. ``workers`` > 1 predicts chunks in that many
    processes (``predict_workers``), the same bytes in the same order. Returns the number of items.
    """
    task = predictor.task
    kind = input_kind(source, task)
    fmt = output_format(task, kind, fmt)
    to_stdout = output in (None, "-")
    if resume and to_stdout:
        raise RunassistError("--resume needs an output file (-o): what went to stdout cannot be cut back and continued")
    if source == "-" and resume:
        raise RunassistError("--resume needs an input file: stdin cannot be read again")
    if workers < 1:
        raise RunassistError(f"--workers {workers}: give 1 or more")
    if to_stdout:
        sink: Any = StdoutOutput()
    elif is_special(output):  # /dev/null, a FIFO: written as it is, never renamed over
        if resume:
            raise RunassistError(f"--resume needs an output file: {output} is a device or a pipe")
        sink = DeviceOutput(output)
    else:
        stat = Path(source).stat() if source != "-" else None
        signature = {"input": str(Path(source).resolve()) if stat else "-", "input_size": stat.st_size if stat else None,
                     "input_mtime_ns": stat.st_mtime_ns if stat else None, "run": str(Path(predictor.run).resolve()),
                     "chunk_size": chunk_size, "format": fmt, "backend": predictor.backend,
                     "precision": predictor.precision, "batch_size": predictor.batch_size}
        sink = ResumableOutput(output, signature, resume=resume)
    done = sink.chunks
    progress = Progress(total_bytes=input_size(source), label=f"predict {Path(source).name if source != '-' else 'stdin'}",
                        quiet=quiet, items=sink.items)
    try:
        chunks = read_chunks(task, source, chunk_size=chunk_size, skip=done, kind=kind)
        if workers > 1:
            from runassist.predict_workers import predict_in_processes

            load = functools.partial(Predictor.from_run, predictor.run, backend=predictor.backend,
                                     precision=predictor.precision, batch_size=predictor.batch_size,
                                     compile=predictor.compiled)
            results = predict_in_processes(load, chunks, fmt, workers=workers)
        else:
            results = _predict_here(predictor, chunks, fmt)
        for chunk, text, items in results:
            sink.write(text, items, chunk.read_bytes)
            progress.update(items, chunk.read_bytes)
        sink.finish(empty_text(task, fmt))
    finally:
        sink.close()
    progress.close(chunks=sink.chunks, resumed_from=0 if not done else progress.start_items)
    return sink.items


def _predict_here(predictor: Predictor, chunks: Iterable[Any], fmt: str) -> Iterator[tuple[Any, str, int]]:
    for chunk in chunks:
        items = len(chunk.examples)
        text = chunk_text(predictor.task, fmt, chunk, predictor.predict_examples(chunk.examples))
        chunk.examples, chunk.rows = [], None  # freed before the next chunk is read, not after
        heap.trim()  # what the chunk freed goes back (heap.trim: why after each chunk)
        yield chunk, text, items


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
    if input_kind(source) != "lines":
        raise DataError(source, None, "chained runs read plain text, one document a line")
    results = predict_chain(first, second, _read_lines(source))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        atomic_write(Path(output), text)
    return len(results)


def _read_lines(source: str) -> list[str]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    from runassist.data.io import split_lines

    return [line for line in split_lines(text) if line.strip()]
