"""`runassist search`: the space checked before any trial, seeded and resumable studies, pruning, the
best trial's run and config, and (slow) real trials in their own processes with a tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pg_server import postgres_server
from conftest import REPO

from runassist.errors import ConfigError

optuna = pytest.importorskip("optuna")

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "runassist.cli"]


def _config(tmp_path: Path, files, model, *, space: dict, out: str = "runs", **search) -> Path:
    cfg = {"task": "ner", "model": {"source": str(model), "max_length": 32, "stride": 8},
           "data": {k: str(v) for k, v in files.items()},
           "train": {"batch_size": 8, "epochs": 1, "lr": 5.0e-3, "threads": 1, "precision": "fp32",
                     "eval_every": 4},
           "output": {"dir": str(tmp_path / out)},
           "search": {"space": space, **search}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


SPACE = {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "train.batch_size": {"choices": [4, 8, 16]},
         "train.warmup_ratio": {"low": 0.0, "high": 0.3}}


def _load(folder: Path):
    from runassist.search.storage import open_storage

    return optuna.load_study(study_name=folder.name, storage=open_storage(str(folder / "journal.log")))


def test_an_unknown_search_key_fails_before_any_trial(tmp_path, ner_files, tiny_model):
    from runassist.search.study import search

    path = _config(tmp_path, ner_files, tiny_model, space={"train.lrr": {"low": 1e-4, "high": 1e-2}})
    with pytest.raises(ConfigError, match=r"search\.space\.train\.lrr: .*unknown key 'lrr'; valid keys of train"):
        search(path, [], trials=2)
    bad_value = _config(tmp_path, ner_files, tiny_model, space={"train.batch_size": {"choices": [8, 0]}})
    with pytest.raises(ConfigError, match=r"search\.space\.train\.batch_size: train\.batch_size"):
        search(bad_value, [], trials=2)
    assert not (tmp_path / "runs").exists()  # no study folder, no trial


def _fake_trials(monkeypatch) -> list[dict]:
    """Trials without training: the objective is a known function of the values (what the sampler
    and the study's book-keeping are tested on)."""
    from optuna.trial import TrialState

    from runassist.search import study

    seen = []

    def run_one(spec, storage, trial, values):
        seen.append(dict(values))
        (spec.folder / f"trial-{trial.number:04d}" / "model").mkdir(parents=True)
        return TrialState.COMPLETE, -abs(values["train.lr"] - 3e-3) * 100 + values["train.batch_size"] / 100, ""

    monkeypatch.setattr(study, "run_one", run_one)
    return seen


def test_a_seeded_study_repeats_its_trials_and_trial_0_is_the_config(tmp_path, ner_files, tiny_model, monkeypatch):
    from runassist.search.study import search

    runs = []
    for out, seed in (("a", 7), ("b", 7), ("c", 8)):
        seen = _fake_trials(monkeypatch)
        path = _config(tmp_path, ner_files, tiny_model, space=SPACE, out=out, seed=seed, keep=2)
        result = search(path, [], trials=6)
        runs.append((seen, result))
    (first, result), (again, _), (other, _) = runs
    assert first == again and first != other
    assert first[0] == {"train.lr": 5e-3, "train.batch_size": 8, "train.warmup_ratio": 0.1}  # the config's own
    assert len({json.dumps(v, sort_keys=True) for v in first}) == 6

    folder = result.folder
    handle = _load(folder)
    values = {t.number: t.value for t in handle.get_trials()}
    best = max(values, key=values.get)
    assert result.best["trial"] == best and result.best["value"] == values[best]
    assert os.readlink(folder / "best") == f"trial-{best:04d}"
    best_cfg = yaml.safe_load((folder / "best.yaml").read_text())
    assert best_cfg["train"]["lr"] == pytest.approx(handle.trials[best].params["train.lr"])
    assert best_cfg["search"]["space"] == {} and best_cfg["output"]["name"] is None
    kept = sorted(p.parent.name for p in folder.glob("trial-*/model"))  # weights of the best 2 only
    top2 = sorted(values, key=values.get, reverse=True)[:2]
    assert kept == sorted(f"trial-{n:04d}" for n in top2)

    # the same command again: nothing more to do; a larger N resumes up to N in total
    seen = _fake_trials(monkeypatch)
    path = _config(tmp_path, ner_files, tiny_model, space=SPACE, out="a", seed=7, keep=2)
    search(path, [], trials=6)
    assert seen == []
    search(path, [], trials=8)
    assert len(seen) == 2 and len(_load(folder).trials) == 8
    report = (folder / "study.html").read_text()
    assert "Optimisation history" in report and "train.warmup_ratio" in report and "Parameter importance" in report


def test_a_budget_sample_is_seeded_and_keeps_every_label():
    from conftest import make_ner_sentences

    from runassist.config import DataConfig, ModelConfig
    from runassist.data.records import TokenExample
    from runassist.tasks import task_class
    from runassist.train.run import sample_covering

    task = task_class("ner")(task_class("ner").Section(), DataConfig(), ModelConfig())
    examples = [TokenExample(tokens=[w for w, _ in s], tags=[t for _, t in s]) for s in make_ner_sentences(200)]
    examples.append(TokenExample(tokens=["rare"], tags=["B-RARE"]))  # one label in one example only
    picked = sample_covering(task, examples, 0.1, seed=1)
    assert 20 <= len(picked) <= 27 and picked == sample_covering(task, examples, 0.1, seed=1)
    assert set(task.label_counts(picked)) == set(task.label_counts(examples))
    assert picked != sample_covering(task, examples, 0.1, seed=2)


def test_a_storage_url_is_shown_without_its_password():
    from runassist.search.storage import shown

    assert shown("postgresql+psycopg://me:s3cret@db/studies") == "postgresql+psycopg://me:***@db/studies"
    assert shown("/tmp/x/journal.log") == "/tmp/x/journal.log"


def test_a_trial_reporting_bad_values_is_pruned(tmp_path):
    from runassist.config import SearchConfig
    from runassist.search.storage import open_storage
    from runassist.search.trial import PRUNED, Pruning, make_pruner

    storage = open_storage(str(tmp_path / "journal.log"))
    handle = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                 pruner=make_pruner(SearchConfig(pruner="median", prune_after=2), 10))
    for value in (0.8, 0.9):
        good = handle.ask()
        good.report(value, 1)
        good.report(value, 2)
        handle.tell(good, value)
    stops = []
    for curve in ([0.88, 0.95], [0.1, 0.2]):
        trial = optuna.trial.Trial(handle, handle.ask()._trial_id)
        callback, ctx = Pruning(trial, "f1"), SimpleNamespace(stop_reason=None)
        for value in curve:
            callback.on_eval(ctx, None, {"f1": value, "precision": 1.0})
            if ctx.stop_reason:
                break
        stops.append(ctx.stop_reason)
    assert stops[0] is None  # above the median: goes on
    assert stops[1].startswith(PRUNED) and "evaluation 1" in stops[1]  # the first bad value stops it
    assert handle.trials[3].intermediate_values == {1: 0.1}


