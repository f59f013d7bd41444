"""``runassist chat RUN``: talk to a trained chat run in the terminal, the reply printed as it is made.

The conversation is kept and sent whole each turn (the model sees the history, cut from the left
to fit max_length). ``/reset`` starts over, ``/exit`` (or end of input) ends; Ctrl-C during a reply
stops that reply, not the session. Replies go to stdout, prompts and notes to stderr, so the
output of ``runassist chat RUN < questions.txt`` is the replies alone, one block per input line.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, TextIO

from runassist.errors import RunassistError


def chat_session(predictor: Any, *, source: TextIO = sys.stdin, out: TextIO = sys.stdout, notes: TextIO = sys.stderr,
                 settings: dict[str, Any] | None = None, on_piece: Callable[[str], None] | None = None) -> int:
    """Run the loop until /exit or end of input; returns the number of replies given."""
    task = predictor.task
    if not task.capabilities.streams:
        raise RunassistError(f"{predictor.run.name}: a {task.name} run does not chat; `runassist predict` it instead")
    interactive = source.isatty()
    messages: list[tuple[str, str]] = []
    replies = 0
    while True:
        if interactive:
            notes.write("you> ")
            notes.flush()
        line = source.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if text.strip() in ("/exit", "/quit"):
            break
        if text.strip() == "/reset":
            messages.clear()
            notes.write("(conversation cleared)\n")
            continue
        if not text.strip():
            continue
        messages.append(("user", text))
        example = task.example_from_input({"messages": [{"role": r, "content": c} for r, c in messages]})
        stop = threading.Event()
        pieces: list[str] = []
        try:
            for piece in task.stream(predictor.model, predictor.processor, example, predictor.state, stop=stop,
                                     settings=settings):
                pieces.append(piece)
                out.write(piece)
                out.flush()
                if on_piece:
                    on_piece(piece)
        except KeyboardInterrupt:
            stop.set()
            notes.write("\n(reply stopped)\n")
        out.write("\n")
        out.flush()
        messages.append(("assistant", "".join(pieces).strip()))
        replies += 1
    return replies
