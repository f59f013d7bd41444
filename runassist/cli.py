"""The `runassist` command: thin commands, each calling one library function of the same name."""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runassist.cli_output import _fmt, _json, _show, err, out  # noqa: F401 -- shared with cli_lifecycle
from runassist.errors import RunassistError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune a pretrained model on your labelled data, evaluate it, serve it.")
runs_app = typer.Typer(add_completion=False, help="List, show and compare run folders.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
        no_hub: bool = typer.Option(False, "--no-hub", help="skip the hub reachability probe")) -> None:
    """What this machine can do, and the settings that follow."""
    from runassist import env as env_lib

    facts = env_lib.collect(check_hub=not no_hub)
    rec = env_lib.recommend(facts)
    if as_json:
        _json({**facts, "recommendations": rec})
        return
    cpu = facts["cpu"]
    rows = [("python", facts["python"]),
            *[(name, version or "not installed") for name, version in facts["versions"].items()],
            ("cpu", f"{cpu['model']} ({cpu['cores_usable']} usable cores, {cpu.get('busy_cores')} held by other "
                    f"processes now; 1-min load {cpu.get('load_1m')})"),
            ("bf16 fast on cpu", str(cpu["bf16_fast"])),
            ("memory", f"{facts['memory']['available_mb']:,} MB free of {facts['memory']['total_mb']:,} MB"),
            ("disk", f"{facts['disk']['free_mb']:,} MB free at {facts['disk']['path']}"),
            ("gpus", ", ".join(f"{g['name']} ({g['memory_mb']:,} MB, bf16 {g['bf16']})" for g in facts["gpus"])
             or "none"),
            ("hub", f"reachable={facts['hub']['reachable']} ({facts['hub']['detail']})")]
    _show("runassist env", None, [[key, str(value)] for key, value in rows])
    _show("recommended settings", ["setting", "value"],
          [[key, str(rec[key])] for key in ("device", "precision", "threads", "batch_size")])
    for note in rec["notes"]:
        out.print(f"- {escape(note)}", highlight=False)


@app.command()
def init(task: Optional[str] = typer.Argument(None, help="a task name; --list shows them"),
         output: Optional[Path] = typer.Option(None, "-o", "--output", help="file to write (default: stdout)"),
         list_tasks: bool = typer.Option(False, "--list", help="list the tasks (built-in and plugins)"),
         force: bool = typer.Option(False, "--force", help="overwrite OUTPUT if it exists")) -> None:
    """Write a config for TASK with a comment on every key."""
    from runassist.atomic import atomic_write
    from runassist.init_config import render
    from runassist.tasks import task_table

    if list_tasks or task is None:
        for name, cls in sorted(task_table().items()):
            doc = inspect.getdoc(sys.modules[cls.__module__]) or ""
            sys.stdout.write(f"{name}\t{doc.splitlines()[0] if doc else cls.__module__}\n")
        if task is None and not list_tasks:
            raise typer.Exit(2)
        return
    text = render(task)
    if output is not None and output.exists() and not force:
        raise RunassistError(f"{output} exists (an edited config, maybe); choose another -o, or --force to overwrite it")
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write(output, text)
        err.print(escape(f"wrote {output}; next: runassist check-data {output} && runassist train {output}"))


@app.command()
def assets(as_json: bool = typer.Option(False, "--json")) -> None:
    """Packaged models and data sets, usable by name in a config."""
    from runassist.assets import list_assets

    rows = list_assets()
    if as_json:
        _json(rows)
        return
    columns = ["name", "kind", "what", "size", "licence", "installed"]
    _show("packaged assets", columns, [[str(row.get(c, "")) for c in columns] for row in rows])