def _tiny_study(tmp_path, ner_files, tiny_model, **search) -> Path:
    return _config(tmp_path, ner_files, tiny_model, space={"train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
                                                           "train.batch_size": {"choices": [8, 16]}}, **search)


@pytest.mark.slow
def test_two_workers_real_trials_named_metric_best_run_and_mlflow_children(tmp_path, ner_files, tiny_model):
    from mlflow.tracking import MlflowClient

    path = _tiny_study(tmp_path, ner_files, tiny_model, metric="precision", keep=1, pruner="none")
    done = subprocess.run([*CLI, "search", str(path), "output.track=mlflow", "--trials", "2", "--workers", "2",
                           "--budget", "0.5"], env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    trials = _load(folder).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2  # exactly N, none twice
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 2
    assert len({t.user_attrs["owner"]["pid"] for t in trials}) == 2  # one trial in each worker, side by side
    for t in trials:  # each trial an ordinary run folder; its value is the named metric of its kept model
        run = folder / f"trial-{t.number:04d}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and 32 <= summary["train_examples"] < 64  # --budget 0.5 of 64
        assert summary["best"]["metric"] == "precision" and t.value == summary["dev"]["precision"]
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert (folder / "best").resolve() == (folder / f"trial-{best.number:04d}").resolve()
    assert sorted(p.parent.name for p in folder.glob("trial-*/model")) == [f"trial-{best.number:04d}"]
    assert not list(folder.glob("trial-*/checkpoints"))  # a finished trial is never resumed
    best_cfg = yaml.safe_load((folder / "best.yaml").read_text())
    assert best_cfg["data"]["train_fraction"] is None  # the full data, ready for `runassist train`
    assert "trial" in (folder / "study.html").read_text()

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    study_run = _load(folder).user_attrs["mlflow_run_id"]
    children = client.search_runs([client.get_run(study_run).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{study_run}'")
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert client.get_run(study_run).info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(study_run)} == {"best.yaml", "study.json", "study.html"}
    assert "model" not in {a.path for a in client.list_artifacts(children[0].info.run_id)}  # no 12 uploads


@pytest.mark.slow
def test_kill_9_mid_trial_then_the_same_command_ends_with_n_trials(tmp_path, ner_files, tiny_model):
    path = _tiny_study(tmp_path, ner_files, tiny_model, pruner="none")
    command = [*CLI, "search", str(path), "train.epochs=3", "--trials", "1"]
    proc = subprocess.Popen(command, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    folder = tmp_path / "runs" / "study"
    deadline = time.time() + 120
    while not list(folder.glob("trial-0000/metrics.jsonl")):  # the first trial is training
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the trial's process follows its parent (PR_SET_PDEATHSIG)
    trials = _load(folder).get_trials()
    assert [t.state.name for t in trials] == ["RUNNING"]

    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _load(folder).get_trials()
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "COMPLETE"], states  # exactly N=1 complete
    assert trials[0].user_attrs["failed_because"] == "its worker process died"
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == trials[0].params  # tried again
    assert json.loads((folder / "study.json").read_text())["counted"] == 1
    assert (folder / "best").resolve() == (folder / "trial-0001").resolve()


@pytest.mark.slow
def test_a_study_in_postgresql_resumes_from_another_command(ner_files, tiny_model, monkeypatch):
    import tempfile

    from runassist.search.study import search

    tmp = Path(tempfile.mkdtemp(prefix="runassist-search-pg-", dir="/tmp"))
    try:
        with postgres_server() as url:
            seen = _fake_trials(monkeypatch)
            path = _config(tmp, ner_files, tiny_model, space=SPACE, seed=5)
            search(path, [], trials=3, storage=url, study="shared")
            search(path, [], trials=5, storage=url, study="shared")  # another machine joining runs the rest
            handle = optuna.load_study(study_name="shared", storage=url)
            assert len(seen) == 5 and [t.state.name for t in handle.trials] == ["COMPLETE"] * 5
            assert handle.trials[0].params == {"train.lr": 5e-3, "train.batch_size": 8, "train.warmup_ratio": 0.1}
            assert json.loads((tmp / "runs" / "shared" / "study.json").read_text())["storage"].startswith(
                "postgresql+psycopg://runassist@")
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
