"""Batch prediction's input side: what kind of file a source is, and the file read as chunks.

``read_chunks(task, source, chunk_size=...)`` is the one seam every input kind goes through: it
yields ``Chunk`` s of at most ``chunk_size`` examples (and, for CSV/TSV, the original rows the
output keeps), in input order, never holding more than one chunk. A new input kind (media files,
a folder of them) is one more reader here.

The raw readers split the file into records (a line, a CSV row, a CoNLL sentence, a JSON line)
and only the chunks that are predicted become examples: ``skip`` (resuming) passes over the
first chunks at the speed of reading bytes.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Iterator

from runassist.data.io import media_files
from runassist.errors import DataError

CONLL_SUFFIXES = (".conll", ".bio", ".iob", ".iob2", ".bioes")
WHOLE_FILE_SUFFIXES = (".json",)  # one JSON document (SQuAD, TACRED): read whole, one chunk
DEFAULT_CHUNK_SIZE = 1000  # examples: a few MB of features and outputs, and ~1 s of work on a CPU per chunk


@dataclass
class Chunk:
    """Examples ``index * chunk_size ...`` of the input, and what the output needs beside them."""

    index: int
    examples: list[Any]
    rows: list[dict[str, Any]] | None = None  # CSV/TSV rows as read (every column is kept in the output)
    delimiter: str = ","  # of the CSV/TSV input (the output table keeps it)
    read_bytes: int = 0  # input bytes consumed once this chunk was read (progress; approximate for CSV)


def input_kind(source: str, task: Any = None) -> str:
    """``lines`` (plain text, one input a line), ``jsonl``, ``json`` (one document), ``csv``, ``tsv``
    or ``conll``; '-' (stdin) is lines. For a task that takes files (``task.media``): ``media`` (a
    media file, a folder of them, or a list of their paths), else ``json``: its own manifest or IDX
    file, read whole by the task (paths in it are relative to it; IDX is binary), a list of files."""
    if task is not None and getattr(task, "media", None):
        return "media" if is_media_input(task, source) else "json"
    if source == "-":
        return "lines"
    path = Path(source)
    if not path.is_file():
        raise DataError(source, None, "file not found")
    suffix = path.suffix.lower()
    if suffix in WHOLE_FILE_SUFFIXES:
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix in CONLL_SUFFIXES:
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


def is_media_input(task: Any, source: str) -> bool:
    """A media task's ``predict`` input that is files rather than its own data format: a media file, a
    folder of them, or a plain list of paths (stdin, or a file that is not a manifest the task reads)."""
    if not getattr(task, "media", None):
        return False
    if source == "-":
        return True
    path = Path(source)
    return path.is_dir() or path.suffix.lower() in task.media_suffixes or path.suffix.lower() in (".txt", ".lst", "")


def media_paths(task: Any, source: str) -> list[Path]:
    """The files of a media input: a media file, a folder of them (recursive, sorted, by
    ``task.media_suffixes``), or a list of paths, one a line (relative to the list file; to the
    working folder on stdin). Paths only: the files are read a chunk at a time."""
    if source == "-":
        return [Path(line.strip()) for line in sys.stdin.read().splitlines() if line.strip()]
    path = Path(source)
    if path.is_dir():
        files = media_files(path, task.media_suffixes)
        if not files:
            raise DataError(path, None, f"no {task.media} files ({', '.join(task.media_suffixes)}) in this folder")
        return files
    if path.suffix.lower() in task.media_suffixes:
        return [path]
    if not path.is_file():
        raise DataError(source, None, "file not found")
    text = path.read_text(encoding="utf-8-sig")
    return [path.parent / line.strip() for line in text.splitlines() if line.strip()]


def media_example(task: Any, file: Path) -> Any:
    """One file's bytes through ``task.media_example``. An unreadable file stops prediction with its
    name: a folder's predictions with files silently missing would read as complete (`check-data`
    lists every bad file)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DataError(file, None, f"cannot read ({exc.strerror})") from None
    try:
        return task.media_example(data, str(file))
    except ValueError as exc:
        raise DataError(file, None, str(exc).removeprefix(f"{file}: ")) from None


