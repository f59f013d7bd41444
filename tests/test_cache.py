"""The tokenisation cache: a second encode reads the file (encode is not called), and any
change to the data, the tokenizer or the settings misses."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from conftest import build_tiny_model_dir, make_ner_sentences
from runassist.cache import cached_encode
from runassist.config import DataConfig, ModelConfig
from runassist.data.records import TextExample, TokenExample
from runassist.tasks.base import TaskState
from runassist.tasks.classify import ClassifySection, ClassifyTask
from runassist.tasks.ner import NerSection, NerTask


def spy(task):
    """Count calls to this task object's encode."""
    original = task.encode
    task.calls = 0

    def encode(*args, **kw):
        task.calls += 1
        return original(*args, **kw)

    task.encode = encode
    return task


def _ner(max_length=32, stride=8):
    return spy(NerTask(NerSection(), DataConfig(), ModelConfig(max_length=max_length, stride=stride)))


def _examples(n=12, seed=0):
    return [TokenExample(tokens=tuple(w for w, _ in s), tags=tuple(t for _, t in s), source=f"x.conll:{i}")
            for i, s in enumerate(make_ner_sentences(n, seed))]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


STATE = TaskState(labels=["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"])


def test_second_encode_reads_the_cache_and_equals_a_fresh_encode(tokenizer, tmp_path):
    task, examples = _ner(), _examples()
    # a long sentence: several windows whose meta holds (word, position, context) tuples
    examples.append(TokenExample(tokens=("john", "went", "to", "paris") * 20, tags=("B-PER", "O", "O", "B-LOC") * 20))
    first = cached_encode(task, examples, tokenizer, STATE, cache_dir=tmp_path, key_parts={"split": "train"})
    assert task.calls == 1
    files = list((tmp_path / "features").glob("*.jsonl"))
    assert len(files) == 1
    second = cached_encode(task, examples, tokenizer, STATE, cache_dir=tmp_path, key_parts={"split": "train"})
    assert task.calls == 1  # served from the file
    assert second == first == NerTask(task.task_cfg, task.data_cfg, task.model_cfg).encode(examples, tokenizer, STATE)
    assert isinstance(second[-1].meta[0], tuple)
    # the file is plain JSON lines, one per feature after the header
    lines = files[0].read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["features"] == len(first) == len(lines) - 1
    # another task object (a new run) under the same cache folder hits too
    other = _ner()
    cached_encode(other, examples, tokenizer, STATE, cache_dir=tmp_path, key_parts={"split": "train"})
    assert other.calls == 0


def test_changes_invalidate(tokenizer, tiny_model, tmp_path):
    examples = _examples()
    task = _ner()
    cached_encode(task, examples, tokenizer, STATE, cache_dir=tmp_path)
    assert task.calls == 1

    # the data: one tag changed
    changed = list(examples)
    changed[3] = TokenExample(tokens=changed[3].tokens, tags=("B-ORG",) + changed[3].tags[1:])
    cached_encode(task, changed, tokenizer, STATE, cache_dir=tmp_path)
    assert task.calls == 2
    # only where it came from: same content, same features
    moved = [TokenExample(tokens=e.tokens, tags=e.tags, source="elsewhere.conll:1") for e in examples]
    cached_encode(task, moved, tokenizer, STATE, cache_dir=tmp_path)
    assert task.calls == 2

    # the tokenizer: the same one built again hits; one with a token added misses
    other_dir = build_tiny_model_dir(tmp_path / "other-tok")
    other = AutoTokenizer.from_pretrained(other_dir)
    cached_encode(task, examples, other, STATE, cache_dir=tmp_path)
    assert task.calls == 2  # same tokenizer state, built again: still a hit
    other.add_tokens(["zzzq"])
    cached_encode(task, examples, other, STATE, cache_dir=tmp_path)
    assert task.calls == 3

    # the settings: max_length, stride, labels, caller's key parts
    for variant, state, parts in ((_ner(max_length=16, stride=4), STATE, {}),
                                  (task, TaskState(labels=list(reversed(STATE.labels))), {}),
                                  (task, STATE, {"note": "x"})):
        before = variant.calls
        cached_encode(variant, examples, tokenizer, state, cache_dir=tmp_path, key_parts=parts)
        assert variant.calls == before + 1
    assert len(list((tmp_path / "features").glob("*.jsonl"))) == 6  # one file per distinct key


def test_damaged_file_is_a_miss_and_rewritten(tokenizer, tmp_path):
    task, examples = _ner(), _examples()
    first = cached_encode(task, examples, tokenizer, STATE, cache_dir=tmp_path)
    [path] = (tmp_path / "features").glob("*.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")  # cut short
    assert cached_encode(task, examples, tokenizer, STATE, cache_dir=tmp_path) == first
    assert task.calls == 2
    path.write_text("not json\n", encoding="utf-8")
    assert cached_encode(task, examples, tokenizer, STATE, cache_dir=tmp_path) == first
    assert task.calls == 3
    assert cached_encode(task, examples, tokenizer, STATE, cache_dir=tmp_path) == first
    assert task.calls == 3


def test_classify_side_effect_and_off_switch(tokenizer, tmp_path):
    task = spy(ClassifyTask(ClassifySection(), DataConfig(), ModelConfig(max_length=8, stride=2)))
    examples = [TextExample(text="john went to paris and london and new york", labels=("pos",)),
                TextExample(text="bad film", labels=("neg",))]
    state = TaskState(labels=["neg", "pos"])
    first = cached_encode(task, examples, tokenizer, state, cache_dir=tmp_path)
    assert task.feature_stats(first)["examples_cut"] == 1
    again = cached_encode(task, examples, tokenizer, state, cache_dir=tmp_path)
    assert again == first and task.calls == 1
    assert task.feature_stats(again)["examples_cut"] == 1  # the cut is in the cached features' meta
    cached_encode(task, examples, tokenizer, state, cache_dir=None)
    assert task.calls == 2


def test_second_training_run_reuses_the_features(ner_files, tiny_model, tmp_path, monkeypatch):
    from conftest import ner_overrides
    from runassist.tasks import load_config
    from runassist.train.run import train

    calls = []
    real = NerTask.encode

    def counting(self, examples, tokenizer, state):
        calls.append(len(examples))
        return real(self, examples, tokenizer, state)

    monkeypatch.setattr(NerTask, "encode", counting)
    cfg = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / "runs", max_steps=2))
    first = train(cfg, progress=False).summary
    n_first = len(calls)
    assert list((tmp_path / "runs" / ".cache" / "features").glob("*.jsonl"))
    second = train(cfg, progress=False).summary
    assert len(calls) - n_first == n_first - 2  # train and dev came from the cache; only test was encoded
    assert second["test"] == first["test"]
