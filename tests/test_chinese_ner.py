"""Character-level Chinese NER: CoNLL with one character a line in, character offsets out."""

from __future__ import annotations

import random

from conftest import write_conll
from runassist.tasks import load_config
from runassist.predict import Predictor
from runassist.train.run import train

PEOPLE = ["张三", "李四"]
PLACES = ["北京", "上海"]
FILLER = list("我们在工作生活喜欢这个电影很好")


def _sentences(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sent = [(c, "O") for c in rng.sample(FILLER, 3)]
        pair = [(rng.choice(PEOPLE), "PER"), (rng.choice(PLACES), "LOC")]
        rng.shuffle(pair)  # either order, so the model must read the characters, not the position
        for name, kind in pair:
            sent += [(c, ("B-" if i == 0 else "I-") + kind) for i, c in enumerate(name)]
            sent += [(c, "O") for c in rng.sample(FILLER, 2)]
        out.append(sent)
    return out


def test_character_level_chinese_ner(tiny_model, tmp_path):
    files = {s: write_conll(tmp_path / f"{s}.conll", _sentences(n, seed))
             for s, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    cfg = load_config(None, ["task=ner", f"model.source={tiny_model}", "model.max_length=32",
                             *(f"data.{k}={v}" for k, v in files.items()), f"output.dir={tmp_path / 'runs'}",
                             "train.batch_size=8", "train.threads=1", "train.precision=fp32", "train.epochs=10",
                             "train.lr=3e-3", "train.warmup_ratio=0"])
    result = train(cfg, progress=False)
    assert result.summary["test"]["f1"] > 0.8, result.summary["test"]
    text = "我们在北京喜欢张三"
    [out] = Predictor.from_run(result.run).predict([text])
    assert out["tokens"] == list(text)  # one token per character
    found = {(e["label"], e["text"], e["start"], e["end"]) for e in out["entities"]}
    assert ("LOC", "北京", 3, 5) in found and ("PER", "张三", 7, 9) in found, out["entities"]
