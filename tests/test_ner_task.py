"""NER alignment, windows and decoding, on the tiny tokenizer (no training needed)."""

from __future__ import annotations

import numpy as np
from transformers import AutoTokenizer

from runassist.config import DataConfig, ModelConfig
from runassist.data.records import TokenExample
from runassist.tasks.base import IGNORE_INDEX, TaskState
from runassist.data.tags import spans_from_iob2
from runassist.tasks.ner import NerSection, NerTask, repair_iob2


def _task(max_length=32, stride=8) -> NerTask:
    return NerTask(NerSection(), DataConfig(), ModelConfig(max_length=max_length, stride=stride))


def test_first_subtoken_carries_the_tag(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    word = "zqx"  # not in the vocabulary: one sub-token per letter, z ##q ##x
    assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 3
    state = TaskState(labels=["O", "B-PER", "I-PER"])
    ex = TokenExample(tokens=("john", word, "went"), tags=("B-PER", "I-PER", "O"))
    [feature] = _task().encode([ex], tokenizer, state)
    ids = feature.inputs["input_ids"]
    assert len(ids) == 1 + 1 + 3 + 1 + 1  # [CLS] john z ##q ##x went [SEP]
    assert feature.target == [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX, 0, IGNORE_INDEX]
    # exactly one label position for the three-piece word
    assert sum(t != IGNORE_INDEX for t in feature.target[2:5]) == 1


def test_long_document_gets_one_prediction_per_word(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    words = tuple(("john", "went", "to", "paris", "qz")[i % 5] for i in range(600))
    ex = TokenExample(tokens=words)
    task = _task(max_length=64, stride=16)
    state = TaskState(labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    features = task.encode([ex], tokenizer, state)
    assert len(features) > 10
    assert all(f.size <= 64 for f in features)
    # every word starts in at least one window; decoding picks one window per word
    starts = {word for f in features for word, _, _ in f.meta}
    assert starts == set(range(600))
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(f.size, len(state.labels))) for f in features]
    [pred] = task.decode([ex], features, logits, state)
    assert len(pred.tags) == 600 and len(pred.scores) == 600


def test_word_uses_the_window_with_most_context(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ex = TokenExample(tokens=tuple(["went"] * 40))
    task = _task(max_length=16, stride=6)
    state = TaskState(labels=["O", "B-LOC", "I-LOC"])
    features = task.encode([ex], tokenizer, state)
    # window k predicts B-LOC for everything; mark each feature by index in the logits
    logits = []
    for k, f in enumerate(features):
        out = np.zeros((f.size, 3))
        out[:, 1 if k % 2 else 0] = 5.0
        logits.append(out)
    [pred] = task.decode([ex], features, logits, state)
    for word in range(40):
        candidates = [(ctx, k) for k, f in enumerate(features) for w, _, ctx in f.meta if w == word]
        best_k = max(candidates)[1] if len(candidates) == 1 else sorted(candidates, key=lambda c: (-c[0], c[1]))[0][1]
        expected = "O" if best_k % 2 == 0 else None
        if expected:
            assert pred.tags[word] == "O"
        else:
            assert pred.tags[word] in ("B-LOC", "I-LOC")


def test_repair_and_spans():
    assert repair_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    assert spans_from_iob2(["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]


def test_text_input_gives_character_offsets(tiny_model):
    task = _task()
    ex = task.example_from_input("John went to Paris, then London.")
    from runassist.tasks.ner import TagPrediction

    tags = ["O"] * len(ex.tokens)
    tags[ex.tokens.index("Paris")] = "B-LOC"
    result = task.to_json(ex, TagPrediction(tags=tuple(tags), scores=tuple([0.9] * len(tags))))
    [entity] = result["entities"]
    assert entity["text"] == "Paris" and ex.text[entity["start"]:entity["end"]] == "Paris"
    assert entity["label"] == "LOC"
