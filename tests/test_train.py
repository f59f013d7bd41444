"""The training engine on a tiny model: every knob runs, freezing, LoRA, early stopping, the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ner_overrides
from runassist.tasks import load_config
from runassist.train.run import train


def _train(ner_files, tiny_model, tmp_path, **kw):
    cfg = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "runs", **kw))
    return train(cfg, progress=False)


def test_run_folder_holds_every_file(ner_files, tiny_model, tmp_path):
    result = _train(ner_files, tiny_model, tmp_path, epochs=12, lr="3e-3", warmup_ratio=0, log_every=5,
                    early_stopping="null")
    run = result.run
    for name in ("config.yaml", "env.json", "labels.json", "metrics.jsonl", "summary.json",
                 "model/model.safetensors", "model/config.json", "model/tokenizer.json", "model/task.json",
                 "checkpoints/last/model.safetensors", "checkpoints/last/optimizer.pt",
                 "checkpoints/last/scheduler.pt", "checkpoints/last/rng.pt", "checkpoints/last/state.json",
                 "eval/test.json", "eval/test.conll"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["best"]["metric"] == "f1"
    for split in ("dev", "test"):
        for key in ("f1", "precision", "recall"):
            assert 0.0 <= summary[split][key] <= 1.0
    # the tiny model learns the name lists: far above the 0 an untrained head scores
    assert summary["test"]["f1"] > 0.8, summary["test"]
    assert summary["tokens_per_second"] > 0
    assert 0.0 <= summary["padding_fraction"] < 0.5
    assert summary["peak_memory_mb"] > 0
    # how the thread count was chosen, as the CPU looked when training started (env.json agrees)
    seen = summary["threads_chosen_from"]
    assert seen["set_by"] in ("config", "free cores") and seen["cores_usable"] >= 1
    env_cpu = json.loads((run / "env.json").read_text())["facts"]["cpu"]
    assert (seen["busy_cores"], seen["others_cores"]) == (env_cpu["busy_cores"], env_cpu["others_cores"])
    assert summary["inputs"] == {"examples": 64, "features": 64, "examples_cut": 0, "examples_windowed": 0,
                                 "examples_dropped": 0}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    trains = [r for r in rows if r["kind"] == "train"]
    assert len(evals) == 12 and all("f1" in r for r in evals)
    assert trains and all({"step", "epoch", "loss", "lr", "tokens_per_second", "elapsed"} <= set(r) for r in trains)
    # the kept model is the best dev evaluation, and loads with from_pretrained
    assert summary["best"]["value"] == max(r["f1"] for r in evals)
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(run / "model")
    assert model.config.num_labels == len(json.loads((run / "labels.json").read_text())["labels"])


def _auto_precision() -> str:
    """What `auto` must pick on this CPU, read from /proc/cpuinfo here rather than from runassist:
    bf16 where the CPU computes it natively (AVX512-BF16 or AMX), fp32 elsewhere."""
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    return "bf16" if flags & {"avx512_bf16", "amx_bf16"} else "fp32"


@pytest.mark.parametrize("optimizer,scheduler,precision", [
    ("adamw", "linear", "fp32"), ("sgd", "cosine", "fp32"), ("adamw", "constant", "bf16"),
    ("adamw", "cosine", "fp16"), ("sgd", "linear", "auto")])
def test_each_optimizer_scheduler_precision_runs(ner_files, tiny_model, tmp_path, optimizer, scheduler, precision):
    result = _train(ner_files, tiny_model, tmp_path, optimizer=optimizer, scheduler=scheduler, precision=precision,
                    max_steps=6, grad_accum=2, dropout=0.2, class_weights="balanced")
    summary = result.summary
    assert summary["steps"] == 6
    assert summary["engine"]["precision"] == (precision if precision != "auto" else _auto_precision())
    rows = [json.loads(x) for x in (result.run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in rows if r["kind"] == "train")  # no NaN


def test_scheduler_shapes_learning_rate(ner_files, tiny_model, tmp_path):
    result = _train(ner_files, tiny_model, tmp_path, max_steps=10, warmup_ratio=0.2, log_every=1, lr="1e-3",
                    early_stopping="null")
    lrs = [json.loads(x)["lr"] for x in (result.run / "metrics.jsonl").read_text().splitlines()
           if json.loads(x)["kind"] == "train"]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1e-3)  # 2 warm-up steps, then the peak
    assert lrs[-1] < lrs[2]  # linear decay


@pytest.mark.parametrize("freeze", ["head_only", "embeddings", "bottom:1"])
def test_freezing_leaves_frozen_weights_bit_identical(ner_files, tiny_model, tmp_path, freeze):
    before = load_file(tiny_model / "model.safetensors")
    result = _train(ner_files, tiny_model, tmp_path, freeze=freeze, max_steps=5, lr="1e-2")
    after = load_file(result.run / "model" / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in after.items()}
    before = {k.removeprefix("bert."): v for k, v in before.items()}
    frozen = {"head_only": lambda k: True, "embeddings": lambda k: k.startswith("embeddings."),
              "bottom:1": lambda k: k.startswith(("embeddings.", "encoder.layer.0."))}[freeze]
    checked = changed = 0
    for key, value in before.items():
        if key not in after or key.startswith("pooler"):
            continue
        if frozen(key):
            assert torch.equal(value, after[key]), key
            checked += 1
        elif not torch.equal(value, after[key]):
            changed += 1
    assert checked > 0
    if freeze != "head_only":
        assert changed > 0  # the unfrozen layers did train
    assert not torch.equal(after["classifier.weight"], torch.zeros_like(after["classifier.weight"]))


def test_lora_trains_only_adapters(ner_files, tiny_model, tmp_path):
    result = _train(ner_files, tiny_model, tmp_path, max_steps=8, lr="1e-2", lora="{r: 4, alpha: 8}")
    summary = result.summary
    assert summary["trainable_parameters"] < summary["parameters"] * 0.25
    # merged on save: a plain model folder without adapter files, with the base weights changed by LoRA
    model_dir = result.run / "model"
    assert not (model_dir / "adapter_config.json").exists()
    after = load_file(model_dir / "model.safetensors")
    before = load_file(tiny_model / "model.safetensors")
    assert not any("lora" in k for k in after)
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after["bert." + key])  # the merged adapter moved it
    key = "encoder.layer.0.attention.self.key.weight"  # not a LoRA target: untouched
    assert torch.equal(before[key], after["bert." + key])


def test_lora_adapter_only_save_predicts(ner_files, tiny_model, tmp_path):
    from runassist.predict import Predictor

    from runassist.evaluate import evaluate

    result = _train(ner_files, tiny_model, tmp_path, epochs=8, lr="3e-2", lora="{r: 4, merge: false}",
                    early_stopping="null")
    assert (result.run / "model" / "adapter_config.json").exists()
    assert not (result.run / "model" / "model.safetensors").exists()  # the adapter alone
    # base model + adapter, as loaded for prediction, is the model that was scored at the end of training
    scores = evaluate(result.run, predictor=Predictor.from_run(result.run))["scores"]
    assert scores["f1"] == pytest.approx(result.summary["test"]["f1"]) and scores["f1"] > 0.3


def test_early_stopping_keeps_the_best_model(ner_files, tiny_model, tmp_path):
    # min_delta 2.0 cannot be beaten: only the first evaluation counts as best, then patience runs out.
    result = _train(ner_files, tiny_model, tmp_path, epochs=20, eval_every=3, lr="1e-2", scheduler="constant",
                    warmup_ratio=0, early_stopping="{patience: 2, min_delta: 2.0}")
    summary = result.summary
    assert summary["stopped_because"].startswith("early stopping")
    assert summary["best"]["step"] == 3
    assert summary["steps"] == 9  # evaluations at 3 (best), 6 and 9 (two without gain)
    # the kept model equals a run that stopped at step 3 (constant lr: same trajectory up to there)
    short = _train(ner_files, tiny_model, tmp_path / "short", max_steps=3, lr="1e-2", scheduler="constant",
                   warmup_ratio=0, early_stopping="null")
    kept = load_file(result.run / "model" / "model.safetensors")
    reference = load_file(short.run / "model" / "model.safetensors")
    last = load_file(result.run / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(kept[k], reference[k]) for k in reference)
    assert not torch.equal(last["classifier.weight"], kept["classifier.weight"])  # last != best


def test_errors_before_compute(ner_files, tiny_model, tmp_path):
    from runassist.errors import DataError, RunassistError

    bad_dev = tmp_path / "bad_dev.conll"
    bad_dev.write_text("john\tB-ANIMAL\n", encoding="utf-8")
    files = {**ner_files, "dev": bad_dev}
    with pytest.raises(DataError, match="ANIMAL"):
        train(load_config(None, ner_overrides(files, tiny_model, tmp_path / "runs")), progress=False)
    empty = tmp_path / "empty_model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(RunassistError, match="no weights"):
        train(load_config(None, ner_overrides(ner_files, empty, tmp_path / "runs")), progress=False)
    with pytest.raises(DataError, match="not found"):
        train(load_config(None, ner_overrides({**ner_files, "train": tmp_path / "nope.conll"}, tiny_model,
                                              tmp_path / "runs")), progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
