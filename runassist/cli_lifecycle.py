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


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
    app.command()(promote)


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
