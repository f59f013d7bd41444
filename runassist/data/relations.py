"""Relation extraction readers: JSON lines with character spans, TACRED's JSON, and the
SemEval-2010 Task 8 file layout. Every reader gives a ``RelationExample`` with character spans of
its own ``text``, so ``text[start:end]`` is the mention whatever the source.

- JSONL: ``{"text", "head": {"start", "end", "type"}, "tail": {...}, "relation"}`` (``type``
  optional; ``end`` exclusive).
- TACRED (a JSON array, or one object a line): ``token``, ``subj_start``, ``subj_end``,
  ``obj_start``, ``obj_end`` (token indices, ends inclusive), ``subj_type``, ``obj_type``,
  ``relation``; the text is the tokens joined by spaces; head is the subject.
- SemEval-2010 Task 8 (.txt): ``ID<TAB>"sentence with <e1>..</e1> and <e2>..</e2>"``, the relation
  with its direction on the next line (``Cause-Effect(e2,e1)``, ``Other``), a ``Comment:`` line and
  a blank line; a test file has the sentence lines only. Head is ``e1``: the direction lives in
  the label, as the official scorer reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from runassist.data.io import iter_jsonl, read_text_file, split_lines
from runassist.data.records import RelationExample, Split
from runassist.errors import DataError

_SEMEVAL = re.compile(r'^\s*(\d+)\s+"(.*)"\s*$')
_MARKERS = re.compile(r"</?e[12]>")


def scan_relations(path: str | Path, *, fmt: str = "auto", require_labels: bool = True) -> Split:
    path = Path(path)
    if fmt == "auto":
        fmt = {".txt": "semeval", ".json": "tacred"}.get(path.suffix.lower(), "jsonl")
    if fmt == "semeval":
        return Split(str(path), _semeval(str(path), require_labels))
    if fmt == "tacred":
        return Split(str(path), _tacred_array(str(path), require_labels))
    if fmt != "jsonl":
        raise DataError(path, None, f"data.format {fmt!r}: relations read jsonl, tacred (.json) or semeval (.txt)")
    out = []
    for line, row in iter_jsonl(path):
        reader = _tacred_row if "token" in row else _jsonl_row
        out.append(reader(row, str(path), line, require_labels))
    return Split(str(path), out)


def _mention(value: Any, text: str, path: str, line: int | None, key: str) -> tuple[int, int, str | None]:
    if not isinstance(value, dict):
        raise DataError(path, line, f"'{key}' must be an object {{\"start\", \"end\", \"type\"}}")
    start, end, kind = value.get("start"), value.get("end"), value.get("type")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
        raise DataError(path, line, f"'{key}' span [{start}:{end}] is not inside the text (length {len(text)})")
    if kind is not None and (not isinstance(kind, str) or not kind.strip() or any(c.isspace() for c in kind)):
        raise DataError(path, line, f"'{key}' type {kind!r} must be a word (no spaces)")
    return start, end, kind


def _label(row: dict[str, Any], path: str, line: int | None, require: bool) -> str | None:
    relation = row.get("relation")
    if relation is None and not require:
        return None
    if not isinstance(relation, str) or not relation.strip():
        raise DataError(path, line, "'relation' must be a non-empty string")
    return relation.strip()


def _check_pair(head: tuple, tail: tuple, path: str, line: int | None) -> None:
    if head[0] < tail[1] and tail[0] < head[1]:
        raise DataError(path, line, f"head [{head[0]}:{head[1]}] and tail [{tail[0]}:{tail[1]}] overlap")


def _jsonl_row(row: dict[str, Any], path: str, line: int | None, require: bool) -> RelationExample:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, line, "'text' must be a non-empty string")
    head = _mention(row.get("head"), text, path, line, "head")
    tail = _mention(row.get("tail"), text, path, line, "tail")
    _check_pair(head, tail, path, line)
    return RelationExample(text, head, tail, _label(row, path, line, require), f"{path}:{line}")


def _tacred_row(row: dict[str, Any], path: str, line: int | None, require: bool) -> RelationExample:
    tokens = row.get("token")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise DataError(path, line, "'token' must be a list of strings")
    starts, pos = [], 0
    for token in tokens:
        starts.append(pos)
        pos += len(token) + 1
    text = " ".join(tokens)

    def span(prefix: str) -> tuple[int, int, str | None]:
        a, b = row.get(f"{prefix}_start"), row.get(f"{prefix}_end")
        if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b < len(tokens)):
            raise DataError(path, line, f"'{prefix}_start'/'{prefix}_end' must be token indices (end inclusive) "
                                        f"within the {len(tokens)} tokens")
        kind = row.get(f"{prefix}_type")
        return starts[a], starts[b] + len(tokens[b]), kind if isinstance(kind, str) else None

    head, tail = span("subj"), span("obj")
    _check_pair(head, tail, path, line)
    return RelationExample(text, head, tail, _label(row, path, line, require), f"{path}:{line}")


def _tacred_array(path: str, require: bool) -> list[RelationExample]:
    text = read_text_file(path)
    if not text.lstrip().startswith("["):
        return [_tacred_row(row, path, line, require) for line, row in iter_jsonl(path, text)]
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(path, None, f"record {i}: expected an object")
        try:
            out.append(_tacred_row(row, path, None, require))
        except DataError as exc:
            raise DataError(path, None, f"record {i} (id {row.get('id', '?')}): {exc.message}") from None
    return out


def _semeval(path: str, require: bool) -> list[RelationExample]:
    lines = split_lines(read_text_file(path))
    out = []
    i = 0
    while i < len(lines):
        match = _SEMEVAL.match(lines[i])
        if not match:
            if lines[i].strip():
                raise DataError(path, i + 1, 'expected ID<TAB>"sentence with <e1>..</e1> and <e2>..</e2>"')
            i += 1
            continue
        number = i + 1
        text, head, tail = _unmark(match.group(2), path, number)
        relation = None
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if nxt and not _SEMEVAL.match(lines[i + 1]):
            relation = nxt
            i += 1
        elif require:
            raise DataError(path, number + 1, "expected the relation (e.g. Cause-Effect(e1,e2) or Other) after the "
                                              "sentence")
        i += 1
        while i < len(lines) and lines[i].strip().startswith("Comment"):
            i += 1
        out.append(RelationExample(text, head, tail, relation, f"{path}:{number}"))
    return out


def _unmark(marked: str, path: str, line: int) -> tuple[str, tuple, tuple]:
    spans: dict[str, list[int]] = {}
    text, pos = [], 0
    for match in _MARKERS.finditer(marked):
        text.append(marked[pos:match.start()])
        spans.setdefault(match.group()[1:-1].strip("/"), []).append(sum(len(t) for t in text))
        pos = match.end()
    text.append(marked[pos:])
    plain = "".join(text)
    if sorted(spans) != ["e1", "e2"] or any(len(v) != 2 for v in spans.values()):
        raise DataError(path, line, "expected one <e1>..</e1> and one <e2>..</e2>")
    head, tail = tuple(spans["e1"]) + (None,), tuple(spans["e2"]) + (None,)
    if not (head[0] < head[1] and tail[0] < tail[1]):
        raise DataError(path, line, "an entity marker pair holds no text")
    return plain, head, tail
