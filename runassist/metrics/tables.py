"""Score tables shared by run comparison and the report: numbers only, and per-label rows of two runs."""

from __future__ import annotations

from typing import Any


def numeric_scores(scores: dict[str, Any]) -> dict[str, float]:
    """The top-level numbers of a score dict (tables and counts left out)."""
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def per_label_rows(per_a: dict[str, dict[str, Any]], per_b: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label of either run: support, A's and B's precision/recall/F1, and B - A."""
    rows = []
    for label in list(dict.fromkeys([*per_a, *per_b])):
        ra, rb = per_a.get(label) or {}, per_b.get(label) or {}
        row: dict[str, Any] = {"label": label, "support": int(ra.get("support", rb.get("support", 0)))}
        row["a"] = {k: float(ra.get(k, 0.0)) for k in ("precision", "recall", "f1")}
        row["b"] = {k: float(rb.get(k, 0.0)) for k in ("precision", "recall", "f1")}
        row["diff"] = {k: row["b"][k] - row["a"][k] for k in ("precision", "recall", "f1")}
        for key in ("predicted", "correct"):
            if key in ra or key in rb:
                row["a"][key], row["b"][key] = int(ra.get(key, 0)), int(rb.get(key, 0))
        rows.append(row)
    return rows


def share_equal(a: list[Any], b: list[Any]) -> float:
    """The share of items two runs predict identically."""
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else 1.0
