"""Config loading, overrides and one-line errors; `init` writes a config that teaches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from runassist.tasks import load_config, validate_config
from runassist.errors import ConfigError
from runassist.init_config import COMMENTS, render, task_comments

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
CLI = [sys.executable, "-m", "runassist.cli"]


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: ner\ntrain:\n  lr: 3.0e-5\n  lora: {r: 4}\n")
    cfg = load_config(path, ["train.lr=1e-4", "data.train=my.conll", "train.early_stopping.patience=7",
                             "train.eval_every=50", "train.class_weights={B-PER: 2.0}", "train.lora.alpha=32"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.data.train == "my.conll"
    assert cfg.train.early_stopping.patience == 7
    assert cfg.train.eval_every == 50
    assert cfg.train.class_weights == {"B-PER": 2.0}
    assert cfg.train.lora.r == 4 and cfg.train.lora.alpha == 32
    assert cfg.task.name == "ner"
    assert load_config(None, ["task=classify", "task.multi_label=true"]).task.multi_label is True
    with pytest.raises(Exception):
        cfg.train.lr = 1.0  # frozen: sections below the CLI cannot mutate it


@pytest.mark.parametrize("override,needles", [
    ("train.lrr=1", ["train.lrr", "'lrr'", "valid keys of train", "lr,", "epochs", "early_stopping"]),
    ("train.optimizer=adam", ["train.optimizer", "'adam'", "adamw", "sgd"]),
    ("train.precision=int4", ["train.precision", "auto", "bf16", "fp16", "fp32"]),
    ("train.freeze=top:2", ["train.freeze", "bottom:N", "head_only"]),
    ("train.batch_size=0", ["train.batch_size", "greater than or equal to 1"]),
    ("task=summarize", ["task.name", "'summarize'", "ner", "classify", "qa", "relations"]),
    ("model.stride=200", ["model.stride", "max_length"]),
    ("nosection.x=1", ["unknown section 'nosection'", "train", "output"]),
    ("train.lr", ["expected section.key=value"]),
    ("train.lora.rank=4", ["train.lora.rank", "valid keys of train.lora", "target_modules"]),
])
def test_errors_name_the_key_and_the_allowed(override, needles):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["task=ner", override])
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 1\n   epochs: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("task", ["ner", "classify", "qa", "relations", "seq2seq"])
def test_init_comments_every_key_and_loads(task, tmp_path):
    text = render(task)
    cfg = validate_config(yaml.safe_load(text))
    assert cfg.task.name == task
    dumped = cfg.model_dump()
    keys = [f"{s}.{k}" for s, section in dumped.items() for k in section]
    keys += [f"train.early_stopping.{k}" for k in dumped["train"]["early_stopping"]]
    comments = {**COMMENTS, **task_comments(task)}
    for key in keys:
        assert comments.get(key), key
        leaf = key.split(".")[-1]
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{leaf}:"))
        assert "#" in line, line


def test_init_then_override_through_the_cli(tmp_path):
    out = tmp_path / "x.yaml"
    done = subprocess.run([*CLI, "init", "ner", "-o", str(out)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_config(out, ["train.lr=1e-4"]).train.lr == 1e-4
    out.write_text(out.read_text() + "# my edits\n")
    again = subprocess.run([*CLI, "init", "ner", "-o", str(out)], env=ENV, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr
    assert out.read_text().endswith("# my edits\n")  # an edited config is never overwritten silently
    forced = subprocess.run([*CLI, "init", "ner", "-o", str(out), "--force"], env=ENV, capture_output=True, text=True)
    assert forced.returncode == 0 and not out.read_text().endswith("# my edits\n")
    done = subprocess.run([*CLI, "train", str(out), "train.lrr=1"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "lrr" in done.stderr and "valid keys of train" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_env_json_holds_the_facts():
    done = subprocess.run([*CLI, "env", "--json"], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["versions"]["torch"].startswith("2.13.0")
    for key in ("transformers", "accelerate"):
        assert facts["versions"][key]
    assert facts["cpu"]["cores_usable"] >= 1 and isinstance(facts["cpu"]["bf16_fast"], bool)
    assert facts["memory"]["total_mb"] > 0 and facts["disk"]["free_mb"] > 0
    assert isinstance(facts["gpus"], list)
    assert facts["hub"]["offline_env"] is True and facts["hub"]["reachable"] is None
    rec = facts["recommendations"]
    assert rec["precision"] in ("bf16", "fp32") and rec["threads"] >= 1 and 8 <= rec["batch_size"] <= 64
