"""Batch prediction's output side: a chunk's results as text, and the output file that grows a
chunk at a time and can be resumed.

``chunk_text`` is a function of one chunk alone (the CSV header and the separator between two
chunks depend only on whether it is the first), so the chunks can be formatted in any process, in
any order, and their texts joined in input order give the same bytes as one pass over the file.

``ResumableOutput`` writes to ``OUT.partial`` and records after each chunk, in ``OUT.progress``,
how many chunks, items and bytes are complete; the last chunk renames ``OUT.partial`` to ``OUT``
and drops the side file. ``resume=True`` cuts ``OUT.partial`` back to the last complete chunk (a
kill can land mid-chunk) and goes on from there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from runassist.atomic import atomic_write, read_json
from runassist.errors import RunassistError

PROGRESS_VERSION = 1


def output_format(task: Any, kind: str, fmt: str) -> str:
    """``auto`` -> CoNLL for a CoNLL input (where the task writes it), CSV for CSV/TSV, else JSONL."""
    formats = task.output_formats
    if fmt == "auto":
        fmt = "conll" if kind == "conll" and "conll" in formats else "csv" if kind in ("csv", "tsv") else "jsonl"
    if fmt not in formats:
        raise RunassistError(f"--format {fmt!r}: a {task.name} run writes {', '.join(('auto', *formats))}")
    return fmt


def chunk_text(task: Any, fmt: str, chunk: Any, predictions: Sequence[Any]) -> str:
    """One chunk's results in ``fmt``: JSON lines, the input table with ``pred_*`` columns (the header
    with the first chunk only), or the task's own format (``task.output_joiner`` between chunks)."""
    examples = chunk.examples
    if fmt == "jsonl":
        return "".join(json.dumps(task.to_json(ex, p), ensure_ascii=False) + "\n" for ex, p in zip(examples, predictions))
    if fmt == "csv":
        results = [task.to_json(ex, p) for ex, p in zip(examples, predictions)]
        if chunk.rows is not None:
            rows = chunk.rows
        elif getattr(task, "media", None):  # the file name first, then the prediction
            rows = [{"file": r.pop("file", getattr(e, "name", ""))} for r, e in zip(results, examples)]
        else:
            rows = [{"text": getattr(e, "text", "")} for e in examples]
        return table_text(rows, results, delimiter=chunk.delimiter, header=chunk.index == 0)
    text = task.format_output(fmt, examples, predictions)
    return (task.output_joiner(fmt) if chunk.index > 0 else "") + text


def empty_text(task: Any, fmt: str) -> str:
    """The output of an input with no items (what the in-memory path wrote for one)."""
    return "" if fmt in ("jsonl", "csv") else task.format_output(fmt, [], [])


def table_text(rows: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]], *, delimiter: str,
               header: bool = True) -> str:
    """The rows with the prediction's fields added as ``pred_*`` columns (lists and objects as JSON)."""
    merged = []
    for row, result in zip(rows, results):
        extra = {f"pred_{k}": (v if isinstance(v, (str, int, float)) else json.dumps(v, ensure_ascii=False))
                 for k, v in result.items() if k not in ("tokens",)}
        merged.append({**row, **extra})
    buffer = io.StringIO()
    if merged:
        writer = csv.DictWriter(buffer, fieldnames=list(merged[0]), delimiter=delimiter)
        if header:
            writer.writeheader()
        writer.writerows(merged)
    return buffer.getvalue()


class StdoutOutput:
    """Results to stdout as each chunk finishes. Nothing to resume: a pipe cannot be cut back."""

    chunks = items = 0

    def write(self, text: str, items: int, read_bytes: int = 0) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.chunks, self.items = self.chunks + 1, self.items + items

    def finish(self, empty: str) -> None:
        if self.chunks == 0:
            sys.stdout.write(empty)
            sys.stdout.flush()

    def close(self) -> None:
        pass


class DeviceOutput(StdoutOutput):
    """Results straight into a device or a pipe (``-o /dev/null``, a FIFO): there is no file to resume
    and nothing may be renamed over it (that would replace the device with a file)."""

    def __init__(self, path: str | Path):
        self.handle = open(path, "w", encoding="utf-8")

    def write(self, text: str, items: int, read_bytes: int = 0) -> None:
        self.handle.write(text)
        self.handle.flush()
        self.chunks, self.items = self.chunks + 1, self.items + items

    def finish(self, empty: str) -> None:
        if self.chunks == 0:
            self.handle.write(empty)

    def close(self) -> None:
        self.handle.close()


class ResumableOutput:
    """``path`` written a chunk at a time through ``path.partial`` and ``path.progress`` (see module doc).

    ``signature``: what must be the same for a resumed run to continue this one (the input file, its
    size and time, the run, chunk size, format, backend, batch size); a different one refuses to resume.
    """

    def __init__(self, path: str | Path, signature: dict[str, Any], *, resume: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.progress = self.path.with_name(self.path.name + ".progress")
        self.signature = signature
        self.chunks = self.items = 0
        self.resumed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        done = self._resume_point() if resume else None
        if done is not None:
            self.chunks, self.items, size = done["chunks"], done["items"], done["bytes"]
            self.handle = open(self.partial, "r+b")
            self.handle.truncate(size)  # a kill mid-chunk left part of the next one
            self.handle.seek(size)
            self.resumed = True
        else:
            self.progress.unlink(missing_ok=True)
            self.handle = open(self.partial, "wb")
            self._record(0)

    def _resume_point(self) -> dict[str, Any] | None:
        if not self.progress.is_file() or not self.partial.is_file():
            return None
        done = read_json(self.progress)
        if done.get("version") != PROGRESS_VERSION or done.get("signature") != self.signature:
            differ = sorted(k for k in {*self.signature, *(done.get("signature") or {})}
                            if self.signature.get(k) != (done.get("signature") or {}).get(k))
            raise RunassistError(f"{self.progress}: was written by a run with a different {', '.join(differ)}; "
                                 f"--resume continues only the same prediction (remove {self.partial.name} and "
                                 f"{self.progress.name} to start over)")
        if self.partial.stat().st_size < done["bytes"]:
            raise RunassistError(f"{self.partial}: shorter than {self.progress.name} says ({done['bytes']} bytes); "
                                 "remove both to start over")
        return done

    def write(self, text: str, items: int, read_bytes: int = 0) -> None:
        self.handle.write(text.encode("utf-8"))
        self.handle.flush()
        os.fsync(self.handle.fileno())  # the bytes are on disk before the side file says they are
        self.chunks, self.items = self.chunks + 1, self.items + items
        self._record(read_bytes)

    def _record(self, read_bytes: int) -> None:
        atomic_write(self.progress, json.dumps({
            "version": PROGRESS_VERSION, "chunks": self.chunks, "items": self.items,
            "bytes": self.handle.tell(), "input_bytes": read_bytes, "signature": self.signature}, indent=1) + "\n")

    def finish(self, empty: str) -> None:
        if self.chunks == 0:
            self.handle.write(empty.encode("utf-8"))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.chmod(self.partial, 0o666 & ~_umask())
        os.replace(self.partial, self.path)
        self.progress.unlink(missing_ok=True)

    def close(self) -> None:
        """After ``finish``, or on an error: a run that wrote no chunk leaves nothing to resume behind."""
        if not self.handle.closed:
            self.handle.close()
            if self.chunks == 0:
                self.partial.unlink(missing_ok=True)
                self.progress.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
