"""check-data through the CLI: a broken tag sequence is reported with file:line and exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import make_ner_sentences, write_conll

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "runassist.cli"]


def test_check_data_names_file_and_line(tmp_path, tiny_model):
    train = write_conll(tmp_path / "train.conll", make_ner_sentences(20))
    dev = tmp_path / "dev.conll"
    dev.write_text("-DOCSTART- O\n\njohn\tB-PER\nwent\tO\n\nparis\tB-LOC\nlondon\tI-PER\n", encoding="utf-8")
    args = [*CLI, "check-data", "task=ner", f"data.train={train}", f"data.dev={dev}", f"model.source={tiny_model}"]
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{dev}:7" in done.stdout, done.stdout
    assert "I-PER" in done.stdout and "B-LOC" in done.stdout

    clean = subprocess.run([*CLI, "check-data", "task=ner", f"data.train={train}", f"data.dev={train}",
                            f"model.source={tiny_model}"], env=ENV, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr  # duplicates across splits only warn
    assert "warning" in clean.stdout
