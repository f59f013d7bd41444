"""Extractive QA readers: the official SQuAD v1.1 / v2.0 JSON layout and JSON lines.

SQuAD JSON: ``{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}], "is_impossible"}]}]}]}``. JSON lines (the Hugging Face datasets layout): one
``{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}`` a line.

An answer whose text is not at its ``answer_start`` is a :class:`Problem` for check-data; when the
text occurs elsewhere in the context, the nearest occurrence is used (off-by-one starts are common
in hand-made data), otherwise the answer is dropped, and a question left with no answer is dropped
too (it would otherwise teach "no answer"). Malformed records raise :class:`DataError` with the
file and line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from runassist.data.io import iter_jsonl, read_text_file
from runassist.data.records import Problem, QAExample, Split
from runassist.errors import DataError


def scan_squad_json(path: str | Path, *, require_answers: bool = True) -> Split:
    path = str(path)
    text = read_text_file(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(path, 1, 'expected the SQuAD layout {"data": [{"paragraphs": [...]}]}')
    examples: list[QAExample] = []
    problems: list[Problem] = []
    lines = _id_lines(text)
    for a, article in enumerate(doc["data"]):
        for p, paragraph in enumerate(_list(article, "paragraphs", path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise DataError(path, None, f"{where}: 'context' must be a string")
            for q, qa in enumerate(_list(paragraph, "qas", path, where)):
                qid = str(qa.get("id", f"{where}.qas[{q}]")) if isinstance(qa, dict) else ""
                line = lines.get(qid)
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise DataError(path, line, f"{where}.qas[{q}]: 'question' must be a string")
                raw = qa.get("answers")
                if raw is None and not require_answers:
                    answers = None
                else:
                    if not isinstance(raw, list):
                        raise DataError(path, line, f"question {qid}: 'answers' must be a list")
                    answers = [(ans.get("text"), ans.get("answer_start")) if isinstance(ans, dict) else (None, None)
                               for ans in raw]
                impossible = bool(qa.get("is_impossible", False))
                example = _example(qa["question"], context, answers, impossible, qid=qid, path=path, line=line,
                                   problems=problems)
                if example is not None:
                    examples.append(example)
    return Split(path, examples, problems)


def scan_qa_jsonl(path: str | Path, *, require_answers: bool = True) -> Split:
    path = str(path)
    examples: list[QAExample] = []
    problems: list[Problem] = []
    for line, row in iter_jsonl(path):
        for key in ("question", "context"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(path, line, f"'{key}' must be a non-empty string")
        raw = row.get("answers")
        if raw is None and not require_answers:
            answers = None
        elif isinstance(raw, dict) and isinstance(raw.get("text"), list) and isinstance(raw.get("answer_start"), list):
            if len(raw["text"]) != len(raw["answer_start"]):
                raise DataError(path, line, "'answers' has as many 'text' as 'answer_start' entries")
            answers = list(zip(raw["text"], raw["answer_start"]))
        else:
            raise DataError(path, line, "'answers' must be {\"text\": [...], \"answer_start\": [...]} "
                                        "(empty lists for a question without an answer)")
        example = _example(row["question"], row["context"], answers, False, qid=str(row.get("id", line)),
                           path=path, line=line, problems=problems)
        if example is not None:
            examples.append(example)
    return Split(path, examples, problems)


def _list(node: Any, key: str, path: str, where: str) -> list:
    value = node.get(key) if isinstance(node, dict) else None
    if not isinstance(value, list):
        raise DataError(path, None, f"{where}: '{key}' must be a list")
    return value


_ID = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.)*")')


def _id_lines(text: str) -> dict[str, int]:
    """The line of each question's id in a JSON file (records of a JSON document have no line of their
    own), in one pass over the text."""
    out: dict[str, int] = {}
    line, at = 1, 0
    for match in _ID.finditer(text):
        line += text.count("\n", at, match.start())
        at = match.start()
        try:
            out.setdefault(str(json.loads(match.group(1))), line)
        except ValueError:
            continue
    return out


def _example(question: str, context: str, answers: list[tuple[Any, Any]] | None, impossible: bool, *, qid: str,
             path: str, line: int | None, problems: list[Problem]) -> QAExample | None:
    if answers is None:
        return QAExample(question, context, None, qid, f"{path}:{line}")
    kept: list[tuple[str, int]] = []
    for text, start in answers:
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise DataError(path, line, f"question {qid}: an answer needs 'text' (a string) and 'answer_start' "
                                        f"(a number), got {text!r}, {start!r}")
        if not text.strip():
            continue
        if context[start:start + len(text)] == text:
            kept.append((text, start))
            continue
        found = _nearest(context, text, start)
        if found is None:
            problems.append(Problem(path, line, f"question {qid}: answer {text!r} is not in the context "
                                                f"(answer_start {start}); dropped"))
        else:
            problems.append(Problem(path, line, f"question {qid}: answer {text!r} is at {found}, not at "
                                                f"answer_start {start}; read as {found}"))
            kept.append((text, found))
    if answers and not kept and not impossible:
        problems.append(Problem(path, line, f"question {qid}: no answer is left; question dropped"))
        return None
    return QAExample(question, context, tuple(kept), qid, f"{path}:{line}")


def _nearest(context: str, text: str, start: int) -> int | None:
    best = None
    at = context.find(text)
    while at >= 0:
        if best is None or abs(at - start) < abs(best - start):
            best = at
        at = context.find(text, at + 1)
    return best
