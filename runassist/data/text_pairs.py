"""Text-pair readers (a source text and the text to write for it): JSONL (or a JSON array), CSV, TSV.

The two column names come from the task's config (``task.source_column``, ``task.target_column``).
A malformed record (a missing column, a value that is not a string) raises :class:`DataError` with
the file and line. An empty source or target is a :class:`Problem` for check-data, and the example is
left out: an empty target would teach the model to stop at once, an empty source to write from
nothing. A file without the target column is read as unlabelled only when targets are not required
(prediction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runassist.data.records import Problem, Seq2SeqExample, Split
from runassist.data.tabular import table_records
from runassist.errors import ConfigError, DataError

FORMATS = ("auto", "csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def pair_format(path: str | Path, fmt: str = "auto") -> str:
    """The format to read ``path`` in: ``fmt``, or the one its extension implies."""
    if fmt == "auto":
        found = _EXTENSIONS.get(Path(path).suffix.lower())
        if found is None:
            raise DataError(path, None, f"cannot tell the format from '{Path(path).suffix}'; text pairs are read "
                                        "from .jsonl, .json, .csv or .tsv files (or set data.format)")
        return found
    if fmt not in FORMATS:
        raise ConfigError(f"data.format: '{fmt}' is not a text-pair format; choose one of: {', '.join(FORMATS)}")
    return fmt


def scan_text_pairs(path: str | Path, *, source_column: str = "source", target_column: str = "target",
                    fmt: str = "auto", require_targets: bool = True) -> Split:
    path = str(path)
    columns, records = table_records(path, pair_format(path, fmt))
    wanted = [source_column] + ([target_column] if require_targets else [])
    if columns is not None:
        _require(path, 1, columns, wanted, kind="column")
    examples: list[Seq2SeqExample] = []
    problems: list[Problem] = []
    for n, (line, record) in enumerate(records):
        where = f"{path}:{line}" if line is not None else f"{path}:#{n}"
        try:
            if columns is None:
                _require(path, line, list(record), wanted, kind="key")
            text = _string(record[source_column], path, line, source_column)
            target = record.get(target_column)
            if target is not None or require_targets:
                target = _string(target, path, line, target_column)
        except DataError as exc:
            if line is not None:
                raise
            raise DataError(path, None, f"record {n} (from 0): {exc.message}") from None
        if not text.strip():
            problems.append(Problem(path, line, f"empty source ('{source_column}'); the example is left out"))
            continue
        if target is not None and not target.strip():
            if require_targets:
                problems.append(Problem(path, line, f"empty target ('{target_column}'); the example is left out"))
                continue
            target = None  # a prediction input without a gold text
        examples.append(Seq2SeqExample(text, target, where))
    return Split(path, examples, problems)


def _require(path: str, line: int | None, existing: list[str], wanted: list[str], *, kind: str) -> None:
    for column in wanted:
        if column not in existing:
            raise DataError(path, line, f"no {kind} '{column}'; {kind}s here: {', '.join(existing) or 'none'} "
                                        "(task.source_column / task.target_column name them)")


def _string(value: Any, path: str, line: int | None, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(path, line, f"'{column}' must be a string, got {type(value).__name__}")
    return value
