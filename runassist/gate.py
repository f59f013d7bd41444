"""The promotion gate: a candidate run replaces the champion only if it is not worse.

"Not worse" is judged with a confidence interval, never one number against a threshold (one extra
annotation can move a label's F1 by five points, spaCy #3968). On each test set, both models
predict the same items, and a paired bootstrap over those items (the same resamples for every
figure) gives the difference candidate - champion with its 95% interval. Two rules, by how much
the data can tell:

* **not worse by more than epsilon** (non-inferiority): the interval's lower bound is at least
  ``-epsilon``. Applied to the headline on the champion's test split, and to each label's F1
  there when the label has at least ``min_support`` gold items;
* **not significantly worse**: the interval is not entirely below zero. Applied to labels with
  less support (their interval is too wide to show non-inferiority: on 30 entities it spans
  about +/-0.1 of F1, so the first rule would refuse even the champion's own twin), and to
  further test sets (a feedback test set: small and fresh), overall and per label.

For a headline where lower is better (WER) the sign is turned, so "worse" is always negative.
Also: no label the champion predicts may be missing from the candidate, and its time per item on
the same inputs may be at most ``latency_ratio`` times the champion's.

The decision and every figure behind it are written as JSON and HTML in the candidate's run
folder (``promotion/``) and, by ``promote``, into the registry's history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runassist import htmlparts as H
from runassist.atomic import atomic_write, write_json
from runassist.errors import ConfigError, DataError, RunassistError


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(0.02, ge=0, description="how much worse the candidate may be at the interval's lower "
                                                   "bound, in the metric's units (0.02 = two points of F1)")
    min_support: int = Field(50, ge=1, description="gold items a label needs on the test split for the "
                                                   "non-inferiority rule; below, only a significant drop refuses")
    latency_ratio: float = Field(1.5, gt=0, description="the candidate's time per item over the champion's, at most")
    samples: int = Field(1000, ge=100, description="bootstrap resamples")
    seed: int = Field(0, description="seed of the resamples: the same seed gives the same decision")
    data: list[str] = Field(default_factory=list, description="test sets beyond the champion's test split "
                                                              "(a feedback test set, an alias, a path)")


def load_gate(path: str | Path | None, overrides: dict[str, Any] | None = None) -> GateConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: gate file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a gate file is a mapping of settings ({', '.join(GateConfig.model_fields)})")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return GateConfig(**raw)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        msgs = [f"{'.'.join(map(str, e['loc'])) or 'gate'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(where + "; ".join(msgs) + f" (settings: {', '.join(GateConfig.model_fields)})") from None


def judge(candidate: str | Path, champion: str | Path | None, gate: GateConfig) -> dict[str, Any]:
    """The gate's decision for ``candidate`` against ``champion`` (None: there is none yet, and the
    candidate passes as the first champion). JSON-ready; see the module docstring."""
    from runassist.evaluate import resolve_split
    from runassist.predict import Predictor

    candidate = Path(candidate)
    if champion is None:
        return {"passed": True, "reasons": ["no champion yet: the candidate becomes the first one"],
                "candidate": str(candidate), "champion": None, "gate": gate.model_dump(), "sets": [],
                "latency": None}
    champion = Path(champion)
    if candidate.resolve() == champion.resolve():
        reasons = ["the candidate is the champion's own run"]
    else:
        reasons = []
    pred_a, pred_b = Predictor.from_run(champion), Predictor.from_run(candidate)
    if pred_a.task.name != pred_b.task.name:
        raise RunassistError(f"{candidate.name} is a {pred_b.task.name} run and the champion {champion.name} a "
                             f"{pred_a.task.name} run: a champion is replaced by a run of its own task")
    task = pred_a.task
    mode_min = task.headline_mode == "min"
    names_a, names_b = task.label_names(pred_a.state.labels), task.label_names(pred_b.state.labels)
    lost = sorted(names_a - names_b)
    passed = True
    if lost:
        passed = False
        reasons.append(f"{task.label_word}s the champion predicts and the candidate cannot: {', '.join(lost)}")
    labels = None
    if pred_a.state.labels is not None or pred_b.state.labels is not None:
        labels = list(dict.fromkeys([*(pred_a.state.labels or []), *(pred_b.state.labels or [])]))
    specs = list(dict.fromkeys([resolve_split(pred_a.cfg, None), *gate.data]))
    sets, timing_examples = [], None
    for spec in specs:
        examples = task.read(spec)
        if not examples:
            raise DataError(spec, None, "no examples to judge on")
        bare = [task.unlabelled(ex) for ex in examples]
        out_a, out_b = pred_a.predict_examples(bare), pred_b.predict_examples(bare)
        result = _judge_set(task, spec, examples, out_a, out_b, labels, gate, mode_min, primary=spec == specs[0])
        sets.append(result)
        if not result["passed"]:
            passed = False
            reasons.extend(f"{spec}: {r}" for r in result["reasons"])
        timing_examples = timing_examples or bare
    latency = _latency(pred_a, pred_b, timing_examples or [])
    latency["passed"] = latency["ratio"] <= gate.latency_ratio
    if not latency["passed"]:
        passed = False
        reasons.append(f"the candidate takes {latency['ratio']:.2f}x the champion's time per item "
                       f"(at most {gate.latency_ratio:g}x)")
    if passed:
        reasons.append(f"not worse than the champion by more than {gate.epsilon:g} on the test split (95% interval's "
                       "lower bound), overall and on every label with enough support; not significantly worse "
                       "anywhere else; within the latency budget")
    return {"passed": passed, "reasons": reasons, "candidate": str(candidate), "champion": str(champion),
            "task": task.name, "headline": task.headline, "headline_mode": task.headline_mode,
            "gate": gate.model_dump(), "lost_labels": lost, "sets": sets, "latency": latency}


def _judge_set(task: Any, spec: str, examples: Sequence[Any], out_a: Sequence[Any], out_b: Sequence[Any],
               labels: list[str] | None, gate: GateConfig, mode_min: bool, *, primary: bool = True) -> dict[str, Any]:
    """One test set: the headline and each label, each by the rule that fits (module docstring)."""
    from runassist.metrics.bootstrap import paired_bootstrap_counts

    def verdict(low: float, high: float, strict: bool) -> tuple[str, bool]:
        """(rule, passed) for a difference interval [low, high] where negative is worse."""
        if strict:
            return "non-inferiority", low >= -gate.epsilon
        return "significant drop", high >= 0

    body = task.compare(examples, out_a, out_b, labels=labels, n=gate.samples, seed=gate.seed, notes=[])
    overall = dict(body["overall"][task.headline])
    # "worse" as a negative number whatever the metric's direction
    low, high = (-overall["ci_high"], -overall["ci_low"]) if mode_min else (overall["ci_low"], overall["ci_high"])
    rule, ok = verdict(low, high, primary)
    overall.update(better_by=-overall["diff"] if mode_min else overall["diff"], lower_bound=low, rule=rule, passed=ok)
    reasons = [] if ok else [_why(task.headline, "", overall["a"], overall["b"], low, high, rule, gate)]
    per_label = []
    counts_a = task.label_item_counts(examples, out_a, labels or [])
    counts_b = task.label_item_counts(examples, out_b, labels or [])
    if counts_a is None or counts_b is None:
        note = f"a {task.name} task has no per-label scores: the headline alone is judged"
    else:
        note = ""
        for label in sorted(set(counts_a) | set(counts_b)):
            a, b = counts_a.get(label), counts_b.get(label)
            zeros = (a if a is not None else b) * 0
            a, b = (a if a is not None else zeros), (b if b is not None else zeros)
            support = int(a[:, 2].sum())
            boot = paired_bootstrap_counts(a, b, stat="f1", n=gate.samples, seed=gate.seed)
            rule, ok = verdict(boot["ci_low"], boot["ci_high"], primary and support >= gate.min_support)
            per_label.append({"label": label, "support": support, "f1_champion": boot["a"], "f1_candidate": boot["b"],
                              "diff": boot["diff"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"], "rule": rule,
                              "passed": ok})
            if not ok:
                reasons.append(_why("F1", f"{task.label_word} {label} (support {support})", boot["a"], boot["b"],
                                    boot["ci_low"], boot["ci_high"], rule, gate))
    return {"data": spec, "primary": primary, "n_items": len(examples), "overall": overall, "per_label": per_label,
            "note": note, "passed": not reasons, "reasons": reasons}


def _why(metric: str, what: str, a: float, b: float, low: float, high: float, rule: str, gate: GateConfig) -> str:
    where = f"{what}: " if what else ""
    if rule == "non-inferiority":
        return (f"{where}{metric} {a:.4f} -> {b:.4f}: may be worse by {-low:.4f} (95% interval of the difference "
                f"[{low:+.4f}, {high:+.4f}]), more than epsilon {gate.epsilon:g}")
    return (f"{where}{metric} {a:.4f} -> {b:.4f}: significantly worse (95% interval of the difference "
            f"[{low:+.4f}, {high:+.4f}] entirely below zero)")


def _latency(pred_a: Any, pred_b: Any, examples: Sequence[Any], rounds: int = 2) -> dict[str, Any]:
    """Seconds per item of each model on the same inputs: rounds alternate between the two (so a
    neighbour's burst hits both), and each model's fastest round counts."""
    examples = list(examples)[:512]
    if not examples:
        return {"champion_ms": None, "candidate_ms": None, "ratio": 1.0, "items": 0}
    best = {"a": float("inf"), "b": float("inf")}
    for _ in range(rounds):
        for key, predictor in (("a", pred_a), ("b", pred_b)):
            started = time.perf_counter()
            predictor.predict_examples(examples)
            best[key] = min(best[key], time.perf_counter() - started)
    a_ms, b_ms = 1000 * best["a"] / len(examples), 1000 * best["b"] / len(examples)
    return {"champion_ms": round(a_ms, 4), "candidate_ms": round(b_ms, 4), "ratio": round(b_ms / a_ms, 4),
            "items": len(examples)}


def promote(run: str | Path, name: str, gate: GateConfig, registry: Any) -> dict[str, Any]:
    """``runassist promote RUN --to NAME``: judge the run against NAME's champion; it becomes the
    champion if it passes, the challenger if not. The registry changes once, at the end, in one
    atomic step (a kill before that leaves it as it was); the report goes into RUN/promotion/."""
    import datetime as _dt

    run = Path(run)
    current = registry.champion(name)
    decision = judge(run, current[1] if current else None, gate)
    decision["model"] = name
    decision["champion_version"] = current[0] if current else None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    json_path, html_path = write_report(decision, run / "promotion", f"{name}-{stamp}")
    decision["report"] = {"json": str(json_path), "html": str(html_path)}
    figures = {"passed": decision["passed"], "reasons": decision["reasons"], "report": str(json_path),
               "overall": [{"data": s["data"], **{k: s["overall"][k] for k in ("a", "b", "diff", "ci_low",
                                                                               "ci_high")}}
                           for s in decision["sets"]],
               "latency_ratio": (decision["latency"] or {}).get("ratio")}
    version = registry.add(name, run, alias="champion" if decision["passed"] else "challenger",
                           note="promoted by the gate" if decision["passed"] else "refused by the gate",
                           details=figures, champion_was=current[0] if current else None)
    decision["version"] = version
    write_json(json_path, decision)
    return decision


# -- the report ------------------------------------------------------------------------------

def write_report(decision: dict[str, Any], folder: Path, name: str) -> tuple[Path, Path]:
    """``folder/<name>.json`` and ``.html``: the decision and every figure behind it."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / f"{name}.json", folder / f"{name}.html"
    write_json(json_path, decision)
    atomic_write(html_path, render_html(decision))
    return json_path, html_path


def render_html(d: dict[str, Any]) -> str:
    verdict = "PASSED: the candidate may become champion" if d["passed"] else "REFUSED: the champion stays"
    colour = "#1a7f37" if d["passed"] else "#b42318"
    parts = [f"<h1>Promotion gate</h1><p style='font-size:1.3em;color:{colour}'><b>{H.e(verdict)}</b></p>",
             "<ul>" + "".join(f"<li>{H.e(r)}</li>" for r in d["reasons"]) + "</ul>",
             H.table(["", ""], [["<b>candidate</b>", H.e(d["candidate"])], ["<b>champion</b>", H.e(d["champion"])],
                                ["<b>gate</b>", H.e(", ".join(f"{k}={v}" for k, v in d["gate"].items()))]],
                     cls="kv")]
    for s in d.get("sets", []):
        o = s["overall"]
        parts.append(f"<h2>{H.e(s['data'])} ({s['n_items']:,} items)</h2>")
        parts.append(H.table(["metric", "champion", "candidate", "difference", "95% interval", "rule", "passed"],
                             [[H.e(d["headline"]), H.num(o["a"]), H.num(o["b"]), H.num(o["diff"]),
                               f"[{o['ci_low']:+.4f}, {o['ci_high']:+.4f}]", H.e(o["rule"]), _mark(o["passed"])]]))
        if s["per_label"]:
            parts.append(H.table(["label", "support", "F1 champion", "F1 candidate", "difference", "95% interval",
                                  "rule", "passed"],
                                 [[H.e(r["label"]), H.num(r["support"]), H.num(r["f1_champion"]),
                                   H.num(r["f1_candidate"]), H.num(r["diff"]),
                                   f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]", H.e(r["rule"]),
                                   _mark(r["passed"])] for r in s["per_label"]]))
        if s.get("note"):
            parts.append(f"<p>{H.e(s['note'])}</p>")
    lat = d.get("latency")
    if lat and lat.get("items"):
        parts.append("<h2>Latency</h2>" + H.table(
            ["items", "champion ms/item", "candidate ms/item", "ratio", "passed"],
            [[H.num(lat["items"]), H.num(lat["champion_ms"]), H.num(lat["candidate_ms"]), H.num(lat["ratio"]),
              _mark(lat["passed"])]]))
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:4px 8px;"
             "text-align:left}th{background:#f5f5f5}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Promotion gate</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def _mark(ok: bool) -> str:
    return "<span style='color:#1a7f37'>yes</span>" if ok else "<b style='color:#b42318'>no</b>"
