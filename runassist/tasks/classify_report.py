"""The classification part of the HTML report: the confusion matrix and the mistakes the model was
surest of (``ClassifyTask.report_errors``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runassist.data.io import split_lines
from runassist.htmlparts import e, img, missing, num, table

CONFIDENT_MISTAKES = 10


def _confidence(row: dict[str, Any]) -> float:
    """How sure the model was of its mistake: the highest probability among wrongly added
    labels, or one minus the lowest among wrongly left-out ones."""
    probs = row.get("probs") or {}
    gold, predicted = set(row.get("gold") or ()), set(row.get("labels") or ())
    values = [float(probs.get(label, 0.0)) for label in predicted - gold]
    values += [1.0 - float(probs.get(label, 0.0)) for label in gold - predicted]
    return max(values, default=0.0)


def mistakes_or_note(parts: list[str], predictions: Path | None,
                     noun: str) -> tuple[int, list[dict[str, Any]]] | None:
    """(items, mistakes) of eval/<split>.jsonl, or None with a note in ``parts`` saying why none are
    shown (no file, an unreadable one, or no mistake at all)."""
    if predictions is None:
        parts.append(missing("No predictions file (eval/<split>.jsonl): mistakes cannot be shown."))
        return None
    try:
        n, wrong = read_classify_mistakes(predictions)
    except (OSError, ValueError) as exc:
        parts.append(missing(f"{predictions.name} could not be read ({exc})."))
        return None
    if not wrong:
        parts.append(f"<p>All {n} {noun} are right.</p>")
        return None
    return n, wrong


def read_classify_mistakes(path: Path) -> tuple[int, list[dict[str, Any]]]:
    """(number of examples, wrong ones with a ``confidence`` key, most confident first)."""
    rows = []
    for line in split_lines(path.read_text(encoding="utf-8")):
        if line.strip():
            rows.append(json.loads(line))
    wrong = [dict(r, confidence=_confidence(r)) for r in rows
             if set(r.get("gold") or ()) != set(r.get("labels") or ())]
    wrong.sort(key=lambda r: -r["confidence"])
    return len(rows), wrong


def errors_section(scores: dict[str, Any] | None, predictions: Path | None, images: dict[str, bytes], *,
                   multi_label: bool) -> str:
    parts = []
    if images.get("confusion.png"):
        parts.append(f'<div class="narrow">{img(images, "confusion.png", "test confusion matrix")}</div>')
    elif scores is not None and not multi_label:
        parts.append(missing("No confusion matrix in the test scores."))
    parts.append("<h3>Most confident mistakes</h3>")
    found = mistakes_or_note(parts, predictions, "test examples")
    if found is None:
        return "".join(parts)
    n, wrong = found
    rows = []
    for r in wrong[:CONFIDENT_MISTAKES]:
        text = str(r.get("text", r.get("file", "")))  # a media task's rows name their file instead
        if r.get("text_pair") is not None:
            text += " ‖ " + str(r["text_pair"])
        if len(text) > 300:
            text = text[:297] + "…"
        probs = r.get("probs") or {}
        top = ", ".join(f"{e(k)} {float(v):.2f}" for k, v in list(probs.items())[:3])
        rows.append([e(text), e(", ".join(r.get("gold") or []) or "(none)"),
                     '<span class="bad">' + e(", ".join(r.get("labels") or []) or "(none)") + "</span>",
                     num(r["confidence"], 2), f'<span class="small">{top}</span>'])
    parts.append(f'<p class="small">{len(wrong)} of {n} test examples are wrong; '
                 f'the {len(rows)} the model was surest of:</p>')
    parts.append(table(["text", "gold", "predicted", "confidence", "top probabilities"], rows, cls="mistakes"))
    return "".join(parts)
