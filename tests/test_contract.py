"""One contract for every task in the table: train -> save -> load -> predict, through the real CLI.

A new task gets this test for free by adding a data maker below; nothing else in the trainer,
run folder or predictor may need to learn about it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_ner_sentences, write_conll
from runassist.tasks import TASKS

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
POSITIVE = "great good fun loved".split()
NEGATIVE = "bad terrible boring hated".split()
NEUTRAL = "the movie film plot story acting was a".split()


def _sentiment_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(NEUTRAL, 4) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def _ner_data(tmp: Path) -> tuple[list[str], list, str]:
    files = {s: write_conll(tmp / f"{s}.conll", make_ner_sentences(n, seed))
             for s, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    inputs = ["mary smith visited london with google", "the river in paris"]
    return [f"data.{k}={v}" for k, v in files.items()] + ["train.lr=3e-3", "train.epochs=8"], inputs, "f1"


def _classify_data(tmp: Path) -> tuple[list[str], list, str]:
    import csv

    specs = []
    for split, n, seed in (("train", 96, 0), ("dev", 24, 1), ("test", 24, 2)):
        path = tmp / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(_sentiment_rows(n, seed))
        specs.append(f"data.{split}={path}")
    return specs + ["train.lr=3e-3", "train.epochs=6"], ["a great fun movie", "the plot was boring"], "accuracy"


DATA = {"ner": _ner_data, "classify": _classify_data}


def test_every_task_has_contract_data():
    assert set(DATA) == set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_train_save_load_predict(task, tiny_model, tmp_path):
    overrides, inputs, headline = DATA[task](tmp_path)
    common = [f"task={task}", f"model.source={tiny_model}", "model.max_length=32", "model.stride=8",
              f"output.dir={tmp_path / 'runs'}", "output.name=r", "train.batch_size=8", "train.threads=1",
              "train.precision=fp32", "train.warmup_ratio=0"]
    cli = [sys.executable, "-m", "runassist.cli"]
    done = subprocess.run([*cli, "train", "--quiet", "--no-report", *common, *overrides], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(done.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["metric"] == headline
    assert summary["test"][headline] >= 0.75, summary["test"]  # the tiny model learns the word lists

    text = tmp_path / "inputs.txt"
    text.write_text("\n".join(inputs) + "\n", encoding="utf-8")
    done = subprocess.run([*cli, "predict", str(run), str(text), "-o", str(tmp_path / "out.jsonl")], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(inputs)

    # the library path loads the same run and answers the same way
    from runassist.predict import Predictor

    assert Predictor.from_run(run).predict(inputs) == rows
    done = subprocess.run([*cli, "evaluate", str(run), "--json"], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout)["scores"]
    assert scores[headline] == pytest.approx(summary["test"][headline])
    if task == "ner":
        assert all({"label", "text", "start", "end", "score"} <= set(e) for r in rows for e in r["entities"])
        assert any(e["label"] == "PER" and e["text"] == "mary smith" for e in rows[0]["entities"]), rows[0]
    else:
        assert [r["label"] for r in rows] == ["pos", "neg"]
