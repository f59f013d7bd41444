"""Overlapping windows over a sequence of sub-tokens longer than the model's room.

One rule for every task that reads long inputs (NER sentences, classified documents, QA
contexts): windows of ``room`` tokens, neighbours sharing ``stride`` tokens, the last window
ending at the sequence's end, so every window is full and the last one has as much context
as the others. Where windows overlap, a token's prediction is taken from the window in which it
has the most ``context`` (the larger distance to the nearer window edge).
"""

from __future__ import annotations


def window_starts(n: int, room: int, stride: int) -> list[int]:
    """Start offsets of the windows over ``n`` tokens: steps of ``room - stride`` (at least 1)."""
    if n <= room:
        return [0]
    step = max(1, room - stride)
    return list(range(0, n - room, step)) + [n - room]


def window_spans(n: int, room: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each window over ``n`` tokens."""
    return [(start, min(start + room, n)) for start in window_starts(n, room, stride)]


def context(position: int, start: int, end: int) -> int:
    """How much context a token at ``position`` has in the window ``[start, end)``."""
    return min(position - start, end - 1 - position)
