"""Reading files the readers share: UTF-8 text with line-numbered errors, JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from runassist.errors import DataError


def read_text_file(path: str | Path) -> str:
    """A UTF-8 file (BOM allowed) as text; bad bytes give a DataError naming the line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, line, f"not valid UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8") from None


def split_lines(text: str) -> list[str]:
    """Split on \\n, \\r\\n and \\r only. str.splitlines() also splits on U+2028, U+0085 and form
    feeds, which JSON written with ensure_ascii=False and real tweets contain inside a record."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def iter_jsonl(path: str | Path, text: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is a DataError."""
    text = read_text_file(path) if text is None else text
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except RecursionError:
            raise DataError(path, number, "JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise DataError(path, number, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, number, f"expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def media_files(root: Path, suffixes: Any) -> list[Path]:
    """Files under ``root`` (recursive) with one of ``suffixes``, sorted; hidden ones skipped."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))
