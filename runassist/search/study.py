"""``runassist search``: a hyperparameter study on Optuna, resumable, one process per trial.

The study folder ``<output.dir>/<study>/`` holds::

    journal.log        the study (Optuna's journal file) unless --storage names an RDB
    base.yaml          the resolved config every trial starts from
    trial-0000/ ...    one ordinary run folder per trial (`runassist runs --dir STUDY` lists them)
    best -> trial-NNNN the best trial's run (a link; a copy where links are not possible)
    best.yaml          its config on the full data, ready for `runassist train best.yaml`
    study.json         the figures; study.html: the report (trials, importances, history)
    logs/trial-NNNN.log  what each trial's process printed

What counts towards ``--trials N``: trials that completed or were pruned. A trial whose worker died
(kill -9, a lost machine) is marked FAILED and its values are tried again; a trial that fails on its
own (bad data, a batch that does not fit) is FAILED with its error, and a worker stops after
``MAX_FAILURES`` failures in a row rather than burn the machine on a broken config. Running the same
command again resumes the study until N trials count.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runassist.atomic import atomic_write, write_json
from runassist.config import Config, SearchConfig, SearchParam, to_yaml
from runassist.errors import ConfigError, RunassistError
from runassist.search import space as search_space
from runassist.search.storage import HEARTBEAT_S, is_url, open_storage, shown
from runassist.search.trial import PRUNED, die_with_parent
from runassist.tasks import load_config, make_task

WORKER_DIED = "its worker process died"
MAX_FAILURES = 3  # failed trials in a row after which a worker gives up (the config, not the values, is wrong)


@dataclass(frozen=True)
class StudySpec:
    folder: Path
    name: str
    storage: str
    trials: int
    metric: str
    direction: str  # max | min
    search: SearchConfig
    deadline: float | None  # time.time() after which no trial starts
    budget: float | None  # the fraction of the training data each trial trains on (data.train_fraction)
    parent_run: str | None  # the study's MLflow run
    say: Callable[[str], None] = field(default=lambda line: None, compare=False)

    @property
    def space(self) -> dict[str, SearchParam]:
        return self.search.space


@dataclass(frozen=True)
class StudyResult:
    folder: Path
    best: dict[str, Any] | None
    counts: dict[str, int]


def search(config: Path | None, overrides: list[str], *, trials: int, timeout: float | None = None,
           budget: float | None = None, storage: str | None = None, study: str | None = None, workers: int = 1,
           say: Callable[[str], None] = lambda line: None) -> StudyResult:
    if trials < 1:
        raise ConfigError("--trials: give at least 1")
    if budget is not None and not 0 < budget <= 1:
        raise ConfigError(f"--budget {budget}: a fraction of the training data, in (0, 1]")
    cfg = load_config(config, overrides)
    # Every key of the space against the schema, before any compute.
    search_space.check(cfg.model_dump(mode="json"), cfg.search.space)
    if not cfg.data.dev:
        raise ConfigError("data.dev: a search scores each trial on dev; give a dev split")
    task = make_task(cfg)
    metric = cfg.search.metric or task.headline
    direction = cfg.search.direction or (task.headline_mode if metric == task.headline else "max")
    name = study or (Path(config).stem if config else "study")
    folder = Path(cfg.output.dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "base.yaml", to_yaml(cfg))
    storage = storage or str((folder / "journal.log").resolve())

    handle = _open_study(storage, name, metric, direction)
    parent = _parent_run(cfg, handle, name) if "mlflow" in cfg.output.track else None
    spec = StudySpec(folder=folder.resolve(), name=name, storage=storage, trials=trials, metric=metric,
                     direction=direction, search=cfg.search, deadline=time.time() + timeout if timeout else None,
                     budget=budget, parent_run=parent, say=say)
    others = [_spawn_worker(spec, i) for i in range(1, workers)]
    try:
        work(spec, 0)
    finally:
        for proc in others:
            proc.join()
    return finish(spec, cfg)


def _open_study(storage: str, name: str, metric: str, direction: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handle = optuna.create_study(storage=open_storage(storage), study_name=name, load_if_exists=True,
                                 direction="maximize" if direction == "max" else "minimize")
    known = handle.user_attrs.get("metric")
    if known and (known != metric or handle.user_attrs.get("direction") != direction):
        raise RunassistError(f"study '{name}' optimises {handle.user_attrs.get('direction')} dev {known}, not "
                             f"{direction} {metric}; give another --study name")
    if not known:
        handle.set_user_attr("metric", metric)
        handle.set_user_attr("direction", direction)
    return handle


def _parent_run(cfg: Config, handle: Any, name: str) -> str | None:
    try:
        from runassist.train.mlflow_tracking import open_parent_run

        run_id = open_parent_run(cfg.output, name=f"search {name}", run_id=handle.user_attrs.get("mlflow_run_id"),
                                 tags={"runassist.study": name})
    except Exception as exc:  # tracking never stops the work
        print(f"warning: mlflow: the study's run could not be opened ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    handle.set_user_attr("mlflow_run_id", run_id)
    return run_id


def _spawn_worker(spec: StudySpec, index: int) -> Any:
    import dataclasses
    import multiprocessing

    # A fresh interpreter gets the spec by pickling: the caller's ``say`` may be a closure, so a worker
    # prints its lines to stderr itself.
    spec = dataclasses.replace(spec, say=_print_line)
    proc = multiprocessing.get_context("spawn").Process(target=_worker_main, args=(spec, index), daemon=False)
    proc.start()
    return proc


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _worker_main(spec: StudySpec, index: int) -> None:
    die_with_parent()
    work(spec, index)


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """Counting trials and asking for the next one happen under this machine's lock, so two workers
    never both start the N-th trial. (Workers on other machines share an RDB: there a race can start
    one trial more than N, never fewer.)"""
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def counted(trial: Any) -> bool:
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)


def work(spec: StudySpec, index: int) -> None:
    """One worker: ask for a trial, run it in a process of its own, tell the result; until N count."""
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(spec.storage)
    existing = len(optuna.load_study(study_name=spec.name, storage=storage).get_trials(deepcopy=False))
    # Each worker its own seed (two workers with one seed would propose the same values); a fresh
    # single-worker study starts from search.seed exactly, so the same seed repeats the same trials.
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed + index + existing, constant_liar=True,
                                         n_startup_trials=max(3, min(10, spec.trials // 3)))
    handle = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler)
    failures = 0
    while True:
        if failures >= MAX_FAILURES:
            spec.say(f"worker {index}: {failures} trials in a row failed; stopping (see {spec.folder / 'logs'})")
            return
        with _lock(spec.folder):
            fail_dead(handle, rdb=is_url(spec.storage))
            trials = handle.get_trials(deepcopy=False)
            if not trials:  # trial 0: the config's own values, so the baseline is always measured
                base = load_config(spec.folder / "base.yaml")
                handle.enqueue_trial(search_space.baseline(base, spec.space), user_attrs={"baseline": True})
            done = sum(counted(t) for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done + running >= spec.trials or (spec.deadline is not None and time.time() > spec.deadline):
                return
            trial = handle.ask()
            trial.set_user_attr("owner", _owner())
            values = search_space.suggest(trial, spec.space)
            trial.set_user_attr("run", f"trial-{trial.number:04d}")
        state, value, error = run_one(spec, storage, trial, values)
        failures = failures + 1 if state == TrialState.FAIL else 0
        with _lock(spec.folder):
            if error:
                trial.set_user_attr("error", error[-500:])
            handle.tell(trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True)
            _after_trial(spec, handle)
        outcome = f"dev {spec.metric} {value:.4f}" if value is not None else state.name.lower()
        spec.say(f"trial {trial.number}: {outcome} ({', '.join(f'{k}={_short(v)}' for k, v in values.items())})"
                 + (f": {error.strip().splitlines()[-1]}" if error.strip() else ""))


def run_one(spec: StudySpec, storage: Any, trial: Any, values: dict[str, Any]) -> tuple[Any, float | None, str]:
    """Run a trial's training in a child process; (state, objective, error text)."""
    from optuna.trial import TrialState

    from runassist.atomic import read_json

    run_name = f"trial-{trial.number:04d}"
    items = search_space.overrides(values) + [f"output.dir={spec.folder}", f"output.name={run_name}",
                                              f"search.pruner={_pruner_kind(spec)}"]
    if spec.budget is not None and spec.budget < 1:
        items.append(f"data.train_fraction={spec.budget}")
    base = load_config(spec.folder / "base.yaml")
    if "mlflow" in base.output.track and not base.output.tracking_uri:
        from runassist.train.mlflow_tracking import tracking_uri

        # the trials' runs go into the study's store, beside the study's own run, not one under the study folder
        items.append(f"output.tracking_uri={tracking_uri(base.output)}")
    if base.train.early_stopping is None:  # track the objective without stopping on it
        items.append(f'train.early_stopping={{"metric": "{spec.metric}", "mode": "{spec.direction}", '
                     f'"patience": 1000000}}')
    else:  # the kept model is the best on the objective, so its dev score is the trial's value
        items += [f"train.early_stopping.metric={spec.metric}", f"train.early_stopping.mode={spec.direction}"]
    try:
        cfg = load_config(spec.folder / "base.yaml", items)
    except ConfigError as exc:
        return TrialState.FAIL, None, str(exc)
    config_path = spec.folder / ".trials" / f"{run_name}.yaml"
    config_path.parent.mkdir(exist_ok=True)
    atomic_write(config_path, to_yaml(cfg))
    (spec.folder / "logs").mkdir(exist_ok=True)
    log_path = spec.folder / "logs" / f"{run_name}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "runassist.search.trial", str(config_path), spec.storage, spec.name,
               str(trial._trial_id), str(spec.trials), spec.parent_run or ""]
    heartbeat = getattr(storage, "record_heartbeat", None) if is_url(spec.storage) else None
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
        while True:
            try:
                proc.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                if heartbeat is not None:
                    heartbeat(trial._trial_id)
    summary_path = spec.folder / run_name / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {}
    if proc.returncode != 0 or summary.get("status") != "finished":
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        return TrialState.FAIL, None, f"exit code {proc.returncode}: " + "\n".join(tail)
    if str(summary.get("stopped_because", "")).startswith(PRUNED):
        return TrialState.PRUNED, None, ""
    value = (summary.get("dev") or {}).get(spec.metric)
    if not isinstance(value, (int, float)):
        return TrialState.FAIL, None, f"the run has no dev {spec.metric}"
    return TrialState.COMPLETE, float(value), ""


