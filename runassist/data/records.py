"""The example records every reader produces and every task consumes.

Frozen, so an example read once can be shared by the trainer, the checks and the
predictor without anyone mutating it behind the others' backs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TokenExample:
    """One sentence for token classification, tags in IOB2 (converted on read).

    ``tags`` is None for unlabelled input (prediction). ``text`` and ``offsets``
    are set when the example came from raw text, so predictions can be given as
    character spans of the user's own string.
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...] | None = None
    text: str | None = None
    offsets: tuple[tuple[int, int], ...] | None = None
    source: str = ""  # "path:line" of the example's first line, for error messages


@dataclass(frozen=True)
class TextExample:
    """One text (or text pair) for sequence classification.

    ``labels`` holds one label for single-label data, any number for multi-label,
    and is empty for unlabelled input.
    """

    text: str
    labels: tuple[str, ...] = ()
    text_pair: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Problem:
    """A data problem located at one line of one file; check-data lists these as errors. Training
    reads past a repaired one (a broken tag sequence: read the way conlleval reads it) and stops at a
    ``fatal`` one (a malformed line, skipped only so that check-data can list every one)."""

    path: str
    line: int | None
    message: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line is not None else f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Split:
    """One split as read: its examples, and the problems repaired on the way."""

    spec: str
    examples: list[Any]
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class QAExample:
    """A question about a context, for extractive QA.

    ``answers``: each gold answer as (text, character start in ``context``); an empty tuple for a
    question the context does not answer (SQuAD v2); None for unlabelled input.
    """

    question: str
    context: str
    answers: tuple[tuple[str, int], ...] | None = None
    id: str = ""
    source: str = ""


@dataclass(frozen=True)
class RelationExample:
    """Two entity mentions of a text and the relation from ``head`` to ``tail``.

    A mention is (character start, end, type or None); ``relation`` is None for unlabelled input.
    """

    text: str
    head: tuple[int, int, str | None]
    tail: tuple[int, int, str | None]
    relation: str | None = None
    source: str = ""


@dataclass(frozen=True)
class ChatExample:
    """A conversation: (role, content) messages, roles system / user / assistant. For training the
    assistant messages are what the model learns to write; for prediction the conversation ends
    with a user message and the model writes the next assistant message."""

    messages: tuple[tuple[str, str], ...]
    source: str = ""
    respond: bool = False  # predict the next assistant message (True), or score the assistant's messages


@dataclass(frozen=True)
class Seq2SeqExample:
    """A source text and the text a model should write for it (a summary, a translation, ...).

    ``target`` is None for unlabelled input (prediction).
    """

    text: str
    target: str | None = None
    source: str = ""
