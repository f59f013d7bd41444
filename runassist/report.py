"""write_report(run) -> RUN/report.html: one self-contained page about a run.

The page holds the learning curves, the test scores per label, the errors (the task's own
section: for NER error kinds and the worst sentences, gold beside predicted; for
classification the confusion matrix and the most confident mistakes), the environment and
the resolved config. Charts are
PNGs written to RUN/plots/ and embedded as data URIs, styles are inline: the file opens
anywhere, offline, and can be mailed as it is. Nothing is fetched from the network.

Every piece is optional: a run without dev, without test, or killed before its summary
still gets a report that says what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runassist import plots, runs
from runassist.atomic import atomic_write, read_json
from runassist.errors import RunassistError
from runassist.htmlparts import bar as _bar, e as _e, img as _img, label_colours, missing as _missing, num as _num, \
    table as _table



@dataclass
class _Run:
    """Everything the report reads from the run folder, each piece None when absent."""

    path: Path
    config_text: str | None = None
    cfg: Any = None
    task: Any = None  # the run's task (tasks.make_task), for its report hooks; None without a config
    summary: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    split: str | None = None  # name of the evaluated split shown (eval/<split>.json)
    scores: dict[str, Any] | None = None
    predictions: Path | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        if self.task is not None:
            return self.task.title
        return str(self.summary.get("task") or "?")

    @property
    def metric(self) -> str:
        best = self.summary.get("best") or {}
        if best.get("metric"):
            return str(best["metric"])
        if self.cfg is not None and self.cfg.train.early_stopping and self.cfg.train.early_stopping.metric:
            return self.cfg.train.early_stopping.metric
        return self.task.headline if self.task is not None else "f1"


def write_report(run: str | Path, *, output: str | Path | None = None) -> Path:
    """Write the HTML report of RUN (default RUN/report.html) and the PNGs in RUN/plots/."""
    run = Path(run)
    if not run.is_dir():
        raise RunassistError(f"{run}: no such run folder")
    info = _load(run)
    images = _draw(info)
    page = _page(info, images)
    path = Path(output) if output is not None else run / "report.html"
    atomic_write(path, page)
    return path


# -- reading the run folder ----------------------------------------------------

def _read_json(path: Path, info: _Run, what: str) -> Any:
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        info.missing.append(f"{path.name} could not be read ({exc}); {what} left out")
        return None


def _load(run: Path) -> _Run:
    info = _Run(path=run)
    config_path = run / "config.yaml"
    if config_path.exists():
        info.config_text = config_path.read_text(encoding="utf-8")
        try:
            from runassist.tasks import make_task

            info.cfg = runs.load_config(run)
            info.task = make_task(info.cfg)
        except RunassistError as exc:
            info.missing.append(f"config.yaml is not a valid config ({exc})")
    else:
        info.missing.append("config.yaml is missing: the resolved config is not shown")
    info.summary = _read_json(run / "summary.json", info, "the run summary") or {}
    if not info.summary:
        info.missing.append("summary.json is missing: training did not start or was killed early")
    elif runs.live_status(info.summary) == "running":
        info.missing.append("the run is still running: results are partial")
    elif runs.live_status(info.summary) == "interrupted":
        info.summary = {**info.summary, "status": "interrupted"}
        info.missing.append(f"the run was interrupted (its process is gone): results are partial; continue it with "
                            f"`runassist train --resume {run}`")
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
            ext = info.task.prediction_suffix if info.task is not None else ".jsonl"
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
    extra = info.task.curve_extras if info.task is not None else ()
    per_label = _per_label(info.scores)
    charts = {
        "loss.png": lambda: plots.line_chart(*zip(*loss), title="train loss", ylabel="loss", smooth=True,
                                             log_y=True) if loss else None,
        "dev_metric.png": lambda: plots.dev_chart(eval_rows, info.metric, best_step=best_step, extra=extra),
        "lr.png": lambda: plots.line_chart(*zip(*lr), title="learning rate", ylabel="lr") if lr else None,
        "per_label_f1.png": lambda: plots.per_label_chart(per_label, colours=label_colours(per_label)),
    }
    if info.task is not None and info.scores is not None:
        charts.update(info.task.report_charts(info.scores))
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


# -- HTML --------------------------------------------------------------------

def _page(info: _Run, images: dict[str, bytes]) -> str:
    sections = [_header(info), _curves(info, images), _test(info, images), _errors(info, images),
                _details(info), _environment(info), _config(info)]
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
        ("task", info.title),
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
        colours = label_colours(list(per))
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
    elif not info.labels:  # a task without a label set (QA, generation): nothing per label to show
        return f"<section><h2>{title}</h2>{headline}</section>"
    else:
        body = _missing("No per-label scores: eval/<split>.json is missing; run `runassist evaluate RUN`.")
    return f"<section><h2>{title}</h2>{headline}<h3>Per label</h3>{body}</section>"


def _errors(info: _Run, images: dict[str, bytes]) -> str:
    body = info.task.report_errors(info.scores, info.predictions, images) if info.task is not None else ""
    return f"<section><h2>Errors</h2>{body}</section>" if body else ""


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
                f"{cpu.get('busy_cores', '?')} held by other processes at the start, "
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
