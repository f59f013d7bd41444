"""compare_runs(a, b): two trained runs on the same test items, per label and overall, with a
paired bootstrap telling whether B's edge over A is more than the luck of the test sample.

Both runs predict the very same examples (read once, with run A's data settings) and are
scored on the same label list, so their numbers differ only by their models. The overall
metrics get a paired bootstrap over test items (sentences for NER, texts for
classification); see runassist.metrics.bootstrap for the definitions of the CI and p.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from runassist import runs
from runassist.errors import DataError, RunassistError

METRIC_NAMES = {"f1": "F1", "accuracy": "accuracy", "macro_f1": "macro F1", "micro_f1": "micro F1"}


def compare_runs(a: str | Path, b: str | Path, *, data: str | None = None, n: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Score runs A and B on the same data (default: A's test split; ``dev``/``test``/an alias/a
    path as in ``runassist evaluate --data``) and compare them. JSON-ready.

    Returns ``task, data, n_items, a, b`` (run, name, model, labels), ``headline`` (the metric
    the verdict is about), ``overall`` ({metric: paired bootstrap result + ``sentence``}),
    ``within_noise`` and ``verdict`` for the headline, ``scores`` ({"a", "b"}: every numeric
    score), ``per_label`` (one row per label: support, a/b precision/recall/f1, diff = b - a),
    ``agreement`` (share of items both runs predict identically) and ``notes``.
    """
    from runassist.evaluate import resolve_split
    from runassist.predict import Predictor

    if n < 1:
        raise RunassistError(f"--samples {n}: need at least 1 bootstrap resample (1000 is usual)")
    info_a, info_b = _run_info(Path(a)), _run_info(Path(b))
    notes = _check_comparable(info_a, info_b)
    pred_a = Predictor.from_run(info_a["path"])
    pred_b = Predictor.from_run(info_b["path"])
    spec = resolve_split(pred_a.cfg, data)
    task = pred_a.task
    examples = task.read(spec)
    if not examples:
        raise DataError(spec, None, "no examples to compare on")
    # Predict without the gold labels: an encoder refuses labels it never trained on, and
    # which labels a run knows is part of what is being compared.
    bare = [_unlabelled(ex) for ex in examples]
    out_a = pred_a.predict_examples(bare)
    out_b = pred_b.predict_examples(bare)
    if task.name == "ner":
        body = _compare_ner(pred_a, examples, out_a, out_b, n=n, seed=seed, notes=notes,
                            mode_b=pred_b.task.task_cfg.scoring)
    else:
        body = _compare_classify(pred_a, pred_b, examples, out_a, out_b, n=n, seed=seed, notes=notes)
    headline = body["headline"]
    result = {
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
    return result


# -- what each run is ---------------------------------------------------------------

def _run_info(run: Path) -> dict[str, Any]:
    run = runs.require(run, "config.yaml", "model/task.json")
    cfg = runs.load_config(run)
    saved = runs.read_json(run / "model" / "task.json")
    return {"path": run, "name": run.name, "model": cfg.model.source, "task": cfg.task.name,
            "multi_label": cfg.task.multi_label, "labels": list(saved.get("labels") or [])}


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {"run": str(info["path"]), "name": info["name"], "model": info["model"], "labels": info["labels"]}


def _label_names(info: dict[str, Any]) -> set[str]:
    """What a run can predict: entity types for NER (B-PER, I-PER -> PER), labels otherwise."""
    if info["task"] == "ner":
        return {label.split("-", 1)[1] if "-" in label else label for label in info["labels"] if label != "O"}
    return set(info["labels"])


def _check_comparable(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Refuse what cannot be compared; return notes on what can, with a caveat."""
    if a["task"] != b["task"]:
        raise RunassistError(f"cannot compare a {a['task']} run ({a['name']}) with a {b['task']} run "
                             f"({b['name']}): compare runs of the same task")
    if a["multi_label"] != b["multi_label"]:
        kinds = {True: "multi-label", False: "single-label"}
        raise RunassistError(f"cannot compare a {kinds[a['multi_label']]} run ({a['name']}) with a "
                             f"{kinds[b['multi_label']]} run ({b['name']}): their scores are different metrics")
    names_a, names_b = _label_names(a), _label_names(b)
    what = "entity types" if a["task"] == "ner" else "labels"
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


def _unlabelled(example: Any) -> Any:
    if hasattr(example, "tags"):
        return dataclasses.replace(example, tags=None)
    return dataclasses.replace(example, labels=())


# -- scoring -------------------------------------------------------------------

def _compare_ner(pred_a: Any, examples: Sequence[Any], out_a: Sequence[Any], out_b: Sequence[Any], *,
                 n: int, seed: int, notes: list[str], mode_b: str) -> dict[str, Any]:
    from runassist.metrics.bootstrap import compare_ner
    from runassist.metrics.entities import score_entities

    mode = pred_a.task.task_cfg.scoring
    if mode_b != mode:
        notes.append(f"A scores entities the {mode} way and B the {mode_b} way; both are scored the {mode} way here")
    gold = [list(ex.tags) for ex in examples]
    tags_a = [list(p.tags) for p in out_a]
    tags_b = [list(p.tags) for p in out_b]
    scores_a = score_entities(gold, tags_a, mode=mode)
    scores_b = score_entities(gold, tags_b, mode=mode)
    boot = compare_ner(gold, tags_a, tags_b, mode=mode, n=n, seed=seed)
    return {
        "mode": mode,
        "headline": "f1",
        "overall": {"f1": {**boot, "sentence": verdict(boot, "f1")}},
        "scores": {"a": _flat(scores_a), "b": _flat(scores_b)},
        "per_label": _per_label(scores_a["per_type"], scores_b["per_type"]),
        "errors": {"a": scores_a.get("errors"), "b": scores_b.get("errors")},
        "agreement": _agreement(tags_a, tags_b),
    }


def _compare_classify(pred_a: Any, pred_b: Any, examples: Sequence[Any], out_a: Sequence[Any],
                      out_b: Sequence[Any], *, n: int, seed: int, notes: list[str]) -> dict[str, Any]:
    from runassist.metrics.bootstrap import compare_classify
    from runassist.metrics.classification import score_multi, score_single

    multi = pred_a.task.multi_label
    gold_labels = [label for ex in examples for label in ex.labels]
    # One label list for both, so macro averages run over the same labels.
    labels = list(dict.fromkeys([*pred_a.state.labels, *pred_b.state.labels, *sorted(set(gold_labels))]))
    unknown = sorted(set(gold_labels) - set(pred_a.state.labels) - set(pred_b.state.labels))
    if unknown:
        notes.append(f"labels in the data neither run was trained on: {', '.join(unknown)}")
    if multi:
        gold: list[Any] = [list(ex.labels) for ex in examples]
        got_a: list[Any] = [list(p.labels) for p in out_a]
        got_b: list[Any] = [list(p.labels) for p in out_b]
        scores_a, scores_b = score_multi(gold, got_a, labels), score_multi(gold, got_b, labels)
        metrics, headline = ("micro_f1", "macro_f1"), "micro_f1"
    else:
        for ex in examples:
            if len(ex.labels) != 1:
                raise DataError(ex.source or "input", None,
                                f"comparing needs exactly one gold label per example, found {len(ex.labels)}")
        gold = [ex.labels[0] for ex in examples]
        got_a = [p.labels[0] for p in out_a]
        got_b = [p.labels[0] for p in out_b]
        scores_a, scores_b = score_single(gold, got_a, labels), score_single(gold, got_b, labels)
        metrics, headline = ("accuracy", "macro_f1"), "accuracy"
    overall = {}
    for metric in metrics:
        boot = compare_classify(gold, got_a, got_b, metric=metric, labels=labels, n=n, seed=seed)
        overall[metric] = {**boot, "sentence": verdict(boot, metric)}
    body: dict[str, Any] = {
        "headline": headline,
        "overall": overall,
        "scores": {"a": _flat(scores_a), "b": _flat(scores_b)},
        "per_label": _per_label(scores_a["per_class"], scores_b["per_class"]),
        "agreement": _agreement([sorted(x) if multi else x for x in got_a],
                                [sorted(x) if multi else x for x in got_b]),
    }
    if not multi:
        body["confusion"] = {"a": scores_a.get("confusion"), "b": scores_b.get("confusion")}
    return body


def _flat(scores: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _per_label(per_a: dict[str, dict[str, Any]], per_b: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
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


def _agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else 1.0


# -- words -------------------------------------------------------------------------

def _f3(value: float) -> str:
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _p(value: float) -> str:
    return "p<0.001" if value < 0.001 else f"p={value:.3f}"


def verdict(boot: dict[str, Any], metric: str) -> str:
    """One plain sentence for a paired bootstrap result of ``metric`` (B minus A)."""
    name = METRIC_NAMES.get(metric, metric)
    diff, low, high = boot["diff"], boot["ci_low"], boot["ci_high"]
    if boot["within_noise"] or diff == 0:
        return f"the difference ({_f3(diff)}) is within noise: 95% CI {_f3(low)}..{_f3(high)}"
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
                  f"[dim]({escape(b['model'])})[/]\non {escape(str(result['data']))} ({result['n_items']} {'sentences' if result['task'] == 'ner' else 'texts'}"
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
        mark = "within noise" if boot["within_noise"] else ("[green]B better[/]" if diff > 0 else "[red]A better[/]")
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
