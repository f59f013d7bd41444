"""Resume edge cases, in process: an interrupt during evaluation, LoRA's best model, finished runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import ner_overrides
from runassist.tasks import load_config
from runassist.errors import RunassistError
from runassist.train import run as run_module
from runassist.train.run import train

SETTINGS = dict(max_steps=12, eval_every=2, lr="3e-3", dropout=0.1, early_stopping="{patience: 10}")


def _interrupt_eval_at(monkeypatch, step: int):
    real = run_module._dev_scores
    calls = {"n": 0}

    def flaky(ctx, examples, features):
        calls["n"] += 1
        if calls["n"] == step // 2:
            raise KeyboardInterrupt
        return real(ctx, examples, features)

    monkeypatch.setattr(run_module, "_dev_scores", flaky)


@pytest.mark.parametrize("lora", [None, "{r: 4}"])
def test_interrupt_during_evaluation_then_resume_matches(ner_files, tiny_model, tmp_path, monkeypatch, lora):
    extra = {"lora": lora} if lora else {}
    straight = train(load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "a", **SETTINGS, **extra)),
                     progress=False)
    _interrupt_eval_at(monkeypatch, step=8)
    cfg = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "b", **SETTINGS, **extra))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    [run] = [p for p in (tmp_path / "b").iterdir() if (p / "config.yaml").exists()]
    monkeypatch.undo()
    resumed = train(None, resume=run, progress=False)

    def evals(r):
        return [(row["step"], row["f1"]) for row in map(json.loads, (r / "metrics.jsonl").open())
                if row["kind"] == "eval"]

    assert evals(resumed.run) == evals(straight.run)  # the cut-short evaluation at step 8 was redone
    assert resumed.summary["best"] == straight.summary["best"]
    a = load_file(straight.run / "model" / "model.safetensors")
    b = load_file(resumed.run / "model" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # model/ is the best model in both


def test_resuming_a_finished_run_is_refused(ner_files, tiny_model, tmp_path):
    done = train(load_config(None, ner_overrides(ner_files, tiny_model, tmp_path, max_steps=2)), progress=False)
    with pytest.raises(RunassistError, match="already finished"):
        train(None, resume=done.run, progress=False)


def _evals(run):
    return [(row["step"], row["f1"]) for row in map(json.loads, (run / "metrics.jsonl").open()) if row["kind"] == "eval"]


class Killed(Exception):
    """Stands for kill -9: nothing is saved on the way out."""


def test_a_kill_right_after_an_evaluation_does_not_evaluate_it_again(ner_files, tiny_model, tmp_path, monkeypatch):
    """The checkpoint taken at an evaluation holds its result: resuming from it must neither log that
    evaluation twice nor count it twice towards patience."""
    from runassist.train import callbacks

    settings = {**SETTINGS, "early_stopping": "{patience: 2, min_delta: 2.0}", "max_steps": 20}
    straight = train(load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "a", **settings)),
                     progress=False)
    real = callbacks.MetricsLog.on_step

    def on_step(self, ctx, info):
        real(self, ctx, info)
        if info.position.step == 5:  # the checkpoint on disk is the one evaluation 4 took
            raise Killed

    monkeypatch.setattr(callbacks.MetricsLog, "on_step", on_step)
    with pytest.raises(Killed):
        train(load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "b", **settings)), progress=False)
    monkeypatch.undo()
    [run] = [p for p in (tmp_path / "b").iterdir() if (p / "config.yaml").exists()]
    resumed = train(None, resume=run, progress=False)
    assert _evals(resumed.run) == _evals(straight.run)
    assert resumed.summary["stopped_because"] == straight.summary["stopped_because"]
    assert resumed.summary["steps"] == straight.summary["steps"]


def test_an_interrupt_inside_the_evaluation_callbacks_redoes_it_once(ner_files, tiny_model, tmp_path, monkeypatch):
    """Ctrl-C after the evaluation was logged and counted, before it was checkpointed: the resumed
    run starts from the state before that evaluation and does it again, once."""
    from runassist.train import callbacks

    settings = {**SETTINGS, "early_stopping": "{patience: 3, min_delta: 2.0}", "max_steps": 20}
    straight = train(load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "a", **settings)),
                     progress=False)
    real, calls = callbacks.BestModel.on_eval, {"n": 0}

    def on_eval(self, ctx, info, scores):
        calls["n"] += 1
        if calls["n"] == 3:  # evaluation at step 6: logged (MetricsLog) and counted (EarlyStopping) already
            raise KeyboardInterrupt
        real(self, ctx, info, scores)

    monkeypatch.setattr(callbacks.BestModel, "on_eval", on_eval)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "b", **settings)), progress=False)
    monkeypatch.undo()
    [run] = [p for p in (tmp_path / "b").iterdir() if (p / "config.yaml").exists()]
    resumed = train(None, resume=run, progress=False)
    assert _evals(resumed.run) == _evals(straight.run)
    assert resumed.summary["stopped_because"] == straight.summary["stopped_because"]
    assert resumed.summary["steps"] == straight.summary["steps"] and resumed.summary["best"] == straight.summary["best"]
