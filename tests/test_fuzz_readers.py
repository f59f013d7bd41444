"""Fuzzing the readers: whatever a file holds, reading it gives examples or a DataError that names the
file and the line, never another exception. A fixed seed and number of cases, so it runs the same in
every `make test`."""

from __future__ import annotations

import json
import random

import pytest

from runassist.config import DataConfig, ModelConfig
from runassist.errors import DataError
from runassist.tasks import task_class

CASES = 400
MARKUP = ["[b]", "[/]", ":x:", ":smile:", "[red]", "[/red]", "\\", "%s", "{}", "<e1>", "</e1>", "@", "#"]
TEXT = ["john", "Paris", "北京", "ÉCOLE", "e\u0301", "\u200b", "\ufeff", "😀", "-DOCSTART-", "\x00", "\x1b[31m",
        "\u2028", "O", "B-PER", "I-PER", "B-", "S-LOC", "E-LOC", "I-ORG", "PER", "-", "pos", "neg", ""]
SEPARATORS = ["\t", " ", "  ", " \t ", "\t\t", ","]


def _piece(rng: random.Random) -> str:
    return rng.choice(MARKUP + TEXT) if rng.random() < 0.8 else "".join(
        chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 4)))


def _line(rng: random.Random) -> str:
    cols = [_piece(rng) for _ in range(rng.randint(0, 4))]
    out = ""
    for col in cols:
        out += col + rng.choice(SEPARATORS)
    return out.rstrip(" ") if rng.random() < 0.5 else out


def _json_value(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 2 or kind < 0.4:
        return rng.choice([_piece(rng), rng.randint(-3, 40), None, True, 1.5])
    if kind < 0.7:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["text", "tokens", "tags", "label", "entities", "start", "end", "question", "context", "answers",
            "head", "tail", "relation", "type", "answer_start"]
    return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _record(rng: random.Random, task: str) -> dict:
    """A record of the task's JSON layout, mostly well formed, with markup-like and odd text in it."""
    words = [_piece(rng) or "w" for _ in range(rng.randint(1, 5))]
    text = " ".join(words)
    if task == "ner":
        return {"tokens": words, "tags": [rng.choice(["O", "B-PER", "I-PER", "B-[/]", "X"]) for _ in words]}
    if task == "classify":
        return {"text": text, "label": rng.choice(["pos", "neg", ":x:", 3, ["a", "b"], None])}
    if task == "qa":
        start = rng.randint(0, max(0, len(text) - 1))
        return {"question": _piece(rng) or "q?", "context": text,
                "answers": {"text": [text[start:start + 3]], "answer_start": [rng.choice([start, start + 1, -1])]}}
    a, b = sorted(rng.sample(range(len(text) + 2), 2)) if len(text) > 1 else (0, 1)
    return {"text": text, "head": {"start": 0, "end": max(1, a)}, "tail": {"start": a, "end": b, "type": _piece(rng)},
            "relation": rng.choice(["rel", "no_relation", "[/]", None])}


def _content(rng: random.Random, fmt: str, task: str) -> bytes:
    kind = rng.random()
    if kind < 0.15:  # raw bytes, invalid UTF-8 among them
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 60)))
    if fmt == "jsonl" and kind < 0.75:
        lines = [json.dumps(_record(rng, task) if rng.random() < 0.6 else _json_value(rng),
                            ensure_ascii=rng.random() < 0.5) if rng.random() < 0.9 else _line(rng)
                 for _ in range(rng.randint(0, 6))]
    elif fmt == "csv" and kind < 0.75:
        header = rng.choice(["text,label", "label,text", "text", "text,label,extra", "a,b"])
        lines = [header] + [",".join(rng.choice(['"x,y"', '"', "good", "bad", _piece(rng)])
                                     for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 6))]
    else:
        lines = [_line(rng) for _ in range(rng.randint(0, 12))]
    newline = rng.choice(["\n", "\r\n", "\r"])
    text = newline.join(lines) + (newline if rng.random() < 0.7 else "")
    return text.encode("utf-8", errors="surrogatepass")


READERS = [("ner", "conll"), ("ner", "jsonl"), ("classify", "csv"), ("classify", "jsonl"), ("classify", "tsv"),
           ("qa", "jsonl"), ("relations", "jsonl")]


@pytest.mark.parametrize("task,fmt", READERS)
def test_readers_give_examples_or_a_data_error_naming_file_and_line(task, fmt, tmp_path):
    rng = random.Random(f"{task}-{fmt}")
    cls = task_class(task)
    reader = cls(cls.Section(), DataConfig(), ModelConfig())
    outcomes = {"examples": 0, "error": 0}
    for case in range(CASES):
        path = tmp_path / f"case{case}.{fmt}"
        path.write_bytes(_content(rng, "jsonl" if fmt == "jsonl" else "csv" if fmt in ("csv", "tsv") else "conll",
                                  task))
        for require_labels in (True, False):
            try:
                examples = reader.read(str(path), require_labels=require_labels)
            except DataError as exc:
                assert exc.path == str(path), (case, exc)
                assert exc.line is not None or exc.message.startswith(("no examples", "record ")), (case, exc)
                outcomes["error"] += 1
            else:
                assert examples and all(getattr(ex, "source", "").startswith(str(path)) for ex in examples), case
                outcomes["examples"] += 1
    assert outcomes["examples"] and outcomes["error"], outcomes  # the fuzz reaches both outcomes