def fail_dead(handle: Any, *, rdb: bool = False) -> list[int]:
    """RUNNING trials whose worker is gone: FAILED, and their values queued to be tried again. This
    machine's workers are checked by process id; other machines' (an RDB study) by Optuna's heartbeat."""
    from optuna.trial import TrialState

    storage = handle._storage
    dead = []
    for t in handle.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner") or {}
        if owner.get("host") != socket.gethostname() or _alive(owner):
            continue
        storage.set_trial_user_attr(t._trial_id, "failed_because", WORKER_DIED)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        dead.append(t.number)
        if t.params:
            handle.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    if rdb:  # other machines' workers: by heartbeat
        dead += _fail_stale(handle)
    return dead


def _fail_stale(handle: Any) -> list[int]:
    import optuna
    from optuna.trial import TrialState

    before = {t.number for t in handle.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(handle)
    after = {t.number for t in handle.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    stale = sorted(before - after)
    for t in handle.get_trials(deepcopy=False):
        if t.number in stale and t.params:
            handle.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return stale


def _owner() -> dict[str, Any]:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _alive(owner: dict[str, Any]) -> bool:
    import psutil

    try:
        return abs(psutil.Process(int(owner["pid"])).create_time() - float(owner["started"])) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):
        return False


def _pruner_kind(spec: StudySpec) -> str:
    kind = spec.search.pruner
    return ("hyperband" if spec.trials >= 30 else "median") if kind == "auto" else kind


def _package_root() -> str:
    import runassist

    return str(Path(runassist.__file__).resolve().parents[1])


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def ranked(handle: Any, direction: str) -> list[Any]:
    from optuna.trial import TrialState

    done = [t for t in handle.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(done, key=lambda t: (-t.value if direction == "max" else t.value, t.number))


def _after_trial(spec: StudySpec, handle: Any) -> None:
    """Weights for the best ``search.keep`` trials only; ``best`` and ``best.yaml`` follow the leader."""
    from optuna.trial import TrialState

    order = ranked(handle, spec.direction)
    keep = {t.number for t in order[:spec.search.keep]}
    for t in handle.get_trials(deepcopy=False):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        run = spec.folder / f"trial-{t.number:04d}"
        # A finished trial cannot be resumed, so its checkpoint (weights + optimizer: 3-4x the model) goes
        # in every case; the kept model only where the trial is among the best.
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
        if t.number not in keep:
            shutil.rmtree(run / "model", ignore_errors=True)
    if order:
        _point_best(spec.folder, f"trial-{order[0].number:04d}")
        best = load_config(spec.folder / "base.yaml", search_space.overrides(order[0].params))
        best = best.model_copy(update={"search": SearchConfig()})
        atomic_write(spec.folder / "best.yaml", f"# the best trial ({order[0].number}) of study {spec.name}: dev "
                     f"{spec.metric} {order[0].value:.4f}; its values on the full data\n" + to_yaml(best))


def _point_best(folder: Path, target: str) -> None:
    link = folder / "best"
    tmp = folder / ".best.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(target, tmp, target_is_directory=True)
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        os.replace(tmp, link)
    except OSError:  # no symlinks here: a copy, swapped in whole
        from runassist.atomic import swap_folder

        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder / target, tmp)
        swap_folder(tmp, link)


def finish(spec: StudySpec, cfg: Config) -> StudyResult:
    import optuna

    from runassist.search.report import write_study_report

    handle = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))
    with _lock(spec.folder):
        _after_trial(spec, handle)
    trials = handle.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    order = ranked(handle, spec.direction)
    best = None
    if order:
        top = order[0]
        best = {"trial": top.number, "value": top.value, "params": top.params, "run": str(spec.folder / "best"),
                "config": str(spec.folder / "best.yaml")}
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    write_json(spec.folder / "study.json", {
        "study": spec.name, "storage": shown(spec.storage), "metric": spec.metric, "direction": spec.direction,
        "trials_wanted": spec.trials, "counted": sum(counted(t) for t in trials), "states": counts,
        "best": best, "baseline": {"trial": baseline.number, "value": baseline.value, "params": baseline.params}
        if baseline is not None else None,
        "budget": spec.budget})
    write_study_report(spec.folder, storage=spec.storage)
    if spec.parent_run:
        try:
            from runassist.train.mlflow_tracking import close_parent_run

            close_parent_run(cfg.output, spec.parent_run, status="FINISHED",
                             metrics={f"best_dev_{spec.metric}": best["value"]} if best else {},
                             files=[spec.folder / name for name in ("best.yaml", "study.json", "study.html")])
        except Exception as exc:
            print(f"warning: mlflow: the study's run could not be closed ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
    return StudyResult(folder=spec.folder, best=best, counts=counts)
