"""The study's HTML report (STUDY/study.html), in the run report's style: a table of trials, the
parameters' importances, and the optimisation history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runassist import plots
from runassist.atomic import atomic_write, read_json
from runassist.htmlparts import e, img, missing, num, table
from runassist.report import _CSS  # one stylesheet for every report runassist writes


def write_study_report(folder: Path, *, storage: str | None = None) -> Path:
    """``storage``: where the study is (study.json shows an RDB URL without its password)."""
    import optuna

    from runassist.search.storage import open_storage

    info = read_json(folder / "study.json")
    handle = optuna.load_study(study_name=info["study"], storage=open_storage(storage or info["storage"]))
    trials = handle.get_trials(deepcopy=False)
    maximize = info["direction"] == "max"
    importances = _importances(handle)
    images = {name: data for name, data in {
        "history.png": plots.history_chart([(t.number, t.value if t.value is not None else _last(t), t.state.name)
                                            for t in trials], metric=info["metric"], maximize=maximize),
        "importance.png": plots.importance_chart(importances)}.items() if data}
    for name, data in images.items():
        plots.write_png(folder / "plots" / name, data)
    page = _page(folder, info, trials, importances, images)
    path = folder / "study.html"
    atomic_write(path, page)
    return path


def _value(value: Any) -> str:
    """A parameter: 3 significant digits (a learning rate of 5e-05 is not 0.0001)."""
    return e(f"{value:.3g}") if isinstance(value, float) else num(value)


def _last(trial: Any) -> float | None:
    """A pruned trial's last reported value: where the history chart draws it."""
    values = trial.intermediate_values
    return values[max(values)] if values else None


def _importances(handle: Any) -> dict[str, float]:
    """Importances by Optuna's default evaluator; they need complete trials whose values differ."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    if len(handle.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3:
        return {}  # too few to say anything: the evaluator would call every parameter equal
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(handle)
    except (ValueError, RuntimeError):
        return {}


def _page(folder: Path, info: dict[str, Any], trials: list[Any], importances: dict[str, float],
          images: dict[str, bytes]) -> str:
    best = info.get("best") or {}
    baseline = info.get("baseline") or {}
    cards = [("metric", f"dev {e(info['metric'])} <small>({e(info['direction'])})</small>"),
             ("best", f"{num(best.get('value'))} <small>trial {num(best.get('trial'))}</small>" if best else "–"),
             ("baseline (trial 0)", num(baseline.get("value")) if baseline else "–"),
             ("trials", f"{num(info['counted'])} <small>of {num(info['trials_wanted'])}</small>"),
             ("states", e(", ".join(f"{k} {v}" for k, v in sorted(info["states"].items())))),
             ("budget", f"{info['budget']:.0%} of the training data" if info.get("budget") else "full data")]
    header = (f"<header><h1>study {e(info['study'])}</h1>"
              f'<p class="sub">storage <code>{e(info["storage"])}</code>'
              + (f" · best: <code>{e(folder / 'best')}</code>, config <code>{e(folder / 'best.yaml')}</code>"
                 if best else "") + "</p>"
              + '<div class="cards">' + "".join(f'<div class="card"><div class="k">{e(k)}</div>'
                                                f'<div class="v">{v}</div></div>' for k, v in cards)
              + "</div></header>")
    charts = [img(images, "history.png", "objective by trial"), img(images, "importance.png", "parameter importance")]
    shown = "".join(c for c in charts if c)
    history = f'<section><h2>Optimisation history</h2><div class="grid3">{shown}</div>'
    if not images.get("importance.png"):
        history += missing("No importances yet: they need at least three complete trials.")
    history += "</section>"
    names = sorted({k for t in trials for k in t.params})
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        note = t.user_attrs.get("error") or t.user_attrs.get("failed_because") or (
            "baseline: the config's own values" if t.user_attrs.get("baseline") else
            f"retry of trial {t.user_attrs['retry_of']}" if "retry_of" in t.user_attrs else "")
        mark = " ★" if best and t.number == best.get("trial") else ""
        rows.append([f"{t.number}{mark}", e(t.state.name.lower()), num(t.value),
                     *(_value(t.params.get(n)) for n in names), num(seconds, 1) if seconds is not None else "–",
                     f"<code>{e(t.user_attrs.get('run', ''))}</code>", e(str(note).splitlines()[-1] if note else "")])
    trial_table = table(["trial", "state", f"dev {info['metric']}", *names, "seconds", "run", "note"], rows)
    imp = table(["parameter", "importance"], [[f"<code>{e(k)}</code>", num(v, 3)] for k, v in importances.items()]) \
        if importances else ""
    body = (header + history + f"<section><h2>Trials</h2>{trial_table}</section>"
            + (f"<section><h2>Parameter importance</h2>{imp}</section>" if imp else ""))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e('runassist study: ' + info['study'])}</title><style>{_CSS}</style></head><body><main>"
            + body + "</main></body></html>\n")
