"""`runassist queue`: the least certain inputs first, a share of random picks, no near-duplicates,
written for a person to correct."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import REPO, make_ner_sentences, train_tiny_ner
from runassist.inference import outputs_for
from runassist.label_queue import _entropy, build_queue, pick, read_pool, uncertainty, write_queue
from runassist.predict import Predictor
from serve_fixtures import RUNASSIST


@pytest.fixture(scope="module")
def predictor(tiny_model, tmp_path_factory):
    return Predictor.from_run(train_tiny_ner(tiny_model, tmp_path_factory.mktemp("queue"), steps=12))


def _pool(tmp_path, n=60):
    lines = [" ".join(w for w, _ in s) for s in make_ner_sentences(n, seed=7)]
    lines += [lines[0].upper(), lines[1] + " 2024 !"]  # near-duplicates of the first two
    path = tmp_path / "pool.txt"
    path.write_text("\n".join(lines) + "\n\n")
    return path, lines


def test_margin_ranks_by_the_least_certain_token(predictor, tmp_path):
    path, lines = _pool(tmp_path)
    task = predictor.task
    examples = read_pool(task, str(path))
    assert len(examples) == len(lines)
    scores = uncertainty(task, predictor, examples, "margin")
    # recomputed here: the smallest top-2 logit gap over each sentence's tokens, negated
    features = task.encode(examples, predictor.processor, predictor.state)
    outputs = outputs_for(task, predictor.model, features, predictor.processor, predictor.state)
    margins = task.margins(features, outputs, predictor.state)
    for f, m in zip(features, margins):
        assert scores[f.example] >= -m - 1e-9
    rows = build_queue(predictor, examples, k=20, strategy="margin", random_share=0.25, seed=3)
    assert len(rows) == 20
    uncertain = [r for r in rows if r["reason"] == "uncertain"]
    assert len(uncertain) == 15 and sum(r["reason"] == "random" for r in rows) == 5
    picked = {r["index"] for r in rows}
    twins = {0, 1, len(lines) - 2, len(lines) - 1}  # one of each near-duplicate pair is skipped
    left = [scores[i] for i in range(len(lines)) if i not in picked and i not in twins]
    assert min(r["score"] for r in uncertain) >= max(left)  # nothing left behind was less certain
    # the most uncertain input overall is the first pick, unless it is a near-duplicate of none (it is first)
    assert rows[0]["index"] == int(np.argmax(scores))
    again = build_queue(predictor, examples, k=20, strategy="margin", random_share=0.25, seed=3)
    assert [r["index"] for r in again] == [r["index"] for r in rows]


def test_near_duplicates_are_dropped():
    class Ex:
        def __init__(self, text):
            self.text = text

    examples = [Ex("John went to Paris today"), Ex("john went to paris today!!"), Ex("JOHN went to Paris 2 today"),
                Ex("mary lives in london"), Ex("the movie was great fun")]
    chosen = pick(examples, [5, 4, 3, 2, 1], k=5, random_share=0.0)
    assert [i for i, _ in chosen] == [0, 3, 4]  # 1 and 2 are the first again
    assert _entropy(np.array([[0.0, 0.0], [10.0, 0.0]])) == pytest.approx(np.log(2))


def test_queue_command_writes_conll_to_correct(predictor, tmp_path):
    path, lines = _pool(tmp_path)
    out = tmp_path / "next.conll"
    done = subprocess.run([RUNASSIST, "queue", str(predictor.run), "--pool", str(path), "-k", "10", "-o", str(out),
                           "--strategy", "entropy"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "10 of 62 inputs to label" in done.stdout
    back = predictor.task.read(str(out))  # a CoNLL file the task reads: the model's tags, to be corrected
    assert len(back) == 10 and all(ex.tags and len(ex.tags) == len(ex.tokens) for ex in back)
    jsonl = write_queue(predictor.task, build_queue(predictor, read_pool(predictor.task, str(path)), k=3,
                                                    strategy="random", seed=1), tmp_path / "next.jsonl")
    import json

    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(rows) == 3 and all(r["reason"] == "random" and "entities" in r for r in rows)
