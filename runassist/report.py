"""write_report(run) -> RUN/report.html: one self-contained page about a run.

The page holds the learning curves, the test scores per label, the errors (NER: error
kinds and the worst sentences, gold beside predicted; classification: the confusion matrix
and the most confident mistakes), the environment and the resolved config. Charts are
PNGs written to RUN/plots/ and embedded as data URIs, styles are inline: the file opens
anywhere, offline, and can be mailed as it is. Nothing is fetched from the network.

Every piece is optional: a run without dev, without test, or killed before its summary
still gets a report that says what is missing.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from runassist import plots, runs
from runassist.data.io import split_lines
from runassist.errors import RunassistError

WORST_SENTENCES = 6
CONFIDENT_MISTAKES = 10
ERROR_HELP = {
    "type": "right span, wrong type",
    "boundary": "right type, overlapping but different span",
    "boundary_and_type": "overlapping span, wrong type",
    "missed": "gold entity no prediction touches",
    "spurious": "prediction that touches no gold entity",
}


@dataclass
class _Run:
    """Everything the report reads from the run folder, each piece None when absent."""

    path: Path
    config_text: str | None = None
    cfg: Any = None
    summary: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    split: str | None = None  # name of the evaluated split shown (eval/<split>.json)
    scores: dict[str, Any] | None = None
    predictions: Path | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        if self.cfg is not None:
            return self.cfg.task.name
        return str(self.summary.get("task") or "?")

    @property
    def multi_label(self) -> bool:
        return bool(self.cfg is not None and self.cfg.task.multi_label)

    @property
    def metric(self) -> str:
        best = self.summary.get("best") or {}
        if best.get("metric"):
            return str(best["metric"])
        if self.cfg is not None and self.cfg.train.early_stopping and self.cfg.train.early_stopping.metric:
            return self.cfg.train.early_stopping.metric
        if self.task == "classify":
            return "micro_f1" if self.multi_label else "accuracy"
        return "f1"


def write_report(run: str | Path, *, output: str | Path | None = None) -> Path:
    """Write the HTML report of RUN (default RUN/report.html) and the PNGs in RUN/plots/."""
    run = Path(run)
    if not run.is_dir():
        raise RunassistError(f"{run}: no such run folder")
    info = _load(run)
    images = _draw(info)
    page = _page(info, images)
    path = Path(output) if output is not None else run / "report.html"
    runs.atomic_write(path, page)
    return path


# -- reading the run folder ----------------------------------------------------

def _read_json(path: Path, info: _Run, what: str) -> Any:
    if not path.exists():
        return None
    try:
        return runs.read_json(path)
    except (OSError, ValueError) as exc:
        info.missing.append(f"{path.name} could not be read ({exc}); {what} left out")
        return None


def _load(run: Path) -> _Run:
    info = _Run(path=run)
    config_path = run / "config.yaml"
    if config_path.exists():
        info.config_text = config_path.read_text(encoding="utf-8")
        try:
            info.cfg = runs.load_config(run)
        except RunassistError as exc:
            info.missing.append(f"config.yaml is not a valid config ({exc})")
    else:
        info.missing.append("config.yaml is missing: the resolved config is not shown")
    info.summary = _read_json(run / "summary.json", info, "the run summary") or {}
    if not info.summary:
        info.missing.append("summary.json is missing: training did not start or was killed early")
    elif info.summary.get("status") == "running":
        info.missing.append("summary.json says the run is still running (or was killed): results are partial")
    info.env = _read_json(run / "env.json", info, "the environment")
    if info.env is None:
        info.missing.append("env.json is missing: the environment is not shown")
    labels = _read_json(run / "labels.json", info, "the label list") or {}
    info.labels = list(labels.get("labels") or [])
    info.metrics = runs.read_metrics(run)
    if not info.metrics:
        info.missing.append("metrics.jsonl is missing or empty: no learning curves")
    elif not any(r.get("kind") == "eval" for r in info.metrics):
        info.missing.append("no dev evaluations in metrics.jsonl (no data.dev): no dev curve")
    _find_eval(info)
    return info


def _find_eval(info: _Run) -> None:
    folder = info.path / "eval"
    names = []
    if info.cfg is not None and info.cfg.data.test:
        names.append(runs.split_name(info.cfg.data.test))
    names.append("test")
    for name in dict.fromkeys(names):
        scores = _read_json(folder / f"{name}.json", info, f"eval/{name}.json")
        if isinstance(scores, dict):
            info.split, info.scores = name, scores
            ext = ".conll" if info.task == "ner" else ".jsonl"
            if (folder / f"{name}{ext}").exists():
                info.predictions = folder / f"{name}{ext}"
            else:
                info.missing.append(f"eval/{name}{ext} is missing: no example-level errors")
            return
    if info.summary.get("test"):
        info.split = "test"
        info.scores = dict(info.summary["test"])
        info.missing.append("eval/test.json is missing: only the headline test scores (from summary.json) "
                            "are shown, no per-label table")
    elif info.cfg is not None and not info.cfg.data.test:
        info.missing.append("no test split (data.test is not set): no test scores; "
                            "score one with `runassist evaluate RUN --data PATH`")
    else:
        info.missing.append("no test scores: the run has not been evaluated on its test split yet")


# -- charts ------------------------------------------------------------------

def _draw(info: _Run) -> dict[str, bytes]:
    train_rows = [r for r in info.metrics if r.get("kind") == "train" and isinstance(r.get("step"), (int, float))]
    eval_rows = [r for r in info.metrics if r.get("kind") == "eval" and isinstance(r.get("step"), (int, float))]
    loss = [(r["step"], r["loss"]) for r in train_rows if isinstance(r.get("loss"), (int, float))]
    lr = [(r["step"], r["lr"]) for r in train_rows if isinstance(r.get("lr"), (int, float))]
    best_step = (info.summary.get("best") or {}).get("step")
    extra = ("precision", "recall") if info.task == "ner" else ("macro_f1",)
    per_label = _per_label(info.scores)
    colours = _type_colours(per_label) if info.task == "ner" else None
    confusion = (info.scores or {}).get("confusion")
    charts = {
        "loss.png": lambda: plots.line_chart(*zip(*loss), title="train loss", ylabel="loss", smooth=True,
                                             log_y=True) if loss else None,
        "dev_metric.png": lambda: plots.dev_chart(eval_rows, info.metric, best_step=best_step, extra=extra),
        "lr.png": lambda: plots.line_chart(*zip(*lr), title="learning rate", ylabel="lr") if lr else None,
        "per_label_f1.png": lambda: plots.per_label_chart(per_label, colours=colours),
        "confusion.png": lambda: (plots.confusion_chart(confusion.get("labels") or [], confusion.get("matrix") or [])
                                  if isinstance(confusion, dict) else None),
    }
    images: dict[str, bytes] = {}
    folder = info.path / "plots"
    for name, draw in charts.items():
        try:
            data = draw()
        except Exception as exc:  # noqa: BLE001 -- a chart that fails must not cost the rest of the report
            info.missing.append(f"plots/{name} could not be drawn ({type(exc).__name__}: {exc})")
            data = None
        if data:
            plots.write_png(folder / name, data)
            images[name] = data
        else:  # an old chart of this name would no longer match the report
            (folder / name).unlink(missing_ok=True)
    return images


def _per_label(scores: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    per = (scores or {}).get("per_type") or (scores or {}).get("per_class") or {}
    return {str(k): v for k, v in per.items() if isinstance(v, dict)}


def _type_colours(types: Sequence[str]) -> dict[str, str]:
    return {t: plots.colour_for(i) for i, t in enumerate(sorted(types))}


# -- HTML --------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "–" if value is None else _e(value)


def _img(images: dict[str, bytes], name: str, alt: str) -> str:
    data = images.get(name)
    if not data:
        return ""
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>plots/{_e(name)}</figcaption></figure>")


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """Cells are HTML already (callers escape); header names are escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bar(value: float, colour: str = plots.ACCENT) -> str:
    width = max(0.0, min(1.0, float(value))) * 100
    return f'<span class="bar"><span style="width:{width:.1f}%;background:{colour}"></span></span>'


