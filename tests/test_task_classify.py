"""ClassifyTask: encoding (truncation, windows, pairs, Chinese), collate, loss, decode, fit, score,
on a tiny BERT and a tiny WordPiece tokenizer built here (no network)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from runassist.config import DataConfig, ModelConfig
from runassist.data.records import TextExample
from runassist.errors import DataError
from runassist.tasks.base import Feature, TaskState, softmax
from runassist.tasks.classify import ClassifySection, ClassifyTask, LabelPrediction

torch.set_num_threads(1)

WORDS = "the cat sat on a mat dog ran in park good bad movie was very not , . !".split()
HANZI = list("我爱北京天安门今天很好电影不")
LABELS = ["neg", "neu", "pos"]


def _build_tiny(folder) -> None:
    """A 1-layer BERT (random weights, saved as safetensors) and a fast WordPiece tokenizer
    whose vocab is whole English words plus single Chinese characters."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + HANZI
    wordpiece = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    # handle_chinese_chars puts spaces around CJK characters: each becomes its own token.
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BERT's own tokenizer
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    BertModel(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert")
    _build_tiny(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from runassist.tasks.hf import load_tokenizer

    return load_tokenizer(tiny_dir)


def make_task(*, multi_label=False, max_length=16, stride=4, long_text="truncate", data=None) -> ClassifyTask:
    return ClassifyTask(ClassifySection(multi_label=multi_label, long_text=long_text), data or DataConfig(),
                        ModelConfig(max_length=max_length, stride=stride))


def words(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def test_headline_follows_multi_label():
    assert make_task().headline == "accuracy"
    assert make_task(multi_label=True).headline == "micro_f1"
    assert make_task().name == "classify"


def test_labels_and_inputs():
    task = make_task()
    examples = [TextExample("a", ("pos",)), TextExample("b", ("neg",)), TextExample("c", ("pos",))]
    assert task.label_set(examples) == ["neg", "pos"]
    assert task.label_counts(examples) == {"neg": 1, "pos": 2}
    assert task.example_from_input("good movie") == TextExample("good movie")
    assert task.example_from_input({"text": "a", "text_pair": "b"}) == TextExample("a", text_pair="b")
    assert task.example_from_input({"text": "a"}) == TextExample("a")
    for bad in (3, ["a"], {"txt": "a"}, {"text": 1}, {"text": "a", "text_pair": 2}):
        with pytest.raises(ValueError):
            task.example_from_input(bad)


def test_short_inputs_match_the_tokenizer(tokenizer):
    task = make_task(max_length=32)
    state = TaskState(LABELS)
    examples = [TextExample("the cat sat", ("pos",)), TextExample("good movie", ("neg",), text_pair="very bad !"),
                TextExample("", ("neu",))]
    features = task.encode(examples, tokenizer, state)
    assert len(features) == 3 and task.feature_stats(features)["examples_cut"] == 0
    for feature, ex in zip(features, examples):
        expected = tokenizer(ex.text, ex.text_pair)
        assert feature.inputs["input_ids"] == expected["input_ids"]
        assert feature.inputs["token_type_ids"] == expected["token_type_ids"]
        assert "attention_mask" not in feature.inputs
        assert feature.meta == {"window": 0, "windows": 1, "truncated": False}
    assert [f.target for f in features] == [2, 0, 1]
    assert features[1].inputs["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1, 1]  # the pair is typed 0 / 1


def test_truncate_keeps_the_head_and_counts(tokenizer):
    task = make_task(max_length=10)
    examples = [TextExample(words(3), ("pos",)), TextExample(words(30), ("neg",)), TextExample(words(8), ("neu",)),
                TextExample(words(9), ("pos",))]
    features = task.encode(examples, tokenizer, TaskState(LABELS))
    assert len(features) == 4
    assert task.feature_stats(features)["examples_cut"] == 2  # 30 and 9 words do not fit in 10 - 2 specials; 8 does
    assert [f.meta["truncated"] for f in features] == [False, True, False, True]
    assert all(f.size <= 10 for f in features)
    head = tokenizer(words(30), add_special_tokens=False)["input_ids"][:8]
    assert features[1].inputs["input_ids"] == [tokenizer.cls_token_id, *head, tokenizer.sep_token_id]
    assert task.feature_stats(task.encode(examples[:1], tokenizer, TaskState(LABELS)))["examples_cut"] == 0


def test_truncate_pair_cuts_the_longer_text_first(tokenizer):
    task = make_task(max_length=12)
    features = task.encode([TextExample("good movie", ("pos",), text_pair=words(20)),
                            TextExample(words(20), ("pos",), text_pair=words(20))], tokenizer, TaskState(LABELS))
    assert task.feature_stats(features)["examples_cut"] == 2
    for feature in features:
        assert feature.size == 12
    types = features[0].inputs["token_type_ids"]
    assert types.count(0) == 4 and types.count(1) == 8  # [CLS] good movie [SEP] + 7 words [SEP]
    assert features[1].inputs["token_type_ids"].count(0) == 1 + 4 + 1  # both cut: 4 + 5 of room 9, as HF does


def test_truncate_matches_the_tokenizers_own_truncation(tokenizer):
    task = make_task(max_length=12)
    examples = [TextExample(words(la), text_pair=words(lb) if lb else None)
                for la in range(0, 15, 3) for lb in range(0, 15, 2)]
    features = task.encode(examples, tokenizer, TaskState(LABELS))
    for feature, ex in zip(features, examples):
        expected = tokenizer(ex.text, ex.text_pair, truncation=True, max_length=12)
        assert feature.inputs["input_ids"] == expected["input_ids"], (ex.text, ex.text_pair)
        assert feature.inputs["token_type_ids"] == expected["token_type_ids"]


def test_windows_cover_the_text_with_stride(tokenizer):
    task = make_task(max_length=10, stride=3, long_text="windows")
    text = words(20)
    features = task.encode([TextExample(words(2), ("neu",)), TextExample(text, ("pos",))], tokenizer, TaskState(LABELS))
    assert task.feature_stats(features)["examples_cut"] == 0
    assert [f.example for f in features].count(0) == 1
    windows = [f for f in features if f.example == 1]
    assert len(windows) == 4  # room 8, step 5: starts 0, 5, 10 and 12 (the last window ends at the end)
    assert [w.meta["window"] for w in windows] == [0, 1, 2, 3] and {w.meta["windows"] for w in windows} == {4}
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bodies = [w.inputs["input_ids"][1:-1] for w in windows]
    assert bodies == [ids[0:8], ids[5:13], ids[10:18], ids[12:20]]
    assert all(w.target == 2 and w.size == 10 for w in windows)


def test_windows_of_a_pair_repeat_the_shorter_text(tokenizer):
    task = make_task(max_length=12, stride=2, long_text="windows")
    features = task.encode([TextExample("good movie", ("pos",), text_pair=words(20))], tokenizer, TaskState(LABELS))
    assert len(features) > 1 and task.feature_stats(features)["examples_cut"] == 0
    good_movie = tokenizer("good movie", add_special_tokens=False)["input_ids"]
    covered = []
    for f in features:
        assert f.size <= 12
        assert f.inputs["input_ids"][1:3] == good_movie
        covered += [i for i, t in zip(f.inputs["input_ids"], f.inputs["token_type_ids"]) if t == 1][:-1]
    assert set(covered) == set(tokenizer(words(20), add_special_tokens=False)["input_ids"])


def test_decode_averages_window_logits():
    task = make_task(long_text="windows")
    state = TaskState(LABELS)
    examples = [TextExample("x"), TextExample("y")]
    features = [Feature(example=0, inputs={"input_ids": [1]}), Feature(example=1, inputs={"input_ids": [1]}),
                Feature(example=1, inputs={"input_ids": [1]}), Feature(example=1, inputs={"input_ids": [1]})]
    logits = [np.array([0.0, 0.0, 3.0]), np.array([3.0, 0.0, 0.0]), np.array([0.0, 3.0, 0.0]),
              np.array([3.0, 0.0, -3.0], dtype=np.float32)]
    first, second = task.decode(examples, features, logits, state)
    assert first.labels == ("pos",)
    assert second.labels == ("neg",)  # mean [2, 1, -1]: neg, though window 2 alone says neu
    np.testing.assert_allclose(second.probs, softmax(np.array([2.0, 1.0, -1.0])), rtol=1e-9)
    assert sum(second.probs) == pytest.approx(1.0)
    out = task.to_json(examples[1], second)
    assert out["label"] == "neg" and out["labels"] == ["neg"]
    assert list(out["probs"]) == ["neg", "neu", "pos"] and out["probs"]["neg"] == round(second.probs[0], 4)
    json.dumps(out)


def test_decode_multi_label_uses_thresholds_from_extras():
    task = make_task(multi_label=True)
    examples = [TextExample("x")]
    features = [Feature(example=0, inputs={"input_ids": [1]})]
    logit = np.log(np.array([0.3, 0.6, 0.8]) / (1 - np.array([0.3, 0.6, 0.8])))  # sigmoid -> 0.3, 0.6, 0.8
    (default,) = task.decode(examples, features, [logit], TaskState(LABELS))
    assert default.labels == ("pos", "neu")  # >= 0.5, most probable first
    np.testing.assert_allclose(default.probs, [0.3, 0.6, 0.8])
    tuned = TaskState(LABELS, extras={"thresholds": [0.25, 0.7, 0.9]})
    (pred,) = task.decode(examples, features, [logit], tuned)
    assert pred.labels == ("neg",)
    out = task.to_json(examples[0], pred)
    assert out["labels"] == ["neg"] and "label" not in out
    assert list(out["probs"]) == ["pos", "neu", "neg"]
    with pytest.raises(Exception, match="thresholds"):
        task.decode(examples, features, [logit], TaskState(LABELS, extras={"thresholds": [0.5]}))


def test_unknown_label_names_the_source_and_known_labels(tokenizer):
    task = make_task()
    with pytest.raises(DataError) as err:
        task.encode([TextExample("good", ("great",), source="dev.csv:7")], tokenizer, TaskState(LABELS))
    assert str(err.value).startswith("dev.csv:7: label 'great'")
    assert "neg, neu, pos" in str(err.value)
    with pytest.raises(DataError, match="multi_label"):
        task.encode([TextExample("good", ("neg", "pos"), source="a.jsonl:2")], tokenizer, TaskState(LABELS))


def test_collate_shapes_and_dtypes(tokenizer):
    single = make_task()
    features = single.encode([TextExample("good", ("pos",)), TextExample("the cat sat on a mat", ("neg",))],
                             tokenizer, TaskState(LABELS))
    batch = single.collate(features, tokenizer)
    assert batch["input_ids"].shape == (2, 8) and batch["input_ids"].dtype == torch.long
    assert batch["token_type_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert batch["input_ids"][0, 3:].eq(tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [2, 0] and batch["labels"].dtype == torch.long

    multi = make_task(multi_label=True)
    features = multi.encode([TextExample("good", ("neu", "pos")), TextExample("bad", ())], tokenizer, TaskState(LABELS))
    batch = multi.collate(features, tokenizer)
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]

    unlabelled = single.encode([TextExample("good")], tokenizer, TaskState(LABELS))
    assert "labels" not in single.collate(unlabelled, tokenizer)


def test_loss_single_and_multi_in_float32():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], dtype=torch.bfloat16, requires_grad=True)
    outputs = SimpleNamespace(logits=logits)  # what the model's forward returns
    single = make_task()
    batch = {"labels": torch.tensor([0, 2])}
    plain = single.loss(outputs, batch, None)
    assert plain.dtype == torch.float32 and torch.isfinite(plain)
    expected = torch.nn.functional.cross_entropy(logits.detach().float(), batch["labels"])
    assert plain.item() == pytest.approx(expected.item())
    weighted = single.loss(outputs, batch, torch.tensor([1.0, 1.0, 3.0]))
    assert torch.isfinite(weighted) and weighted.item() != pytest.approx(plain.item())
    weighted.backward()
    assert logits.grad is not None

    multi = make_task(multi_label=True)
    batch = {"labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])}
    bce = multi.loss(outputs, batch, None)
    assert bce.dtype == torch.float32 and torch.isfinite(bce)
    with_pos = multi.loss(outputs, batch, torch.tensor([2.0, 2.0, 2.0]))
    assert torch.isfinite(with_pos) and with_pos.item() > bce.item()


def test_fit_tunes_thresholds_for_multi_label_only():
    examples = [TextExample("x", ("pos",)), TextExample("y", ("neg", "pos")), TextExample("z", ())]
    features = [Feature(example=i, inputs={"input_ids": [1]}) for i in range(3)]
    logits = [np.array([-3.0, -3.0, 0.2]), np.array([-0.2, -3.0, 0.3]), np.array([-3.0, -3.0, -2.0])]
    state = TaskState(LABELS)
    assert make_task().fit(examples, features, logits, state) == {}
    fitted = make_task(multi_label=True).fit(examples, features, logits, state)
    thresholds = fitted["thresholds"]
    assert len(thresholds) == 3 and all(isinstance(t, float) for t in thresholds)
    assert thresholds[1] == 0.5  # no positives for "neu": untouched
    state.extras.update(fitted)
    preds = make_task(multi_label=True).decode(examples, features, logits, state)
    assert [set(p.labels) for p in preds] == [{"pos"}, {"neg", "pos"}, set()]


def test_score_keys_and_ranges():
    examples = [TextExample("a", ("pos",)), TextExample("b", ("neg",)), TextExample("c", ("pos",))]
    probs = (0.2, 0.1, 0.7)
    preds = [LabelPrediction(("pos",), probs, tuple(LABELS)), LabelPrediction(("pos",), probs, tuple(LABELS)),
             LabelPrediction(("pos",), probs, tuple(LABELS))]
    scores = make_task().score(examples, preds, TaskState(LABELS))
    assert {"accuracy", "macro_f1"} <= set(scores)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert all(0.0 <= scores[k] <= 1.0 for k in ("accuracy", "macro_f1", "weighted_f1"))

    multi = [TextExample("a", ("neg", "pos")), TextExample("b", ())]
    preds = [LabelPrediction(("pos",), probs, tuple(LABELS)), LabelPrediction((), probs, tuple(LABELS))]
    scores = make_task(multi_label=True).score(multi, preds, TaskState(LABELS))
    assert {"micro_f1", "macro_f1"} <= set(scores)
    assert all(0.0 <= scores[k] <= 1.0 for k in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"))
    assert scores["subset_accuracy"] == pytest.approx(0.5)


def test_chinese_text_through_the_model(tiny_dir, tokenizer):
    task = make_task(max_length=8, stride=2, long_text="windows")
    state = TaskState(LABELS)
    examples = [TextExample("我爱北京天安门", ("pos",)), TextExample("电影不好", ("neg",))]
    features = task.encode(examples, tokenizer, state)
    # one token per character: 7 characters in windows of 6 (8 - [CLS] - [SEP]) give two windows
    assert [f.example for f in features] == [0, 0, 1]
    chars = tokenizer.convert_ids_to_tokens(features[2].inputs["input_ids"])
    assert chars == ["[CLS]", "电", "影", "不", "好", "[SEP]"]

    model = task.build_model(tiny_dir, state).eval()
    assert model.config.problem_type == "single_label_classification"
    batch = task.collate(features, tokenizer)
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (3, 3)
    assert torch.isfinite(task.loss(SimpleNamespace(logits=logits), {"labels": labels}, None))
    preds = task.decode(examples, features, list(logits.numpy()), state)
    expected = softmax(logits[:2].double().mean(0).numpy())
    np.testing.assert_allclose(preds[0].probs, expected, rtol=1e-6)
    out = task.to_json(examples[0], preds[0])
    assert out["label"] in LABELS and set(out["probs"]) == set(LABELS)


def test_multi_label_model_trains_a_step(tiny_dir, tokenizer):
    task = make_task(multi_label=True)
    state = TaskState(LABELS)
    model = task.build_model(tiny_dir, state, dropout=0.0)
    assert model.config.problem_type == "multi_label_classification" and model.config.num_labels == 3
    features = task.encode([TextExample("good movie", ("pos",)), TextExample("bad", ("neg", "neu")),
                            TextExample("the cat", (), text_pair="sat on a mat")], tokenizer, state)
    batch = task.collate(features, tokenizer)
    labels = batch.pop("labels")
    loss = task.loss(model(**batch), {"labels": labels}, None)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.classifier.weight.grad is not None


def test_read_jsonl_through_the_data_layer(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"text": "good movie", "label": "pos"},
                                                      {"text": "bad", "label": "neg"}]) + "\n", encoding="utf-8")
    examples = make_task().read(str(path))
    assert [ex.labels for ex in examples] == [("pos",), ("neg",)]
    assert make_task().label_set(examples) == ["neg", "pos"]


@pytest.mark.parametrize("multi_label", [False, True])
def test_scorer_in_chunks_gives_the_whole_sets_scores(multi_label):
    """`evaluate` adds a test set to task.scorer a chunk at a time: the scores must be those of the
    metrics over the whole lists, and the scorer keeps labels only (no texts, no probabilities)."""
    from runassist.metrics.classification import score_multi, score_single

    labels = ["neg", "neu", "pos", "rare"]
    rng = np.random.default_rng(3)
    pick = (lambda: tuple(sorted(set(rng.choice(labels[:3], size=rng.integers(0, 3)))))) if multi_label \
        else (lambda: (str(rng.choice(labels[:3])),))
    examples = [TextExample(text=f"text {i} " * 20, labels=pick()) for i in range(103)]
    predictions = [LabelPrediction(labels=pick(), probs=(0.1, 0.2, 0.3, 0.4), classes=tuple(labels)) for _ in examples]
    scorer = make_task(multi_label=multi_label).scorer(TaskState(labels=labels))
    for start in range(0, len(examples), 10):
        scorer.add(examples[start:start + 10], predictions[start:start + 10])
    gold, pred = [list(ex.labels) for ex in examples], [list(p.labels) for p in predictions]
    whole = score_multi(gold, pred, labels) if multi_label else score_single([g[0] for g in gold], [p[0] for p in pred],
                                                                             labels)
    assert scorer.result() == whole
    assert 0.2 < whole["micro_f1" if multi_label else "accuracy"] < 0.8
    assert not any(isinstance(x, (TextExample, LabelPrediction)) for x in [*scorer.gold, *scorer.pred])
