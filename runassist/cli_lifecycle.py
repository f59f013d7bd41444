"""Commands that keep a model current: `registry`, `promote` (and, beside them, `feedback`, `queue`,
`retrain`, `drift`). Kept apart from cli.py so that file stays the train/evaluate/serve commands;
``register(app)`` adds these to the one `runassist` command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

REGISTRY_HELP = "the registry folder (default: $RUNASSIST_REGISTRY or ./registry)"
registry_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="Named models, their versions (run folders) and aliases champion/challenger.")


feedback_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="The feedback store: predictions the service made and their corrections.")


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
    app.add_typer(feedback_app, name="feedback")
    app.command()(promote)
    app.command()(retrain)
    app.command("queue")(queue)
    app.command()(drift)


def _run_path(run: str, root: Optional[Path]) -> Path:
    """A run folder, or the run a registry reference points at."""
    from runassist.registry import is_reference

    return _registry(root).resolve(run) if is_reference(run) else Path(run)


def _store(db: Optional[str], root: Optional[Path]):
    from runassist.feedback import FeedbackStore, default_url

    return FeedbackStore(db or default_url(_registry(root).root))


DB_HELP = "the feedback store: a SQLite path or SQLAlchemy URL (default: the registry's feedback.sqlite)"


def _registry(root: Optional[Path]):
    from runassist.registry import Registry

    return Registry(root)


@registry_app.command("list")
def registry_list(root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    from runassist.cli_output import _json, _show

    state = _registry(root).read()
    if as_json:
        _json(state["models"])
        return
    rows = []
    for name, model in sorted(state["models"].items()):
        for v in model["versions"]:
            aliases = ", ".join(a for a, n in model["aliases"].items() if n == v["version"])
            rows.append([name, str(v["version"]), aliases, Path(v["run"]).name, v.get("added", "")])
    _show("registry", ["model", "version", "aliases", "run", "added"], rows)


@registry_app.command("add")
def registry_add(name: str, run: Path, alias: Optional[str] = typer.Option(None, "--alias", help="champion | challenger"),
                 root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    """Register a run as the next version of NAME (--alias champion skips the gate: for a first model)."""
    from runassist.cli_output import out

    number = _registry(root).add(name, run, alias=alias, note="added by hand")
    out.print(f"{escape(name)} version {number}: {escape(str(run))}" + (f" ({alias})" if alias else ""))


@registry_app.command("alias")
def registry_alias(name: str, alias: str, version: int,
                   root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    """Point an alias at a version by hand (the gate is `runassist promote`)."""
    _registry(root).set_alias(name, alias, version, reason="set by hand")


@registry_app.command("rollback")
def registry_rollback(name: str, root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    """Make the previous champion the champion again (a service on NAME@champion follows within seconds)."""
    from runassist.cli_output import out

    version = _registry(root).rollback(name)
    out.print(f"{escape(name)}: champion is version {version} again")


@registry_app.command("history")
def registry_history(name: Optional[str] = typer.Argument(None),
                     root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    from runassist.cli_output import _json, _show

    events = _registry(root).history(name)
    if as_json:
        _json(events)
        return
    _show("history", ["at", "model", "event", "version", "reason"],
          [[e["at"], e["model"], e["event"], str(e.get("version", "")), e.get("reason") or e.get("note") or ""]
           for e in events])


def promote(run: Path, to: str = typer.Option(..., "--to", help="the registry model NAME"),
            gate: Optional[Path] = typer.Option(None, "--gate", help="gate.yaml (epsilon, min_support, "
                                                                     "latency_ratio, samples, seed, data)"),
            data: Optional[list[str]] = typer.Option(None, "--data", help="another test set to judge on "
                                                                         "(repeatable): a feedback test set"),
            seed: Optional[int] = typer.Option(None, "--seed"),
            root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Judge RUN against NAME's champion; it becomes the champion only if it is not worse, overall and
    per label, with a confidence interval (exit 1 when refused)."""
    from runassist.cli_output import _json, out
    from runassist.gate import load_gate, promote as run_gate

    settings = load_gate(gate, {"seed": seed})
    if data:
        settings = settings.model_copy(update={"data": [*settings.data, *data]})
    decision = run_gate(run, to, settings, _registry(root))
    if as_json:
        _json(decision)
    else:
        word = "[green]PASSED[/]" if decision["passed"] else "[red]REFUSED[/]"
        out.print(f"{word} {escape(Path(run).name)} -> {escape(to)} "
                  f"({'champion' if decision['passed'] else 'challenger'}, version {decision['version']})")
        for reason in decision["reasons"]:
            out.print(f"  {escape(reason)}")
        out.print(f"report: {escape(decision['report']['html'])}")
    if not decision["passed"]:
        raise typer.Exit(1)