def _page(info: _Run, images: dict[str, bytes]) -> str:
    sections = [_header(info), _curves(info, images), _test(info, images)]
    if info.task == "ner":
        sections.append(_ner_errors(info))
    elif info.task == "classify":
        sections.append(_classify_errors(info, images))
    sections += [_details(info), _environment(info), _config(info)]
    title = f"runassist report: {info.path.name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
            + "".join(s for s in sections if s) + "</main></body></html>\n")


def _header(info: _Run) -> str:
    s = info.summary
    best = s.get("best") or {}
    test = info.scores or s.get("test") or {}
    metric = info.metric
    cards = [
        ("task", info.task + (" (multi-label)" if info.multi_label else "")),
        (f"best dev {metric}", f"{_num(best.get('value'))}" + (f" <small>at step {_num(best.get('step'))}</small>"
                                                                if best.get("step") is not None else "")),
        (f"test {metric}" + (f" ({info.split})" if info.split and info.split != "test" else ""),
         _num(test.get(metric))),
        ("steps", f"{_num(s.get('steps'))} <small>of {_num(s.get('total_steps'))}</small>"
         if s.get("total_steps") else _num(s.get("steps"))),
        ("train time", f"{_num(s.get('train_seconds'), 1)} s" if s.get("train_seconds") is not None else "–"),
        ("tokens/s", _num(s.get("tokens_per_second"), 0) if s.get("tokens_per_second") is not None else "–"),
    ]
    model = s.get("model") or (info.cfg.model.source if info.cfg is not None else "?")
    status = s.get("status", "no summary")
    parts = [f"<header><h1>{_e(info.path.name)}</h1>",
             f'<p class="sub"><span class="pill pill-{_e(status)}">{_e(status)}</span> '
             f"model <code>{_e(model)}</code>"
             + (f" · {_e(s['stopped_because'])}" if s.get("stopped_because") else "") + "</p>",
             '<div class="cards">' + "".join(f'<div class="card"><div class="k">{_e(k)}</div>'
                                             f'<div class="v">{v}</div></div>' for k, v in cards) + "</div>"]
    if info.missing:
        parts.append('<div class="notes"><b>Missing from this run</b><ul>'
                     + "".join(f"<li>{_e(m)}</li>" for m in info.missing) + "</ul></div>")
    parts.append("</header>")
    return "".join(parts)