@app.command("check-data")
def check_data(config: Optional[Path] = typer.Argument(None), overrides: Optional[list[str]] = typer.Argument(None),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Find data problems before any compute is spent. Exit 1 on errors, 0 with warnings only."""
    from runassist.assets import resolve_model
    from runassist.data.checks import check_data as check
    from runassist.tasks import load_config, make_task

    config, overrides = _split_config(config, overrides)
    cfg = load_config(config, overrides)
    task = make_task(cfg)
    processor = None
    try:
        processor = task.load_processor(resolve_model(cfg.model.source))
    except Exception as exc:  # the data checks still run; only the length checks need the model's processor
        err.print(f"[yellow]warning[/]: no tokenizer/processor ({escape(str(exc))}); skipping the length checks")
    report = check(task, cfg.data, processor=processor)
    if as_json:
        _json(report.to_dict())
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


# check-data's table: SplitStats field -> column title. Fields no split has a value for are left out.
_SPLIT_COLUMNS = {"examples": "examples", "words": "words", "length": "length", "subtokens": "sub-tokens",
                  "over_max_length": "past max_length", "unk_share": "unknown", "labels": "labels"}


def _cell(key: str, value) -> str:
    if isinstance(value, dict):
        if key == "labels":  # the 8 most frequent
            return ", ".join(f"{k} {v}" for k, v in sorted(value.items(), key=lambda kv: -kv[1])[:8])
        return " / ".join(f"{k} {v}" for k, v in value.items())  # p50 / p90 / p99 / max
    if isinstance(value, float):
        return f"{value:.1%}"
    return str(value)


def _print_report(report) -> None:
    data = report.to_dict()
    keys = [k for k in _SPLIT_COLUMNS if k == "examples" or any(s.get(k) not in (None, {}, 0)
                                                              for s in data["splits"].values())]
    _show("splits", ["split", *(_SPLIT_COLUMNS[k] for k in keys)],
          [[name, *(_cell(key, split.get(key, "")) for key in keys)] for name, split in data["splits"].items()])
    for line in data["warnings"]:
        out.print(f"[yellow]warning[/] {escape(line)}", highlight=False)
    for line in data["errors"]:
        out.print(f"[red]error[/] {escape(line)}", highlight=False)
    out.print(f"{len(data['errors'])} errors, {len(data['warnings'])} warnings")


@app.command()
def train(config: Optional[Path] = typer.Argument(None, help="YAML config (not needed with --resume)"),
          overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value ..."),
          resume: Optional[Path] = typer.Option(None, "--resume", help="continue RUN exactly from its last checkpoint"),
          quiet: bool = typer.Option(False, "--quiet", help="no progress bar (for logs)"),
          no_report: bool = typer.Option(False, "--no-report", help="skip the HTML report")) -> None:
    """Fine-tune: prepare data and model, add the task head, train with dev evaluation, test, save."""
    from runassist.tasks import load_config
    from runassist.train.run import train as run_training

    config, overrides = _split_config(config, overrides)
    if resume is None and config is None and not overrides:
        raise RunassistError("give a CONFIG file (runassist init ner -o cfg.yaml), or --resume RUN")
    if resume is not None and (config is not None or overrides):
        raise RunassistError("--resume continues a run with its own saved config; to train on new data, "
                             "start a new run with model.source=RUN/model")
    cfg = load_config(config, overrides or []) if resume is None else None
    if resume is not None and not (resume / "checkpoints" / "last" / "state.json").exists() \
            and not (resume / "checkpoints" / ".last.old" / "state.json").exists():
        err.print(escape(f"{resume}: no checkpoint yet (killed before its first one): it starts over from step 0 "
                         "with its own config and seed"))
    try:
        result = run_training(cfg, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        err.print("interrupted: a checkpoint was saved; continue with `runassist train --resume RUN`")
        raise
    if not _is_main_process():
        return
    summary = result.summary
    if not no_report:
        from runassist.report import write_report

        try:
            err.print(escape(f"report: {write_report(result.run)}"))
        except Exception as exc:  # the run itself is complete and saved; a report failure must not hide that
            err.print("[yellow]warning[/]: " + escape(f"the report could not be written ({exc}); try "
                                                     f"`runassist report {result.run}`"))
    test = summary.get("test") or {}
    best = summary.get("best") or {}
    err.print(escape(f"stopped: {summary['stopped_because']}; best dev {best.get('metric')} = {_fmt(best.get('value'))} "
              f"at step {best.get('step')}; test {best.get('metric')} = {_fmt(test.get(best.get('metric')))}; "
              f"{summary['tokens_per_second']:,.0f} tokens/s"))
    print(result.run)


@app.command()
def search(config: Optional[Path] = typer.Argument(None, help="YAML config with a search: section"),
           overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value ..."),
           trials: int = typer.Option(..., "--trials", help="trials in total: running again resumes up to N"),
           timeout: Optional[float] = typer.Option(None, "--timeout", help="seconds after which no trial starts"),
           budget: Optional[float] = typer.Option(None, "--budget", help="fraction of the training data per trial"),
           storage: Optional[str] = typer.Option(None, "--storage", help="an RDB URL; default: STUDY/journal.log"),
           study: Optional[str] = typer.Option(None, "--study", help="study name (default: the config's name)"),
           workers: int = typer.Option(1, "--workers", help="worker processes on this machine")) -> None:
    """Hyperparameter search on Optuna: a run folder per trial, the best as STUDY/best and STUDY/best.yaml."""
    from runassist.search.study import search as run_search

    config, overrides = _split_config(config, overrides)
    if workers < 1:
        raise RunassistError("--workers: give at least 1")
    result = run_search(config, overrides, trials=trials, timeout=timeout, budget=budget, storage=storage,
                        study=study, workers=workers, say=lambda line: err.print(escape(line), highlight=False))
    states = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()))
    if result.best:
        err.print(escape(f"best: trial {result.best['trial']}, dev {result.best['value']:.4f} "
                         f"({', '.join(f'{k}={v}' for k, v in result.best['params'].items())}); trials: {states}; "
                         f"report: {result.folder / 'study.html'}"), highlight=False)
    else:
        err.print(escape(f"no trial completed; trials: {states}; logs in {result.folder / 'logs'}"), highlight=False)
    print(result.folder)


def _split_config(config: Optional[Path], overrides: Optional[list[str]]) -> tuple[Optional[Path], list[str]]:
    """`runassist train a.b=c ...` with no file: the first override lands in CONFIG; move it back."""
    if config is not None and "=" in str(config) and not config.exists():
        return None, [str(config), *(overrides or [])]
    return config, list(overrides or [])


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") in ("0", "")


@app.command()
def evaluate(run: Path, data: Optional[str] = typer.Option(None, "--data", help="dev | test | a path | an alias"),
             mode: Optional[str] = typer.Option(None, "--mode", help="another way the task scores (NER: strict)"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Score a trained run; writes eval/<split>.json and its predictions into the run folder."""
    from runassist.evaluate import evaluate as evaluate_run

    result = evaluate_run(run, data=data, mode=mode)
    if as_json:
        _json(result)
        return
    _print_scores(result["scores"], title=f"{run.name} on {result['data']}")
    err.print(escape(f"wrote {result['files']['scores']} and {result['files']['predictions']}"))


def _print_scores(scores: dict, *, title: str) -> None:
    flat = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
    _show(title, list(flat), [list(flat.values())], right=len(flat))
    per = scores.get("per_type") or scores.get("per_class")
    if per:
        cols = [c for c in ("precision", "recall", "f1", "support") if c in next(iter(per.values()))]
        _show("per label", ["label", *cols], [[label, *(row.get(c) for c in cols)] for label, row in per.items()],
              right=len(cols))
    errors = scores.get("errors")
    if errors:
        out.print("errors: " + escape(", ".join(f"{k} {v}" for k, v in errors.items())), highlight=False)


@app.command()
def predict(run: str = typer.Argument(..., help="a run folder, or FIRST,SECOND to chain two (NER_RUN,RELATIONS_RUN)"),
            source: str = typer.Argument(..., metavar="INPUT", help="file, or - for stdin; for an image or audio "
                                         "model also a media file, a folder of them, or a list of their paths (with "
                                         "--engine ray: JSONL/Parquet, a path or an fsspec URL)"),
            output: Optional[str] = typer.Option(None, "-o", "--output", help="file (default: stdout)"),
            fmt: str = typer.Option("auto", "--format", help="auto | jsonl | csv | the task's own (conll for NER)"),
            backend: str = typer.Option("torch", "--backend", help="torch | onnx | openvino"),
            precision: str = typer.Option("auto", "--precision", help="auto (as trained) | fp32 | bf16"),
            compile_model: bool = typer.Option(False, "--compile", help="torch backend: torch.compile the model "
                                               "(~1.3x in bf16 after ~1 min of compiling: for large inputs)"),
            batch_size: int = typer.Option(64, "--batch-size"),
            chunk_size: int = typer.Option(1000, "--chunk-size", help="items read, predicted and written at a time "
                                                                      "(memory is bounded by it)"),
            resume: bool = typer.Option(False, "--resume", help="continue an interrupted prediction into -o "
                                                                "after its last complete chunk"),
            workers: int = typer.Option(1, "--workers", help="processes on this machine (threads shared out)"),
            engine: str = typer.Option("local", "--engine", help="local | ray (Ray Data map_batches; "
                                                                 "pip install 'runassist[ray]') | accelerate "
                                                                 "(taken by itself under accelerate launch)"),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress")) -> None:
    """Predict every item of INPUT (CoNLL, JSONL, CSV/TSV, or text with one document a line; blank
    lines are skipped), a chunk at a time in constant memory, with progress on stderr. CSV/TSV rows
    come back whole with prediction columns added. With two runs, FIRST,SECOND, the second reads
    what the first found (relations between a NER run's entities)."""
    from runassist.predict import Predictor, predict_chain_file, predict_file

    def load(path: str) -> Predictor:
        return Predictor.from_run(Path(path), backend=backend, batch_size=batch_size, precision=precision,
                                  compile=compile_model)

    from runassist.predict_accelerate import launched, predict_launched

    if engine not in ("local", "ray", "accelerate"):
        raise RunassistError(f"--engine {engine!r}: choose local, ray or accelerate")
    if engine == "local" and launched():  # every launched process would otherwise write the whole file
        engine = "accelerate"
    if engine == "accelerate":
        if resume or workers > 1:
            raise RunassistError("--resume and --workers are for the local engine: under accelerate launch the "
                                 "launched processes share the chunks")
        n = predict_launched(load(run), source, output, fmt=fmt, chunk_size=chunk_size)
    elif engine == "ray":
        from runassist.predict_ray import predict_ray

        if compile_model:
            raise RunassistError("--compile is for the local engine: Ray's workers load the model themselves")
        if output in (None, "-") or resume or fmt != "auto":
            raise RunassistError("--engine ray writes to a folder or URL given with -o (JSONL, or Parquet when it "
                                 "ends in .parquet); --resume and --format are for the local engine")
        n = predict_ray(Path(run), source, output, workers=workers, batch_size=batch_size, backend=backend,
                        precision=precision)
    elif "," in run and not Path(run).exists():
        first, _, second = run.partition(",")
        if fmt not in ("auto", "jsonl"):
            raise RunassistError(f"--format {fmt!r}: chained runs write jsonl")
        n = predict_chain_file(load(first), load(second), source, output)
    else:
        n = predict_file(load(run), source, output, fmt=fmt, chunk_size=chunk_size, resume=resume,
                         workers=workers, quiet=quiet)
    if output not in (None, "-") and engine == "ray" and not quiet:  # the local engine's progress line says it
        err.print(f"predicted {n} items -> {escape(output)}")


@runs_app.callback()
def runs_list(ctx: typer.Context, base: Path = typer.Option(Path("runs"), "--dir", help="parent folder of runs"),
              task: Optional[str] = typer.Option(None, "--task", help="only runs of this task"),
              sort: str = typer.Option("date", "--sort", help="date | name | task | status | dev | test"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List runs: name, task, model, status, headline metric, date."""
    if ctx.invoked_subcommand is not None:
        return
    from runassist.runs import list_runs

    rows = list_runs(base, task=task, sort=sort)
    if as_json:
        _json(rows)
        return
    columns = ["name", "task", "model", "status", "metric", "dev", "test", "date"]
    _show(f"runs in {base}", columns, [[row[c] for c in columns] for row in rows])
    for row in rows:
        if row["status"] == "interrupted":
            err.print(escape(f"{row['name']}: interrupted; continue it with `runassist train --resume {row['path']}`"))


@runs_app.command("show")
def runs_show(run: Path, as_json: bool = typer.Option(False, "--json")) -> None:
    """A run's summary."""
    from runassist.atomic import read_json
    from runassist.runs import require

    from runassist.runs import live_status

    summary = read_json(require(run, "summary.json") / "summary.json")
    summary["status"] = live_status(summary)
    if summary["status"] == "interrupted":
        summary["resume_with"] = f"runassist train --resume {run}"
    if as_json:
        _json(summary)
        return
    rows = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if not isinstance(v, dict))
        rows.append([key, value])
    _show(str(run), None, rows)


@runs_app.command("compare")
def runs_compare(a: Path, b: Path, data: Optional[str] = typer.Option(None, "--data", help="dev | test | path | alias"),
                 samples: int = typer.Option(1000, "--samples", help="bootstrap resamples"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Both runs on the same test data, per label and overall, with a paired bootstrap CI."""
    from runassist.compare import compare_runs, render_comparison

    result = compare_runs(a, b, data=data, n=samples)
    if as_json:
        _json(result)
    else:
        render_comparison(result, out)


@app.command()
def report(run: Path, output: Optional[Path] = typer.Option(None, "-o", "--output", help="default: RUN/report.html")) -> None:
    """One self-contained HTML report (curves, scores, errors) plus PNGs in RUN/plots/."""
    from runassist.report import write_report

    path = write_report(run, output=output)
    err.print(escape(f"wrote {path}"))


@app.command()
def export(run: Path, fmt: str = typer.Option("onnx", "--format", help="onnx"),
           quantize: Optional[str] = typer.Option(None, "--quantize", help="int8"),
           min_agreement: Optional[float] = typer.Option(None, "--min-agreement",
                                                         help="parity threshold on dev predictions (0.98; 0.99 "
                                                              "with --with-tokenizer)"),
           with_tokenizer: bool = typer.Option(False, "--with-tokenizer",
                                               help="one ONNX file from raw text to answers (tokenizer and "
                                                    "decoding inside; standard operators only)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Export the model for fast CPU inference, with a parity check against torch on the dev split."""
    if with_tokenizer:
        from runassist.export_text import export_with_tokenizer

        if quantize:
            raise typer.BadParameter("--with-tokenizer exports fp32 only; leave out --quantize", param_hint="--quantize")
        result = export_with_tokenizer(run, min_agreement=0.99 if min_agreement is None else min_agreement)
    else:
        from runassist.export import export as export_run

        result = export_run(run, fmt=fmt, quantize=quantize,
                            min_agreement=0.98 if min_agreement is None else min_agreement)
    if as_json:
        _json(result)
    else:
        for key, value in result.items():
            out.print(escape(f"{key}: {value}"))
    if not result.get("passed", True):
        raise typer.Exit(1)


@app.command()
def serve(run: str = typer.Argument(..., help="a run folder, or registry:NAME@champion (follows the alias)"),
          host: str = typer.Option("127.0.0.1", "--host", help="0.0.0.0 exposes it to the network"),
          port: int = typer.Option(8000, "--port"), workers: int = typer.Option(1, "--workers"),
          backend: str = typer.Option("torch", "--backend", help="torch | onnx | openvino"),
          api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RUNASSIST_API_KEY",
                                                help="required in X-API-Key / Bearer on every route but /health"),
          max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="micro-batch gathering window"),
          max_generations: int = typer.Option(2, "--max-generations",
                                              help="chat: generations at once per worker (429 above)"),
          max_new_tokens: int = typer.Option(1024, "--max-new-tokens", help="chat: the largest max_tokens"),
          feedback: Optional[str] = typer.Option(None, "--feedback", help="feedback store: a SQLite path or a "
                                                 "SQLAlchemy URL; default for registry: refs: the registry's; none: off"),
          queue_below: Optional[float] = typer.Option(None, "--queue-below", help="queue inputs whose confidence is "
                                                      "below this for labelling")) -> None:
    """An HTTP service (and a page to try the model) for a trained run, or for a registry alias it follows."""
    from runassist.serve import serve as serve_run

    if api_key is None and os.environ.get("RUNASSIST_API_KEY") is not None:
        # click reads a variable set to "" as unset (documented), which would serve without a key; pass the
        # empty key on, for serve() to refuse it.
        api_key = os.environ["RUNASSIST_API_KEY"]

    serve_run(run, host=host, port=port, workers=workers, backend=backend, api_key=api_key, max_wait_ms=max_wait_ms,
              max_generations=max_generations, max_new_tokens=max_new_tokens, feedback=feedback,
              queue_below=queue_below)


@app.command()
def chat(run: Path, max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="longest reply"),
         temperature: Optional[float] = typer.Option(None, "--temperature", help="sample at this temperature"),
         backend: str = typer.Option("torch", "--backend")) -> None:
    """Talk to a chat run in the terminal; replies are printed as they are made. /reset, /exit."""
    from runassist.chat_session import chat_session
    from runassist.predict import Predictor

    settings: dict = {}
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    if temperature is not None:
        settings.update(do_sample=True, temperature=temperature)
    predictor = Predictor.from_run(run, backend=backend)
    if sys.stdin.isatty():
        err.print(escape(f"chatting with {run.name} (/reset starts over, /exit ends)"))
    chat_session(predictor, settings=settings or None)


@app.command()
def mcp(run: Path, backend: str = typer.Option("torch", "--backend")) -> None:
    """An MCP server over stdio exposing the model as a tool for LLM agents."""
    import logging

    from runassist.agent import serve_mcp

    # stdout carries the protocol; warnings (a line the server could not read, say) go to stderr, one line each
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="runassist mcp: %(levelname)s: %(message)s")

    serve_mcp(run, backend=backend)


from runassist import cli_lifecycle  # noqa: E402 -- its commands join this app

cli_lifecycle.register(app)


def main() -> None:
    try:
        app()
    except RunassistError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
