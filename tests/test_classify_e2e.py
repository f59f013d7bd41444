"""Classification end to end on tiny models: multi-label thresholds, Chinese characters, CSV predict."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from conftest import CJK
from runassist.tasks import load_config
from runassist.predict import Predictor, predict_file
from runassist.train.run import train

TOPICS = {"tech": ["apple", "google"], "travel": ["paris", "london"], "people": ["john", "mary"]}
FILLER = "the a of to in and is was on for with at by from".split()


def _multi_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = sorted(rng.sample(sorted(TOPICS), rng.randint(1, 2)))
        words = rng.sample(FILLER, 2) + [rng.choice(TOPICS[t]) for t in labels]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "|".join(labels)})
    return rows


def _write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _common(tiny_model, tmp_path):
    return [f"model.source={tiny_model}", "model.max_length=32", f"output.dir={tmp_path / 'runs'}",
            "train.batch_size=8", "train.threads=1", "train.precision=fp32", "train.warmup_ratio=0"]


def test_multi_label_learns_and_predict_uses_saved_thresholds(tiny_model, tmp_path):
    files = {s: _write_csv(tmp_path / f"{s}.csv", _multi_rows(n, seed))
             for s, n, seed in (("train", 120, 0), ("dev", 30, 1), ("test", 30, 2))}
    cfg = load_config(None, ["task=classify", "task.multi_label=true", "data.label_separator=|",
                             *(f"data.{k}={v}" for k, v in files.items()), *_common(tiny_model, tmp_path),
                             "train.epochs=40", "train.lr=3e-3", "train.early_stopping=null", "train.dropout=0.0"])
    # With 5 filler words a row, dropout and 10 early-stopped epochs, this 2-layer random BERT learned
    # the three topics on few seeds (4 of 26 with torch's dropout kernels, 1 of 26 with runassist's:
    # it passed at the default seed, 42, by luck). With 2 fillers, no dropout and 40 epochs, seeds
    # 40-47 scored test micro-F1 0.97-1.0 but one (0.74; seed 42: 1.0): this model is the weak point.
    result = train(cfg, progress=False)
    summary = result.summary
    assert summary["best"]["metric"] == "micro_f1"
    # chance: predicting every label gives micro-F1 ~0.67 at best; a learned model is near 1
    assert summary["test"]["micro_f1"] > 0.85, summary["test"]
    task_json = json.loads((result.run / "model" / "task.json").read_text())
    thresholds = task_json["extras"]["thresholds"]
    assert len(thresholds) == 3 and all(0.0 < t < 1.0 for t in thresholds)

    predictor = Predictor.from_run(result.run)
    assert predictor.state.extras["thresholds"] == thresholds
    [both, one] = predictor.predict(["the apple of paris", "a john to"])  # 2 fillers, as in training
    assert set(both["labels"]) == {"tech", "travel"}
    assert one["labels"] == ["people"]
    # moving the saved thresholds changes what predict returns: they are really used
    predictor.state.extras["thresholds"] = [0.999999, 0.999999, 0.999999]
    assert predictor.predict(["the apple of paris"])[0]["labels"] == []


def test_chinese_characters_with_a_char_level_model(tiny_model, tmp_path):
    pos, neg = "喜欢很好", "不差"
    rng = random.Random(0)
    neutral = [c for c in CJK if c not in pos + neg]

    def rows(n):
        out = []
        for _ in range(n):
            label = rng.choice(["positive", "negative"])
            chars = rng.sample(neutral, 6) + [rng.choice(pos if label == "positive" else "不")]
            rng.shuffle(chars)
            out.append({"text": "".join(chars), "label": label})
        return out

    files = {s: _write_csv(tmp_path / f"{s}.csv", rows(n)) for s, n in (("train", 96), ("dev", 24), ("test", 24))}
    cfg = load_config(None, ["task=classify", *(f"data.{k}={v}" for k, v in files.items()),
                             *_common(tiny_model, tmp_path), "train.epochs=8", "train.lr=3e-3"])
    result = train(cfg, progress=False)
    assert result.summary["test"]["accuracy"] >= 0.9, result.summary["test"]
    assert result.summary["inputs"]["examples"] == 96 and result.summary["inputs"]["examples_cut"] == 0
    out = tmp_path / "pred.csv"
    n = predict_file(Predictor.from_run(result.run), str(files["test"]), str(out))
    got = list(csv.DictReader(out.open(encoding="utf-8")))
    assert n == 24 and len(got) == 24
    assert {"text", "label", "pred_label", "pred_probs"} <= set(got[0])
    assert sum(r["label"] == r["pred_label"] for r in got) >= 21
    # Excel's "CSV UTF-8" starts with a byte-order mark: the text column must still be found
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + files["test"].read_bytes())
    assert predict_file(Predictor.from_run(result.run), str(bom), str(tmp_path / "bom-out.csv")) == 24
