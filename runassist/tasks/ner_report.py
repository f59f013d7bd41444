"""The NER part of the HTML report: entity error kinds, and the worst test sentences with gold and
predicted entities highlighted (``NerTask.report_errors``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from runassist import plots
from runassist.data.io import split_lines
from runassist.htmlparts import bar, e, label_colours, missing, num, table

WORST_SENTENCES = 6
ERROR_HELP = {
    "type": "right span, wrong type",
    "boundary": "right type, overlapping but different span",
    "boundary_and_type": "overlapping span, wrong type",
    "missed": "gold entity no prediction touches",
    "spurious": "prediction that touches no gold entity",
}


def read_conll_predictions(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """``word gold pred`` lines (blank line between sentences) -> (words, gold, pred) per sentence."""
    words: list[list[str]] = []
    gold: list[list[str]] = []
    pred: list[list[str]] = []
    current: list[tuple[str, str, str]] = []

    def flush() -> None:
        if current:
            words.append([c[0] for c in current])
            gold.append([c[1] for c in current])
            pred.append([c[2] for c in current])
            current.clear()

    for line in split_lines(path.read_text(encoding="utf-8")):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) >= 3:
            current.append((cols[0], cols[-2], cols[-1]))
    flush()
    return words, gold, pred


def errors_section(scores: dict[str, Any] | None, predictions: Path | None, *, mode: str) -> str:
    parts = []
    errors = (scores or {}).get("errors")
    if isinstance(errors, dict):
        total = errors.get("total") or sum(v for k, v in errors.items() if k in ERROR_HELP) or 0
        rows = []
        for kind, why in ERROR_HELP.items():
            count = int(errors.get(kind, 0))
            share = count / total if total else 0.0
            rows.append([f"<b>{e(kind)}</b>", e(why), num(count), f"{100 * share:.0f}% {bar(share, '#d62728')}"])
        rows.append(["<b>total</b>", "", num(total), ""])
        parts.append(table(["kind", "meaning", "count", "share"], rows, cls="errors"))
    else:
        parts.append(missing("No error breakdown: eval/<split>.json has no 'errors'."))
    parts.append("<h3>Worst sentences</h3>")
    if predictions is None:
        parts.append(missing("No predictions file (eval/<split>.conll): worst sentences cannot be shown."))
    else:
        parts.append(_worst_sentences(scores, predictions, mode=mode))
    return "".join(parts)


def _worst_sentences(scores: dict[str, Any] | None, predictions: Path, *, mode: str) -> str:
    from runassist.metrics.entities import extract_entities, worst_sentences

    try:
        words, gold, pred = read_conll_predictions(predictions)
        worst = worst_sentences(gold, pred, mode=mode, k=WORST_SENTENCES)
    except (OSError, ValueError) as exc:
        return missing(f"{predictions.name} could not be read ({exc}).")
    if not worst:
        return '<p>Every test sentence is right: no errors to show.</p>'
    per_type = (scores or {}).get("per_type") or {}
    types = sorted({ent[0] for tags in (*gold, *pred) for ent in extract_entities(tags, mode=mode)} | set(per_type))
    colours = label_colours(types)
    legend = " ".join(f'<span class="ent" style="{_ent_style(colours[t])}">{e(t)}</span>' for t in types)
    out = [f'<p class="small">The {len(worst)} test sentences with most entity errors ({e(mode)} reading). '
           f'Solid outline: an entity the other side also has; <span class="ent wrong">dashed red</span>: '
           f'no exact match on the other side. Types: {legend}</p>']
    for row in worst:
        i = row["index"]
        g_ents = extract_entities(gold[i], mode=mode)
        p_ents = extract_entities(pred[i], mode=mode)
        kinds = ", ".join(f"{row[k]} {k}" for k in ERROR_HELP if row.get(k))
        gold_line = _highlight(words[i], g_ents, set(p_ents), colours)
        pred_line = _highlight(words[i], p_ents, set(g_ents), colours)
        out.append(f'<div class="sent"><div class="sent-head">sentence {i + 1} · {row["errors"]} '
                   f'error{"s" if row["errors"] != 1 else ""}: {e(kinds)}</div>'
                   f'<div class="line"><span class="side">gold</span>{gold_line}</div>'
                   f'<div class="line"><span class="side">pred</span>{pred_line}</div></div>')
    return "".join(out)


def _ent_style(colour: str) -> str:
    return f"background:{colour}2e;border-color:{colour}"


def _highlight(words: Sequence[str], entities: Sequence[tuple[str, int, int]], other: set,
               colours: dict[str, str]) -> str:
    """The sentence with each entity as a coloured span labelled with its type."""
    starts = {start: (type_, end) for type_, start, end in entities}
    out, i = [], 0
    while i < len(words):
        if i in starts and starts[i][1] > i:
            type_, end = starts[i]
            wrong = "" if (type_, i, end) in other else " wrong"
            text = " ".join(e(w) for w in words[i:end])
            out.append(f'<span class="ent{wrong}" style="{_ent_style(colours.get(type_, plots.ACCENT))}">'
                       f'{text}<sub>{e(type_)}</sub></span>')
            i = end
        else:
            out.append(e(words[i]))
            i += 1
    return " ".join(out)