def _media_chunks(task: Any, source: str, chunk_size: int, skip: int) -> Iterator[Chunk]:
    files = media_paths(task, source)
    for index, start in enumerate(range(0, len(files), chunk_size)):
        if index >= skip:
            part = files[start:start + chunk_size]
            yield Chunk(index, [media_example(task, f) for f in part], read_bytes=start + len(part))


def input_size(source: str) -> int | None:
    """Bytes to read (None for stdin): what progress measures the remaining time by."""
    return None if source == "-" else os.path.getsize(source)


def read_chunks(task: Any, source: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, skip: int = 0,
                kind: str | None = None, stats: dict[str, int] | None = None) -> Iterator[Chunk]:
    """The input as chunks of at most ``chunk_size`` examples, in order; the first ``skip`` chunks are
    read past without becoming examples. ``stats["max_held"]`` (when given) records the most records
    held at once: the test that memory stays bounded reads it."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    kind = kind or input_kind(source, task)
    if kind == "media":
        yield from _media_chunks(task, source, chunk_size, skip)
        return
    if kind == "json":  # one JSON document cannot be cut at line ends: read whole
        if skip == 0:
            yield Chunk(0, task.read(source, require_labels=False), read_bytes=input_size(source) or 0)
        return
    if kind in ("csv", "tsv"):
        yield from _table_chunks(task, source, kind, chunk_size, skip, stats)
        return
    lines = _numbered_lines(source)
    if kind == "lines":
        records = ((pos, [(number, text)]) for number, text, pos in lines if text.strip())
    else:
        records = _blocks(lines, per_line=kind == "jsonl")
    index, held, end = 0, [], 0
    with tempfile.TemporaryDirectory(prefix="runassist-chunk-") as tmp:
        for end, record in records:
            held.append(record)
            if stats is not None:
                stats["max_held"] = max(stats.get("max_held", 0), len(held))
            if len(held) == chunk_size:
                if index >= skip:
                    yield Chunk(index, _examples(task, source, kind, held, Path(tmp)), read_bytes=end)
                index, held = index + 1, []
        if held and index >= skip:
            yield Chunk(index, _examples(task, source, kind, held, Path(tmp)), read_bytes=end)
        elif not held and index == 0 and kind != "lines":
            raise DataError(source, None, "no examples")


def _examples(task: Any, source: str, kind: str, records: list[list[tuple[int, str]]], tmp: Path) -> list[Any]:
    if kind == "lines":
        out = []
        for [(number, text)] in records:
            try:
                out.append(task.example_from_input(text))
            except ValueError as exc:
                raise DataError(source, number, str(exc)) from None
        return out
    return _read_piece(task, source, [line for record in records for line in record], tmp)


def _read_piece(task: Any, source: str, lines: list[tuple[int, str]], tmp: Path) -> list[Any]:
    """Records of a CoNLL or JSONL file read by the task's own reader: the lines go to a file of the
    same name in a temporary folder (the readers take paths, and the file name decides the format),
    then errors and each example's ``source`` are given back the real file and line. Blank lines
    between records stay, so line N of the piece is line ``lines[0] + N - 1`` of the source."""
    first = lines[0][0]
    piece = tmp / Path(source).name
    with open(piece, "w", encoding="utf-8", newline="\n") as handle:
        at = first
        for number, text in lines:
            handle.write("\n" * (number - at) + text)  # blank lines kept: line numbers map by one offset
            at = number
        handle.write("\n")
    try:
        examples = task.read(str(piece), require_labels=False)
    except DataError as exc:
        if exc.path != str(piece):
            raise
        line = None if exc.line is None else exc.line + first - 1
        raise DataError(source, line, exc.message) from None
    finally:
        piece.unlink(missing_ok=True)
    prefix = f"{piece}:"
    out = []
    for ex in examples:
        where = getattr(ex, "source", None)
        if isinstance(where, str) and where.startswith(prefix) and where[len(prefix):].isdigit():
            ex = replace(ex, source=f"{source}:{int(where[len(prefix):]) + first - 1}")
        out.append(ex)
    return out


def _numbered_lines(source: str) -> Iterator[tuple[int, str, int]]:
    """(line number, text, bytes read so far) for each line, split on \\n, \\r\\n and \\r only (as
    ``data.io.split_lines``: U+2028 and form feeds occur inside real records). Read as bytes so
    that progress knows the position, and bad UTF-8 names its line."""
    handle: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")
    try:
        number, pos = 0, 0
        for raw in handle:
            pos += len(raw)
            if number == 0 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if body.endswith(b"\r"):
                body = body[:-1]
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(source, number + 1 + body[:exc.start].count(b"\r"),
                                f"not valid UTF-8 (byte {body[exc.start]:#04x}); save the file as UTF-8") from None
            for part in text.split("\r"):  # a lone \r ends a line too
                number += 1
                yield number, part, pos
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _blocks(lines: Iterator[tuple[int, str, int]], *, per_line: bool) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """Records of a JSONL file (one a non-blank line) or a CoNLL file (one a sentence: lines up to a
    blank line or -DOCSTART-), with the bytes read once each is complete."""
    block: list[tuple[int, str]] = []
    pos = 0
    for number, text, pos in lines:
        if per_line:
            if text.strip():
                yield pos, [(number, text)]
            continue
        cols = text.split()
        if not cols or cols[0] == "-DOCSTART-":
            if block:
                yield pos, block
                block = []
            continue
        block.append((number, text))
    if block:
        yield pos, block


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read through it (CSV progress: the csv module needs text)."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[:len(data)] = data
        self.count += len(data)
        return len(data)


def _table_chunks(task: Any, source: str, kind: str, chunk_size: int, skip: int,
                  stats: dict[str, int] | None) -> Iterator[Chunk]:
    delimiter = "\t" if kind == "tsv" else ","
    with open(source, "rb") as raw:
        counting = _Counting(raw)
        # -sig: Excel's "CSV UTF-8" starts with a BOM; newline="": quoted cells may hold line breaks
        text = io.TextIOWrapper(io.BufferedReader(counting), encoding="utf-8-sig", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        try:
            header = list(reader.fieldnames or [])
        except UnicodeDecodeError:
            raise DataError(source, 1, "not valid UTF-8; save the file as UTF-8") from None
        for name in task.input_columns():
            if name not in header:
                raise DataError(source, 1, f"no '{name}' column (data.text_column / data.text_pair_column of the "
                                           f"run's config); columns: {', '.join(header)}")
        index, rows = 0, []
        while True:
            try:
                row = next(reader, None)
            except UnicodeDecodeError:
                raise DataError(source, reader.line_num + 1, "not valid UTF-8; save the file as UTF-8") from None
            except csv.Error as exc:
                raise DataError(source, reader.line_num, f"not a valid {kind.upper()} row ({exc})") from None
            if row is not None:
                rows.append((reader.line_num, row))
                if stats is not None:
                    stats["max_held"] = max(stats.get("max_held", 0), len(rows))
            if rows and (len(rows) == chunk_size or row is None):
                if index >= skip:
                    yield Chunk(index, _row_examples(task, source, rows), [r for _, r in rows], delimiter,
                                counting.count)
                index, rows = index + 1, []
            if row is None:
                return


def _row_examples(task: Any, source: str, rows: list[tuple[int, dict[str, str]]]) -> list[Any]:
    out = []
    for number, row in rows:
        try:
            out.append(task.example_from_row(row))
        except ValueError as exc:
            raise DataError(source, number, str(exc)) from None
    return out
