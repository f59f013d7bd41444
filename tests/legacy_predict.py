"""Today's (before streaming) ``predict_file``, frozen: the streaming path must write the same bytes.

Copied from runassist/predict.py as it was at 6fde49d; only the names changed (``legacy_``).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from runassist.atomic import atomic_write
from runassist.errors import DataError, RunassistError


def legacy_predict_file(predictor: Any, source: str, output: str | None = None, *, fmt: str = "auto") -> int:
    """Predict every item of a file (or '-' for stdin) and write the results.

    Input: a file the task reads (CoNLL, JSONL; labels, where present, are kept as gold), a
    CSV/TSV (the task's input columns, ``data.text_column`` by default; every column is kept and
    prediction columns are added), or plain text, one input a line. Output: JSONL, CSV/TSV, or a
    format of the task's own (``task.output_formats``, e.g. CoNLL for NER).
    Returns the number of items predicted.
    """
    task = predictor.task
    kind = _input_kind(source)
    formats = task.output_formats
    if fmt == "auto":
        fmt = "conll" if kind == "conll" and "conll" in formats else "csv" if kind in ("csv", "tsv") else "jsonl"
    if fmt not in formats:
        raise RunassistError(f"--format {fmt!r}: a {task.name} run writes {', '.join(('auto', *formats))}")
    rows = None
    if kind in ("csv", "tsv"):
        rows, header = _read_table(source, kind)
        for name in task.input_columns():
            if name not in header:
                raise DataError(source, 1, f"no '{name}' column (data.text_column / data.text_pair_column of the "
                                           f"run's config); columns: {', '.join(header)}")
        examples = [task.example_from_row(r) for r in rows]
    elif kind in ("conll", "jsonl"):
        examples = task.read(source, require_labels=False)
    else:
        examples = predictor.examples(_read_lines(source))
    predictions = predictor.predict_examples(examples)
    if fmt == "jsonl":
        text = "".join(json.dumps(task.to_json(ex, p), ensure_ascii=False) + "\n" for ex, p in zip(examples, predictions))
    elif fmt == "csv":
        results = [task.to_json(ex, p) for ex, p in zip(examples, predictions)]
        text = _table_text(rows if rows is not None else [{"text": getattr(e, "text", "")} for e in examples],
                           results, delimiter="\t" if kind == "tsv" else ",")
    else:
        text = task.format_output(fmt, examples, predictions)
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        atomic_write(Path(output), text)
    return len(predictions)


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
