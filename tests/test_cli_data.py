"""check-data through the CLI: a broken tag sequence is reported with file:line and exit code 1; the
statistics it computed are printed in full (tab-separated when stdout is not a terminal)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import make_ner_sentences, write_conll

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "runassist.cli"]


def _table(stdout: str) -> dict[str, dict[str, str]]:
    """The 'splits' table as {split: {column: cell}}."""
    lines = stdout.splitlines()
    start = lines.index("# splits")
    header = lines[start + 1].split("\t")
    rows = {}
    for line in lines[start + 2:]:
        cells = line.split("\t")
        if len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header, cells))
    return rows


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


def test_check_data_prints_every_statistic_it_computed(tmp_path, tiny_model):
    sentences = make_ner_sentences(20)
    train = write_conll(tmp_path / "train.conll", sentences)
    long = tmp_path / "long.conll"
    long.write_text("\n".join("the\tO" for _ in range(40)) + "\n\nparis\tB-LOC\n", encoding="utf-8")
    done = subprocess.run([*CLI, "check-data", "task=ner", f"data.train={train}", f"data.dev={long}",
                           f"model.source={tiny_model}", "model.max_length=16", "model.stride=4"],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    table = _table(done.stdout)
    words = sum(len(s) for s in sentences)
    assert table["train"]["examples"] == "20" and table["train"]["words"] == str(words)
    assert table["dev"]["examples"] == "2" and table["dev"]["words"] == "41"
    # sub-token lengths with [CLS] and [SEP]: "the" is one sub-token, so the 40-word sentence is 42
    assert table["dev"]["sub-tokens"] == "p50 3 / p90 42 / p99 42 / max 42"
    # 16 minus [CLS] and [SEP] leaves 14 words in the first window; the other 26 come through windows
    assert table["dev"]["past max_length"] == "26"
    assert table["dev"]["labels"] == "LOC 1"
