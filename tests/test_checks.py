"""check-data: every problem named, with file:line; tokenizer checks with the packaged MiniLM tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runassist.assets import resolve_model
from runassist.config import DataConfig, ModelConfig
from runassist.data.checks import check_data as check_with_task
from runassist.data.checks import percentiles
from runassist.tasks import task_class


def check_data(task: str, data: DataConfig, model: ModelConfig, *, tokenizer=None, **section):
    """check-data with the task named ``task`` (its section's keys in ``section``)."""
    cls = task_class(task)
    return check_with_task(cls(cls.Section(**section), data, model), data, processor=tokenizer)


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    # The packaged tokenizer files only: offline, no model weights loaded.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("minilm"))


def test_percentiles_are_nearest_rank():
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}
    assert percentiles([]) == {}


def test_ner_problems_name_file_and_line(tmp_path):
    train = _write(tmp_path, "train.conll", "John B-PER\nSmith I-PER\n\nin O\nParis B-LOC\nJohn I-PER\n\nhi O\n")
    dev = _write(tmp_path, "dev.conll", "John B-PER\nSmith I-PER\n\nAcme B-ORG\nCorp I-ORG\n")
    report = check_data("ner", DataConfig(train=train, dev=dev), ModelConfig())
    assert not report.ok
    assert f"{train}:6: tag 'I-PER' follows 'B-LOC'" in report.errors
    assert f"{dev}:4: entity type 'ORG' (1 in dev) never appears in train" in report.errors
    assert len(report.errors) == 2
    (overlap,) = report.warnings
    assert overlap.startswith(f"{dev}:1: 1 of 2 dev examples also appear in train (e.g. this one, as {train}:1)")
    stats = report.splits["train"]
    assert (stats.examples, stats.words) == (3, 6)
    assert stats.labels == {"LOC": 1, "PER": 2}  # the repaired I-PER counts as its own entity
    assert stats.length == {"p50": 2, "p90": 3, "p99": 3, "max": 3}


def test_clean_ner_data_is_ok(tmp_path):
    train = _write(tmp_path, "train.conll", "John B-PER\nlives O\n\nin O\nParis B-LOC\n")
    dev = _write(tmp_path, "dev.conll", "Paris B-LOC\nis O\nnice O\n")
    report = check_data("ner", DataConfig(train=train, dev=dev), ModelConfig())
    assert report.ok and report.errors == [] and report.warnings == []
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


def test_missing_and_empty_splits(tmp_path):
    train = _write(tmp_path, "train.csv", "text,label\ngood,pos\nbad,neg\n")
    test = _write(tmp_path, "test.csv", "text,label\n")
    report = check_data("classify", DataConfig(train=train, test=test), ModelConfig())
    assert report.errors == [f"{test}: no examples"]
    assert any(w.startswith("data.dev is not set") for w in report.warnings)
    report = check_data("classify", DataConfig(dev=train), ModelConfig())
    assert "data.train is not set" in report.errors
    report = check_data("classify", DataConfig(train="wnut16:train"), ModelConfig())
    assert report.errors == ["wnut16:train: is ner data but the task is classify"]


def test_classify_unseen_labels_imbalance_and_overlap(tmp_path):
    rows = ["text,label"] + [f"good {i},pos" for i in range(20)] + ["meh,neg"]
    train = _write(tmp_path, "train.csv", "\n".join(rows) + "\n")
    dev = _write(tmp_path, "dev.csv", "text,label\ngood  3,pos\nunsure,neutral\n")
    report = check_data("classify", DataConfig(train=train, dev=dev), ModelConfig())
    assert report.errors == [f"{dev}:3: label 'neutral' (1 in dev) never appears in train"]
    assert any("labels are imbalanced 20:1 (rarest 'neg', 1 examples)" in w for w in report.warnings)
    # white space is normalised before comparing texts
    assert any(w.startswith(f"{dev}:2: 1 of 2 dev examples also appear in train (e.g. this one, as {train}:5)")
               for w in report.warnings)
    assert report.splits["train"].labels == {"neg": 1, "pos": 20}
    assert report.splits["dev"].length["max"] == 7


def test_multi_label_counts(tmp_path):
    train = _write(tmp_path, "train.jsonl", "\n".join(json.dumps(r) for r in [
        {"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["y"]}, {"text": "c", "label": []}]) + "\n")
    report = check_data("classify", DataConfig(train=train), ModelConfig(), multi_label=True)
    assert report.ok and report.splits["train"].labels == {"x": 1, "y": 2}


def test_ner_words_past_max_length(tmp_path, tokenizer):
    long = "\n".join("word O" for _ in range(200))
    train = _write(tmp_path, "train.conll", f"{long}\n\nPeter B-PER\n\u200b O\nhi O\n")
    report = check_data("ner", DataConfig(train=train, dev=train), ModelConfig(max_length=64, stride=16),
                        tokenizer=tokenizer)
    stats = report.splits["train"]
    # 'word' is one sub-token; 64 minus [CLS] and [SEP] leaves 62 in the first window
    assert stats.over_max_length == 200 - 62
    assert stats.subtokens["max"] == 202 and stats.unk_share == 0.0
    assert any(w.startswith("train: 138 of 203 words fall past model.max_length=64") for w in report.warnings)
    assert any(w.startswith(f"{train}:202: 1 words in train become no sub-token") for w in report.warnings)


def test_classify_texts_cut_and_unknown_tokens(tmp_path, tokenizer):
    rows = [{"text": "word " * 100, "label": "a"}, {"text": "short one", "label": "b"},
            {"text": "我们很喜欢这本书", "label": "a"}]
    train = _write(tmp_path, "train.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    report = check_data("classify", DataConfig(train=train), ModelConfig(max_length=64, stride=16),
                        tokenizer=tokenizer)
    stats = report.splits["train"]
    assert stats.over_max_length == 1
    assert stats.subtokens["max"] == 102
    assert any(w.startswith("train: 1 of 3 texts are longer than model.max_length=64 sub-tokens and will be cut")
               for w in report.warnings)
    # MiniLM is English: most Chinese characters are [UNK]
    assert stats.unk_share > 0.05
    assert any("unknown token" in w for w in report.warnings)
    windows = check_data("classify", DataConfig(train=train), ModelConfig(max_length=64, stride=16),
                         tokenizer=tokenizer, long_text="windows")
    assert any("read as averaged windows" in w for w in windows.warnings)
