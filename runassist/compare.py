"""compare_runs(a, b): two trained runs on the same test items, per label and overall, with a
paired bootstrap telling whether B's edge over A is more than the luck of the test sample.

Both runs predict the very same examples (read once, with run A's data settings) and are
scored on the same label list, so their numbers differ only by their models. The overall
metrics get a paired bootstrap over test items (each task says how: ``task.compare``); see
runassist.metrics.bootstrap for the definitions of the CI and p.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runassist.atomic import read_json
from runassist import runs
from runassist.errors import DataError, RunassistError
from runassist.tasks import make_task

METRIC_NAMES = {"f1": "F1", "accuracy": "accuracy", "macro_f1": "macro F1", "micro_f1": "micro F1"}


def compare_runs(a: str | Path, b: str | Path, *, data: str | None = None, n: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Score runs A and B on the same data (default: A's test split; ``dev``/``test``/an alias/a
    path as in ``runassist evaluate --data``) and compare them. JSON-ready.

    Returns ``task, data, n_items, a, b`` (run, name, model, labels), ``headline`` (the metric
    the verdict is about), ``overall`` ({metric: paired bootstrap result + ``sentence``}),
    ``within_noise`` and ``verdict`` for the headline, ``scores`` ({"a", "b"}: every numeric
    score), ``per_label`` (one row per label: support, a/b precision/recall/f1, diff = b - a),
    ``agreement`` (share of items both runs predict identically), ``notes``, and what the task
    adds (``task.compare``).
    """
    from runassist.evaluate import resolve_split
    from runassist.predict import Predictor

    if n < 1:
        raise RunassistError(f"--samples {n}: need at least 1 bootstrap resample (1000 is usual)")
    info_a, info_b = _run_info(Path(a)), _run_info(Path(b))
    if info_a["task"] != info_b["task"]:
        raise RunassistError(f"cannot compare a {info_a['task']} run ({info_a['name']}) with a {info_b['task']} run "
                             f"({info_b['name']}): compare runs of the same task")
    # What can be refused is refused before a model is loaded.
    task = info_a["task_object"]
    try:
        notes = task.comparable(info_b["task_object"].task_cfg)
    except RunassistError as exc:
        raise RunassistError(f"{info_a['name']} and {info_b['name']}: {exc}") from None
    notes += _label_notes(task, info_a, info_b)
    pred_a = Predictor.from_run(info_a["path"])
    pred_b = Predictor.from_run(info_b["path"])
    task = pred_a.task
    spec = resolve_split(pred_a.cfg, data)
    examples = task.read(spec)
    if not examples:
        raise DataError(spec, None, "no examples to compare on")
    # Predict without the gold labels: an encoder refuses labels it never trained on, and
    # which labels a run knows is part of what is being compared.
    bare = [task.unlabelled(ex) for ex in examples]
    out_a = pred_a.predict_examples(bare)
    out_b = pred_b.predict_examples(bare)
    labels = None
    if pred_a.state.labels is not None or pred_b.state.labels is not None:
        labels = list(dict.fromkeys([*(pred_a.state.labels or []), *(pred_b.state.labels or [])]))
    known = set(labels or ())
    unknown = sorted({u for ex in examples for u in task.label_units(ex)} - task.label_names(labels) - known)
    if unknown and labels is not None:
        notes.append(f"labels in the data neither run was trained on: {', '.join(unknown)}")
    body = task.compare(examples, out_a, out_b, labels=labels, n=n, seed=seed, notes=notes)
    for metric, boot in body["overall"].items():
        boot["higher_is_better"] = not (metric == task.headline and task.headline_mode == "min")
        boot["sentence"] = verdict(boot, metric, higher_is_better=boot["higher_is_better"])
    headline = body["headline"]
    return {
        "task": task.name,
        "data": spec,
        "n_items": len(examples),
        "a": _public(info_a),
        "b": _public(info_b),
        **body,
        "within_noise": body["overall"][headline]["within_noise"],
        "verdict": body["overall"][headline]["sentence"],
        "notes": notes,
    }


# -- what each run is ---------------------------------------------------------------

def _run_info(run: Path) -> dict[str, Any]:
    run = runs.require(run, "config.yaml", "model/task.json")
    cfg = runs.load_config(run)
    saved = read_json(run / "model" / "task.json")
    labels = saved.get("labels")
    return {"path": run, "name": run.name, "model": cfg.model.source, "task": cfg.task.name,
            "task_object": make_task(cfg), "labels": list(labels) if labels is not None else None}


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {"run": str(info["path"]), "name": info["name"], "model": info["model"], "labels": info["labels"]}


