"""Text-classification readers: CSV, TSV, JSONL (or a JSON array), plain lines, label folders.

Column names come from the config (``data.text_column`` and friends); the first CSV/TSV
row is the header. TSV is read without quote processing (``csv.QUOTE_NONE``), the
convention of GLUE-style files, where a review may well start with a quote mark.

Labels may be a string, a number, or (JSONL) a list; for multi-label CSV/TSV they are
one string joined by ``data.label_separator``. Multi-label texts may have no label at
all; single-label texts must have exactly one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runassist.data.io import iter_jsonl, read_text_file, split_lines
from runassist.data.records import TextExample
from runassist.errors import ConfigError, DataError

FORMATS = ("auto", "csv", "tsv", "jsonl", "lines", "folder")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
               ".txt": "lines"}


def text_format(path: str | Path) -> str | None:
    """The format a path's extension (or being a folder) implies, or None."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    return _EXTENSIONS.get(path.suffix.lower())


def _records_csv(path: str, delimiter: str) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    text = read_text_file(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(path, None, "no examples (the file is empty)") from None
    except csv.Error as exc:
        raise DataError(path, 1, f"cannot parse the header: {exc}") from None

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(path, start, f"cannot parse: {exc}") from None
            if any(cell.strip() for cell in row):  # blank lines are not examples
                if len(row) != len(header):
                    raise DataError(path, start, f"expected {len(header)} fields like the header, found {len(row)}")
                yield start, dict(zip(header, row))
            start = reader.line_num + 1

    return header, rows()


def _records_json(path: str) -> Iterator[tuple[int | None, dict[str, Any]]]:
    text = read_text_file(path)
    if text.lstrip().startswith("["):
        # A JSON array (pandas to_json(orient="records")): records have no line of their own.
        try:
            items = json.loads(text)
        except RecursionError:
            raise DataError(path, None, "JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise DataError(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
        if not isinstance(items, list):
            raise DataError(path, 1, f"expected an array of objects, found {type(items).__name__}")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataError(path, None, f"record {i} (from 0): expected an object, found {type(item).__name__}")
            yield None, item
        return
    yield from iter_jsonl(path, text)


def table_records(path: str, fmt: str) -> tuple[list[str] | None, Iterator[tuple[int | None, dict[str, Any]]]]:
    """The records of a CSV, TSV or JSON-lines file (``fmt``), each with its line (None for records of a
    JSON array), and the CSV/TSV header (None for JSON, whose records bring their own keys). Other
    readers of column data (text pairs) share this with ``read_texts``."""
    if fmt in ("csv", "tsv"):
        header, rows = _records_csv(path, "," if fmt == "csv" else "\t")
        return header, iter(rows)
    return None, _records_json(path)


def _labels(value: Any, *, path: str, line: int | None, multi_label: bool, separator: str | None) -> tuple[str, ...]:
    if value is None:
        parts: list[Any] = []
    elif isinstance(value, list):
        parts = value
    elif isinstance(value, str) and multi_label and separator:
        parts = value.split(separator)
    else:
        parts = [value]
    labels: list[str] = []
    for part in parts:
        if isinstance(part, (dict, list)) or part is None:
            raise DataError(path, line, f"label {part!r} must be a string or a number")
        label = str(part).strip()
        if label and label not in labels:
            labels.append(label)
    if not multi_label and len(labels) != 1:
        found = "no label" if not labels else f"{len(labels)} labels ({', '.join(labels)})"
        hint = "" if not labels else "; for several labels per text set task.multi_label: true"
        raise DataError(path, line, f"expected one label, found {found}{hint}")
    return tuple(labels)


def read_texts(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    label_separator: str | None = None,
    multi_label: bool = False,
    fmt: str = "auto",
    require_labels: bool = True,
) -> list[TextExample]:
    """Read a CSV/TSV/JSONL file (or a label folder, or plain lines) into TextExamples.

    A file without the label column is read as unlabelled only when
    ``require_labels=False``; a missing column otherwise names the columns that exist.
    """
    path = str(path)
    if fmt == "auto":
        fmt = text_format(path) or ""
        if not fmt:
            raise DataError(path, None, f"cannot tell the format from '{Path(path).suffix}'; set data.format")
    if fmt not in FORMATS:
        raise ConfigError(f"data.format: '{fmt}' is not a text format; choose one of: {', '.join(FORMATS)}")
    if fmt == "lines":
        if require_labels:
            raise DataError(path, None, "a plain text file has no labels; use CSV, TSV or JSONL for training data")
        return read_lines(path)
    if fmt == "folder":
        return read_folder(path, require_labels=require_labels)

    columns, records = table_records(path, fmt)  # columns: None for JSON, whose keys are checked per record
    wanted = [text_column] + ([text_pair_column] if text_pair_column else [])
    if columns is not None:
        _require_columns(path, columns, wanted + ([label_column] if require_labels else []), line=1, kind="column")
        if label_column in columns and multi_label and not label_separator:
            raise ConfigError(
                "data.label_separator is not set: multi-label CSV/TSV needs it, e.g. data.label_separator='|'"
            )

    out = []
    for line, record in records:
        try:
            if columns is None:  # JSON: each record brings its own keys
                _require_columns(path, list(record), wanted + ([label_column] if require_labels else []), line=line)
            text = _text(record[text_column], path=path, line=line, column=text_column)
            pair = None
            if text_pair_column:
                pair = _text(record[text_pair_column], path=path, line=line, column=text_pair_column)
            labels: tuple[str, ...] = ()
            if label_column in record and (require_labels or record[label_column] not in (None, "")):
                labels = _labels(
                    record[label_column], path=path, line=line, multi_label=multi_label, separator=label_separator
                )
        except DataError as exc:
            if line is not None:
                raise
            # Records of a JSON array have no line of their own; say which record it was.
            raise DataError(path, None, f"record {len(out)} (from 0): {exc.message}") from None
        source = f"{path}:{line}" if line is not None else f"{path}:#{len(out)}"
        out.append(TextExample(text, labels, pair, source))
    return out


def _require_columns(path: str, existing: list[str], wanted: list[str], *, line: int | None, kind: str = "key") -> None:
    for column in wanted:
        if column not in existing:
            raise DataError(path, line, f"no {kind} '{column}'; {kind}s here: {', '.join(existing) or 'none'}")


def _text(value: Any, *, path: str, line: int | None, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(path, line, f"'{column}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(path, line, f"empty text in '{column}'")
    return value


def read_lines(path: str | Path) -> list[TextExample]:
    """One document per line, unlabelled, for prediction; blank lines are skipped."""
    path = str(path)
    return [
        TextExample(line, source=f"{path}:{number}")
        for number, line in enumerate(split_lines(read_text_file(path)), start=1)
        if line.strip()
    ]


def read_folder(path: str | Path, *, require_labels: bool = True) -> list[TextExample]:
    """``folder/<label>/<file>.txt``: each file one text, its sub-folder its label (sorted order)."""
    root = Path(path)
    out = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(label_dir.rglob("*.txt")):
            text = read_text_file(file).strip()
            if not text:
                raise DataError(file, None, "empty text")
            out.append(TextExample(text, (label_dir.name,), source=f"{file}:1"))
    loose = sorted(root.glob("*.txt"))
    if loose:
        if require_labels:
            raise DataError(loose[0], None, "a text outside any label folder; put it in <folder>/<label>/")
        out += [TextExample(read_text_file(f).strip(), source=f"{f}:1") for f in loose if read_text_file(f).strip()]
    return out