def _curves(info: _Run, images: dict[str, bytes]) -> str:
    figures = [_img(images, "loss.png", "train loss by step"), _img(images, "dev_metric.png",
                                                                     f"dev {info.metric} by step"),
               _img(images, "lr.png", "learning rate by step")]
    shown = [f for f in figures if f]
    body = f'<div class="grid3">{"".join(shown)}</div>' if shown else ""
    if not images.get("loss.png"):
        body += _missing("No training loss logged (metrics.jsonl has no train rows).")
    if not images.get("dev_metric.png"):
        body += _missing("No dev curve: the run has no dev split, or no evaluation ran.")
    return f'<section><h2>Learning curves</h2>{body}</section>'


def _test(info: _Run, images: dict[str, bytes]) -> str:
    title = f"Test scores ({_e(info.split)})" if info.split else "Test scores"
    if info.scores is None:
        return f"<section><h2>{title}</h2>{_missing('No test scores for this run.')}</section>"
    flat = {k: v for k, v in info.scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    headline = _table(list(flat), [[(f"<b>{_num(v)}</b>" if k == info.metric else _num(v)) for k, v in flat.items()]],
                      cls="scores")
    counts = info.scores.get("counts")
    if isinstance(counts, dict):
        entities = ", ".join(f"{_num(counts[k])} {k}" for k in ("gold", "predicted", "correct") if k in counts)
        words = f"; {_num(counts['words'])} words" if "words" in counts else ""
        headline += f'<p class="small">entities: {entities}{words}</p>'
    per = _per_label(info.scores)
    if per:
        colours = _type_colours(per) if info.task == "ner" else {}
        extra_cols = [c for c in ("predicted", "correct") if any(c in row for row in per.values())]
        rows = []
        for label, row in per.items():
            swatch = (f'<span class="swatch" style="background:{colours[label]}"></span>' if label in colours else "")
            f1 = float(row.get("f1", 0.0))
            rows.append([f"{swatch}<b>{_e(label)}</b>", _num(row.get("precision"), 3), _num(row.get("recall"), 3),
                         f"{_num(row.get('f1'), 3)} {_bar(f1, colours.get(label, plots.ACCENT))}",
                         _num(row.get("support")), *(_num(row.get(c)) for c in extra_cols)])
        table = _table(["label", "precision", "recall", "f1", "support", *extra_cols], rows, cls="per-label")
        chart = _img(images, "per_label_f1.png", "test F1 per label")
        body = f'<div class="split"><div>{table}</div><div>{chart}</div></div>'
    else:
        body = _missing("No per-label scores: eval/<split>.json is missing; run `runassist evaluate RUN`.")
    return f"<section><h2>{title}</h2>{headline}<h3>Per label</h3>{body}</section>"


# -- NER errors ----------------------------------------------------------------

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


def _ner_errors(info: _Run) -> str:
    parts = ['<section><h2>Errors</h2>']
    errors = (info.scores or {}).get("errors")
    if isinstance(errors, dict):
        total = errors.get("total") or sum(v for k, v in errors.items() if k in ERROR_HELP) or 0
        rows = []
        for kind, why in ERROR_HELP.items():
            count = int(errors.get(kind, 0))
            share = count / total if total else 0.0
            rows.append([f"<b>{_e(kind)}</b>", _e(why), _num(count),
                         f"{100 * share:.0f}% {_bar(share, '#d62728')}"])
        rows.append(["<b>total</b>", "", _num(total), ""])
        parts.append(_table(["kind", "meaning", "count", "share"], rows, cls="errors"))
    else:
        parts.append(_missing("No error breakdown: eval/<split>.json has no 'errors'."))
    parts.append(f"<h3>Worst sentences</h3>")
    if info.predictions is None:
        parts.append(_missing("No predictions file (eval/<split>.conll): worst sentences cannot be shown."))
    else:
        parts.append(_worst_sentences(info))
    parts.append("</section>")
    return "".join(parts)


def _worst_sentences(info: _Run) -> str:
    from runassist.metrics.entities import extract_entities, worst_sentences

    mode = info.cfg.task.scoring if info.cfg is not None else "conlleval"
    try:
        words, gold, pred = read_conll_predictions(info.predictions)
        worst = worst_sentences(gold, pred, mode=mode, k=WORST_SENTENCES)
    except (OSError, ValueError) as exc:
        return _missing(f"{info.predictions.name} could not be read ({exc}).")
    if not worst:
        return '<p>Every test sentence is right: no errors to show.</p>'
    types = sorted({e[0] for tags in (*gold, *pred) for e in extract_entities(tags, mode=mode)}
                   | set(_per_label(info.scores)))
    colours = _type_colours(types)
    legend = " ".join(f'<span class="ent" style="{_ent_style(colours[t])}">{_e(t)}</span>' for t in types)
    out = [f'<p class="small">The {len(worst)} test sentences with most entity errors ({_e(mode)} reading). '
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
                   f'error{"s" if row["errors"] != 1 else ""}: {_e(kinds)}</div>'
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
            text = " ".join(_e(w) for w in words[i:end])
            out.append(f'<span class="ent{wrong}" style="{_ent_style(colours.get(type_, plots.ACCENT))}">'
                       f'{text}<sub>{_e(type_)}</sub></span>')
            i = end
        else:
            out.append(_e(words[i]))
            i += 1
    return " ".join(out)


# -- classification errors -------------------------------------------------------

def _confidence(row: dict[str, Any]) -> float:
    """How sure the model was of its mistake: the highest probability among wrongly added
    labels, or one minus the lowest among wrongly left-out ones."""
    probs = row.get("probs") or {}
    gold, predicted = set(row.get("gold") or ()), set(row.get("labels") or ())
    values = [float(probs.get(label, 0.0)) for label in predicted - gold]
    values += [1.0 - float(probs.get(label, 0.0)) for label in gold - predicted]
    return max(values, default=0.0)


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


def _classify_errors(info: _Run, images: dict[str, bytes]) -> str:
    parts = ["<section><h2>Errors</h2>"]
    if images.get("confusion.png"):
        parts.append(f'<div class="narrow">{_img(images, "confusion.png", "test confusion matrix")}</div>')
    elif info.scores is not None and not info.multi_label:
        parts.append(_missing("No confusion matrix in the test scores."))
    parts.append("<h3>Most confident mistakes</h3>")
    if info.predictions is None:
        parts.append(_missing("No predictions file (eval/<split>.jsonl): mistakes cannot be shown."))
        parts.append("</section>")
        return "".join(parts)
    try:
        n, wrong = read_classify_mistakes(info.predictions)
    except (OSError, ValueError) as exc:
        parts.append(_missing(f"{info.predictions.name} could not be read ({exc})."))
        parts.append("</section>")
        return "".join(parts)
    if not wrong:
        parts.append(f"<p>All {n} test examples are right.</p>")
    else:
        rows = []
        for r in wrong[:CONFIDENT_MISTAKES]:
            text = str(r.get("text", ""))
            if r.get("text_pair") is not None:
                text += " ‖ " + str(r["text_pair"])
            if len(text) > 300:
                text = text[:297] + "…"
            probs = r.get("probs") or {}
            top = ", ".join(f"{_e(k)} {float(v):.2f}" for k, v in list(probs.items())[:3])
            rows.append([_e(text), _e(", ".join(r.get("gold") or []) or "(none)"),
                         '<span class="bad">' + _e(", ".join(r.get("labels") or []) or "(none)") + "</span>",
                         _num(r["confidence"], 2), f'<span class="small">{top}</span>'])
        parts.append(f'<p class="small">{len(wrong)} of {n} test examples are wrong; '
                     f'the {len(rows)} the model was surest of:</p>')
        parts.append(_table(["text", "gold", "predicted", "confidence", "top probabilities"], rows,
                            cls="mistakes"))
    parts.append("</section>")
    return "".join(parts)


# -- run details, environment, config -----------------------------------------------

def _details(info: _Run) -> str:
    s = info.summary
    if not s:
        return ""
    keys = ("train_examples", "steps", "total_steps", "tokens", "tokens_per_second", "padding_fraction",
            "peak_memory_mb", "parameters", "trainable_parameters", "frozen_parameters", "threads")
    rows = [[f"<b>{_e(k)}</b>", _num(s[k], 2 if isinstance(s[k], float) else 4)] for k in keys if k in s]
    for key in ("engine", "choices"):
        if isinstance(s.get(key), dict):
            rows.append([f"<b>{_e(key)}</b>", _e(", ".join(f"{k}={v}" for k, v in s[key].items()))])
    if s.get("extras"):
        rows.append(["<b>extras</b>", f"<code>{_e(json.dumps(s['extras'], ensure_ascii=False)[:400])}</code>"])
    return f'<section><h2>Run</h2>{_table(["", ""], rows, cls="kv")}</section>'


def _environment(info: _Run) -> str:
    if info.env is None:
        return f'<section><h2>Environment</h2>{_missing("env.json is missing.")}</section>'
    facts = info.env.get("facts") or {}
    rec = info.env.get("recommendations") or {}
    cpu = facts.get("cpu") or {}
    memory = facts.get("memory") or {}
    versions = facts.get("versions") or {}
    gpus = facts.get("gpus") or []
    rows = [
        ("collected", facts.get("collected_at")),
        ("python", f"{facts.get('python', '?')} on {facts.get('platform', '?')}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in versions.items() if v)),
        ("cpu", f"{cpu.get('model', '?')}: {cpu.get('cores_usable', '?')} usable cores, "
                f"bf16 fast {cpu.get('bf16_fast')}, 1-min load {cpu.get('load_1m')}"),
        ("memory", f"{_num(memory.get('available_mb'))} MB free of {_num(memory.get('total_mb'))} MB"),
        ("gpus", ", ".join(f"{g.get('name')} ({_num(g.get('memory_mb'))} MB)" for g in gpus) or "none"),
    ]
    table = _table(["", ""], [[f"<b>{_e(k)}</b>", _e(v)] for k, v in rows if v is not None], cls="kv")
    recs = ""
    if rec:
        chosen = ", ".join(f"{k} {rec[k]}" for k in ("device", "precision", "threads", "batch_size") if k in rec)
        notes = "".join(f"<li>{_e(n)}</li>" for n in rec.get("notes") or [])
        recs = f"<h3>Recommended settings</h3><p>{_e(chosen)}</p><ul class=\"small\">{notes}</ul>"
    return f"<section><h2>Environment</h2>{table}{recs}</section>"


def _config(info: _Run) -> str:
    if info.config_text is None:
        return f'<section><h2>Config</h2>{_missing("config.yaml is missing.")}</section>'
    return (f'<section><h2>Config</h2><p class="small">config.yaml, resolved: every key the run used, '
            f'defaults included.</p><pre>{_e(info.config_text)}</pre></section>')


_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#e3e6ec;--bg:#f6f7f9;--accent:#1f77b4}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
header h1{margin:0 0 4px;font-size:22px;word-break:break-all}
h2{font-size:17px;margin:0 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:18px 0 8px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0}
.sub{margin:0 0 14px;color:var(--muted)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:10px 12px;overflow:auto;
max-height:520px;margin:0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .k{font-size:11.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:20px;font-weight:600;margin-top:2px}
.card small,.small{font-size:12px;color:var(--muted);font-weight:normal}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e8eaef}
.pill-finished{background:#dff3e4;color:#17692f}.pill-failed,.pill-interrupted{background:#fde2e1;color:#9b1c1c}
.pill-running,.pill-stopped{background:#fff3cd;color:#7a5a00}
.notes{margin-top:12px;background:#fff8e1;border:1px solid #f0d98c;border-radius:8px;padding:8px 14px}
.notes ul{margin:4px 0 0;padding-left:20px}
.missing{color:#7a5a00;background:#fff8e1;border-left:3px solid #f0c36d;padding:6px 10px;margin:8px 0}
.grid3{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:12px}
.split{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:20px;align-items:start}
.narrow{max-width:460px}
figure{margin:0}figure img{width:100%;height:auto;display:block;border:1px solid var(--line);border-radius:6px}
figcaption{font-size:11px;color:var(--muted);margin-top:2px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:11.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em;font-weight:600}
table.scores td,table.scores th,table.per-label td:not(:first-child),table.per-label th:not(:first-child),
table.errors td:nth-child(3){text-align:right;font-variant-numeric:tabular-nums}
table.per-label td{white-space:nowrap}table.kv thead{display:none}
table.kv td:first-child{width:190px;white-space:nowrap}
table.mistakes td:first-child{width:55%}
.bar{display:inline-block;width:70px;height:8px;background:#eceef2;border-radius:4px;vertical-align:middle;
margin-left:6px;overflow:hidden}.bar span{display:block;height:100%}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.sent{border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:8px 0}
.sent-head{font-size:12px;color:var(--muted);margin-bottom:4px}
.line{line-height:2.1}.side{display:inline-block;width:44px;font-size:11px;color:var(--muted);
text-transform:uppercase}
.ent{border:1.5px solid;border-radius:4px;padding:1px 4px;white-space:nowrap}
.ent sub{font-size:9.5px;font-weight:700;margin-left:3px;vertical-align:baseline;opacity:.8}
.ent.wrong{border-style:dashed;border-color:#d62728!important}
.bad{color:#b42318;font-weight:600}
@media (max-width:820px){.split{grid-template-columns:1fr}}
"""