def _label_notes(task: Any, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Refuse runs that share no label; note the labels only one of them knows."""
    names_a, names_b = task.label_names(a["labels"]), task.label_names(b["labels"])
    what = f"{task.label_word}s"
    if names_a and names_b and not names_a & names_b:
        raise RunassistError(f"cannot compare {a['name']} and {b['name']}: they share no {what} "
                             f"(A: {', '.join(sorted(names_a))}; B: {', '.join(sorted(names_b))}); "
                             "they were trained for different things")
    notes = []
    for mine, theirs, who, other in ((names_a, names_b, "A", "B"), (names_b, names_a, "B", "A")):
        only = sorted(mine - theirs)
        if only:
            notes.append(f"{what} only {who} was trained on: {', '.join(only)}; "
                         f"{other} can never predict them, which counts against {other}")
    return notes


# -- words -------------------------------------------------------------------------

def _f3(value: float) -> str:
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _p(value: float) -> str:
    return "p<0.001" if value < 0.001 else f"p={value:.3f}"


def verdict(boot: dict[str, Any], metric: str, *, higher_is_better: bool = True) -> str:
    """One plain sentence for a paired bootstrap result of ``metric`` (B minus A)."""
    name = METRIC_NAMES.get(metric, metric)
    diff, low, high = boot["diff"], boot["ci_low"], boot["ci_high"]
    if boot["within_noise"] or diff == 0:
        return f"the difference ({_f3(diff)}) is within noise: 95% CI {_f3(low)}..{_f3(high)}"
    if not higher_is_better:  # lower wins: the gap is stated as worse minus better, so it is positive
        if diff < 0:
            return (f"B is better than A by {_f3(-diff)} lower {name} (95% CI {_f3(-high)}..{_f3(-low)}, "
                    f"{_p(boot['p_value'])})")
        return f"A is better than B by {_f3(diff)} lower {name} (95% CI {_f3(low)}..{_f3(high)}, {_p(boot['p_value'])})"
    if diff > 0:
        return f"B is better than A by {_f3(diff)} {name} (95% CI {_f3(low)}..{_f3(high)}, {_p(boot['p_value'])})"
    # A ahead: state the gap as A minus B, so the interval is positive as well
    return f"A is better than B by {_f3(-diff)} {name} (95% CI {_f3(-high)}..{_f3(-low)}, {_p(boot['p_value'])})"


def render_comparison(result: dict[str, Any], console: Any) -> None:
    """Print a comparison as rich tables: runs, overall scores with CIs, per label, verdict."""
    from rich.markup import escape
    from rich.table import Table

    # Run names, labels and notes are user text: escape them, or '[/x]' in a label breaks the markup.
    a, b = result["a"], result["b"]
    console.print(f"[bold]A[/] {escape(a['name'])} [dim]({escape(a['model'])})[/]\n[bold]B[/] {escape(b['name'])} "
                  f"[dim]({escape(b['model'])})[/]\non {escape(str(result['data']))} ({result['n_items']} examples"
                  f"; {100 * result.get('agreement', 0):.0f}% predicted identically)", highlight=False)

    overall = Table(title="overall (paired bootstrap over test items)")
    for col, justify in (("metric", "left"), ("A", "right"), ("B", "right"), ("B - A", "right"),
                         ("95% CI", "right"), ("p", "right"), ("", "left")):
        overall.add_column(col, justify=justify)
    boots = result["overall"]
    for metric, value_a in result["scores"]["a"].items():
        value_b = result["scores"]["b"].get(metric)
        if value_b is None:
            continue
        boot = boots.get(metric)
        diff = value_b - value_a
        if boot is None:
            overall.add_row(metric, f"{value_a:.4f}", f"{value_b:.4f}", _signed(diff), "", "", "")
            continue
        b_ahead = diff > 0 if boot.get("higher_is_better", True) else diff < 0
        mark = "within noise" if boot["within_noise"] else ("[green]B better[/]" if b_ahead else "[red]A better[/]")
        name = f"[bold]{metric}[/]" if metric == result["headline"] else metric
        overall.add_row(name, f"{value_a:.4f}", f"{value_b:.4f}", _signed(diff),
                        f"{_f3(boot['ci_low'])}..{_f3(boot['ci_high'])}", _p(boot["p_value"]).removeprefix("p="),
                        mark)
    console.print(overall)

    per = Table(title="per label")
    per.add_column("label")
    per.add_column("support", justify="right")
    for col in ("P A", "P B", "R A", "R B", "F1 A", "F1 B", "F1 B - A"):
        per.add_column(col, justify="right")
    for row in result["per_label"]:
        ra, rb, d = row["a"], row["b"], row["diff"]
        per.add_row(escape(str(row["label"])), str(row["support"]), f"{ra['precision']:.3f}", f"{rb['precision']:.3f}",
                    f"{ra['recall']:.3f}", f"{rb['recall']:.3f}", f"{ra['f1']:.3f}", f"{rb['f1']:.3f}",
                    _signed(d["f1"], digits=3))
    console.print(per)
    for note in result.get("notes") or []:
        console.print(f"[yellow]note[/] {escape(note)}", highlight=False)
    console.print(f"[bold]{escape(result['verdict'])}[/]", highlight=False)


def _signed(value: float, *, digits: int = 4) -> str:
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return f"[green]{text}[/]" if value > 0 else f"[red]{text}[/]"
