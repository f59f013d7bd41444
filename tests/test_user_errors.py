"""Mistakes a user makes get one line and exit 2 (or check-data's full list), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import make_ner_sentences, write_conll

CLI = [sys.executable, "-m", "runassist.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("source,needles", [
    ("MiniLM", ["'MiniLM' is not a packaged model", "did you mean 'minilm'"]),
    ("runs/nope/model", ["no folder 'runs/nope/model'", "a local model folder", "hub name"]),
    ("bert-base-uncased", ["'bert-base-uncased' is not a local folder", "not in the cache while HF_HUB_OFFLINE"]),
])
def test_model_source_mistakes_are_one_line(tmp_path, source, needles):
    train = write_conll(tmp_path / "train.conll", make_ner_sentences(8))
    done = subprocess.run([*CLI, "train", "task=ner", f"data.train={train}", f"model.source={source}",
                           f"output.dir={tmp_path / 'runs'}"], env=ENV, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_an_unknown_alias_is_not_a_missing_file(tmp_path):
    done = subprocess.run([*CLI, "train", "task=ner", "data.train=wnut17:train"], env=ENV, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "file not found" not in done.stderr
    assert "wnut17:train: not a packaged data set, nor a file" in done.stderr and "wnut16:train" in done.stderr


def test_check_data_lists_every_malformed_line_with_a_cap(tmp_path):
    from runassist.config import DataConfig, ModelConfig
    from runassist.data.checks import MAX_LISTED, check_data
    from runassist.tasks.ner import NerSection, NerTask

    good = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in make_ner_sentences(10))
    bad_lines = "\n".join(f"broken{i}" for i in range(3))  # one column: no tag
    path = tmp_path / "train.conll"
    path.write_text(good + "\n\n" + bad_lines + "\n", encoding="utf-8")
    task = NerTask(NerSection(), DataConfig(train=str(path)), ModelConfig())
    report = check_data(task, DataConfig(train=str(path)))
    listed = [e for e in report.errors if "expected a token and a tag" in e]
    assert len(listed) == 3 and all(f"'broken{i}'" in listed[i] for i in range(3))
    assert report.splits["train"].examples == 10  # the good sentences are still counted

    many = tmp_path / "many.conll"
    many.write_text(good + "\n\n" + "\n".join(f"x{i}" for i in range(MAX_LISTED + 20)) + "\n", encoding="utf-8")
    report = check_data(task, DataConfig(train=str(many)))
    assert sum("expected a token and a tag" in e for e in report.errors) == MAX_LISTED
    assert f"{many}: 20 more problems like these ({MAX_LISTED + 20} in all)" in report.errors