@feedback_app.command("export")
def feedback_export(run: str = typer.Argument(..., help="a run folder or registry:NAME@champion: whose task format"),
                    output: Path = typer.Option(..., "-o", "--output", help="folder for train/test files"),
                    holdout: float = typer.Option(0.2, "--holdout", help="share held out as the feedback test set"),
                    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                    root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    """Write the corrections as a dataset in the task's own format, with a held-out feedback test set."""
    from runassist.cli_output import _json
    from runassist.feedback import export
    from runassist.runs import load_config
    from runassist.tasks import make_task

    task = make_task(load_config(_run_path(run, root)))
    _json(export(_store(db, root), task, output, holdout=holdout))


@feedback_app.command("stats")
def feedback_stats(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                   root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    """How many predictions, corrections and queued inputs the store holds."""
    from runassist.cli_output import _json

    store = _store(db, root)
    _json({**store.counts(), "schema_version": store.schema_version(), "store": store._safe_url()})


def retrain(champion: str = typer.Argument(..., help="the champion: a run folder or registry:NAME@champion"),
            data: str = typer.Option(..., "--data", help="the new training data (a feedback export's train file)"),
            overrides: Optional[list[str]] = typer.Argument(None, help="config overrides, key=value"),
            feedback_test: Optional[str] = typer.Option(None, "--feedback-test", help="a feedback test set, scored "
                                                                                      "beside the original test"),
            replay: float = typer.Option(1.0, "--replay", help="old training examples replayed per new one (0: none)"),
            do_promote: bool = typer.Option(False, "--promote", help="run the gate at the end"),
            to: Optional[str] = typer.Option(None, "--to", help="registry model NAME (default: the reference's)"),
            gate: Optional[Path] = typer.Option(None, "--gate", help="gate.yaml"),
            root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    """Retrain from the champion on new data without forgetting (warm start, old data replayed, new labels
    added to the head), score it beside the champion, and with --promote put it through the gate."""
    from runassist.cli_output import out
    from runassist.errors import RunassistError
    from runassist.gate import load_gate, promote as run_gate
    from runassist.registry import is_reference, parse_reference
    from runassist.retrain import retrain as run_retrain

    if do_promote and to is None:
        if not is_reference(champion):
            raise RunassistError("--promote: say which registry model with --to NAME")
        to = parse_reference(champion)[0]
    summary = run_retrain(_run_path(champion, root), data, replay_ratio=replay, feedback_test=feedback_test,
                          overrides=overrides or ())
    out.print(f"new run: {escape(summary['run'])}")
    for name, c in summary["compared"].items():
        out.print(f"  {name} ({escape(c['data'])}): {c['headline']} champion {c['champion']:.4f}, new {c['new']:.4f}; "
                  f"{escape(c['verdict'])}")
    if do_promote:
        settings = load_gate(gate)
        if feedback_test:
            settings = settings.model_copy(update={"data": [*settings.data, feedback_test]})
        decision = run_gate(summary["run"], to, settings, _registry(root))
        word = "[green]PASSED[/]" if decision["passed"] else "[red]REFUSED[/]"
        out.print(f"{word} -> {escape(to)} version {decision['version']}; report: {escape(decision['report']['html'])}")
        for reason in decision["reasons"]:
            out.print(f"  {escape(reason)}")
        if not decision["passed"]:
            raise typer.Exit(1)


def queue(run: str = typer.Argument(..., help="a run folder or registry:NAME@champion"),
          pool: Optional[Path] = typer.Option(None, "--pool", help="unlabelled inputs: text (one a line), JSONL, CoNLL"),
          from_store: bool = typer.Option(False, "--from-store", help="the inputs the service queued (low confidence)"),
          k: int = typer.Option(200, "-k", help="how many to pick"),
          strategy: str = typer.Option("margin", "--strategy", help="margin | entropy | random"),
          random_share: float = typer.Option(0.1, "--random-share", help="share of random picks mixed in"),
          seed: int = typer.Option(0, "--seed"),
          output: Path = typer.Option(..., "-o", "--output", help=".conll (NER: tags to correct) or .jsonl"),
          db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
          root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    """Pick the inputs a person should label next: those the model is least sure of, a share of random
    ones, no near-duplicates; written with the model's prediction as a pre-annotation."""
    from runassist.cli_output import out
    from runassist.errors import RunassistError
    from runassist.label_queue import build_queue, read_pool, write_queue
    from runassist.predict import Predictor

    if (pool is None) == (not from_store):
        raise RunassistError("give --pool FILE or --from-store (one of them)")
    predictor = Predictor.from_run(_run_path(run, root))
    task = predictor.task
    if pool is not None:
        examples = read_pool(task, str(pool))
    else:
        examples = [task.example_from_input(q["input"]) for q in _store(db, root).queued()]
    rows = build_queue(predictor, examples, k=k, strategy=strategy, random_share=random_share, seed=seed)
    path = write_queue(task, rows, output)
    why = {r: sum(1 for x in rows if x["reason"] == r) for r in ("uncertain", "random")}
    out.print(f"{len(rows)} of {len(examples)} inputs to label ({why['uncertain']} uncertain, {why['random']} random) "
              f"-> {escape(str(path))}")


def drift(run: str = typer.Argument(..., help="a run folder or registry:NAME@champion"),
          since: Optional[str] = typer.Option(None, "--since", help="ISO date or time (UTC), e.g. 2026-12-01"),
          all_models: bool = typer.Option(False, "--all-models", help="every model's predictions, not only this run's"),
          db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
          root: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Compare what the service saw (the feedback store) with the run's training reference: input length,
    unknown sub-tokens, predicted labels, low-confidence share (exit 1 when something drifted)."""
    from runassist.cli_output import _json, _show
    from runassist.drift import drift_report

    report = drift_report(_run_path(run, root), _store(db, root), since=since, all_models=all_models)
    if as_json:
        _json(report)
    else:
        rows = [[r["measure"], r["kind"], f"{r['value']:+.4f}" if r["kind"] == "share" else f"{r['value']:.4f}",
                 r["level"]] for r in report["measures"]]
        _show(f"drift of {report['current']['examples']} predictions since {report['since'] or 'the start'} "
              f"against {report['reference']['examples']} dev examples", ["measure", "by", "value", "level"], rows)
    if report["drifted"]:
        raise typer.Exit(1)
