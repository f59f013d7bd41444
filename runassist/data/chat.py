"""Chat readers: JSON lines of OpenAI-style conversations or Alpaca-style instructions.

- ``{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}``;
- ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` optional; ``system`` optional):
  one user message (instruction, then the input after a blank line) and one assistant message.

A malformed record or an unknown role is a fatal problem (training stops at the first, check-data
lists every one); an empty message and a conversation without any assistant message are problems
check-data reports, and training reads past them (such a conversation teaches nothing and is
dropped at encoding, counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runassist.data.io import iter_jsonl
from runassist.data.records import ChatExample, Problem, Split
from runassist.errors import DataError

ROLES = ("system", "user", "assistant")


def scan_chat_jsonl(path: str | Path, *, require_labels: bool = True) -> Split:
    path = str(path)
    examples: list[ChatExample] = []
    problems: list[Problem] = []
    for line, row in iter_jsonl(path):
        try:
            messages = _messages(row)
        except ValueError as exc:
            problems.append(Problem(path, line, str(exc), fatal=True))
            continue
        if any(not content.strip() for _, content in messages):
            problems.append(Problem(path, line, "an empty message"))
        if require_labels and not any(role == "assistant" for role, _ in messages):
            problems.append(Problem(path, line, "no assistant message: nothing to learn from this conversation"))
        # Read for prediction (no labels required), a conversation ending with the user gets a reply.
        respond = not require_labels and messages[-1][0] != "assistant"
        examples.append(ChatExample(tuple(messages), f"{path}:{line}", respond))
    return Split(path, examples, problems)


def _messages(row: dict[str, Any]) -> list[tuple[str, str]]:
    if "messages" in row:
        raw = row["messages"]
        if not isinstance(raw, list) or not raw:
            raise ValueError("'messages' must be a non-empty list of {\"role\", \"content\"}")
        out = []
        for i, message in enumerate(raw):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise ValueError(f"messages[{i}] must be {{\"role\": ..., \"content\": a string}}")
            role = message.get("role")
            if role not in ROLES:
                raise ValueError(f"messages[{i}]: unknown role {role!r}; roles: {', '.join(ROLES)}")
            out.append((role, message["content"]))
        return out
    if "instruction" in row:
        parts = [row.get(k) for k in ("system", "instruction", "input", "output")]
        if not all(p is None or isinstance(p, str) for p in parts):
            raise ValueError("'system', 'instruction', 'input' and 'output' must be strings")
        system, instruction, extra, output = parts
        user = instruction + (f"\n\n{extra}" if extra and extra.strip() else "")
        out = ([("system", system)] if system else []) + [("user", user)]
        return out + ([("assistant", output)] if output is not None else [])
    raise ValueError(f"expected 'messages' or 'instruction'; keys here: {', '.join(map(str, row)) or 'none'}")


def read_chitchat(path: Path, *, limit: int | None = None) -> list[ChatExample]:
    """The Chit Chat Challenge conversations (chitchat-dataset's dataset.json): each turn is one
    sender's consecutive messages joined by newlines; the first sender is the user, the other the
    assistant. Conversations in the file's order; ``source`` is ``path#conversation-id``."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(path, None, f"not valid JSON ({exc})") from None
    out = []
    for key, conversation in data.items():
        turns = conversation.get("messages") or []
        senders = [turn[0]["sender"] for turn in turns if turn]
        if len(set(senders)) < 2:
            continue
        first = senders[0]
        messages = tuple(("user" if turn[0]["sender"] == first else "assistant",
                          "\n".join(m["text"].strip() for m in turn if m.get("text", "").strip()))
                         for turn in turns if turn)
        messages = tuple(m for m in messages if m[1])
        if any(role == "assistant" for role, _ in messages):
            out.append(ChatExample(messages, f"{path}#{key}"))
        if limit and len(out) >= limit:
            break
    return out
