"""Sequence to sequence: scores equal to the reference libraries (and the traps they hide), the
reader and check-data, encoding for both kinds of model, generation past 20 tokens, left padding,
streaming; trained end to end with a tiny decoder-only model, and killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from conftest import REPO, make_seq2seq_rows
from runassist.config import DataConfig, ModelConfig
from runassist.data.checks import check_data
from runassist.data.records import Seq2SeqExample
from runassist.data.text_pairs import scan_text_pairs
from runassist.errors import ConfigError, DataError, RunassistError
from runassist.inference import predict_examples
from runassist.metrics import generation as gm
from runassist.tasks.base import IGNORE_INDEX, TaskState
from runassist.tasks.seq2seq import DECODER_ONLY, ENCODER_DECODER, Seq2SeqSection, Seq2SeqTask

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "runassist.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}


def _task(source=None, *, max_length=32, data=None, **section) -> Seq2SeqTask:
    task = Seq2SeqTask(Seq2SeqSection(**section), data or DataConfig(), ModelConfig(max_length=max_length))
    if source is not None:
        task.load_processor(str(source))
    return task


def _state(task: Seq2SeqTask) -> TaskState:
    return TaskState(labels=None, extras=task.initial_extras([]))


def _write_rows(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# -- scores: the reference libraries, and the traps ---------------------------------------------------

ENGLISH = [  # (reference, output): several sentences each, in a different order in the second pair
    ("The cat sat on the mat. It was happy.", "The cat was sitting on a mat. It seemed happy."),
    ("Police arrested two men. The car was found later.", "The car was found later. Police arrested two men."),
    ("Stocks rallied on Monday!", "Stocks fell on Monday."),
]


def test_rouge_equals_rouge_score_with_one_sentence_a_line():
    golds, preds = [g for g, _ in ENGLISH], [p for _, p in ENGLISH]
    ours = gm.score_texts(golds, preds, language="en")
    reference = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    by_hand = [  # the sentences on lines, written out
        ("The cat sat on the mat.\nIt was happy.", "The cat was sitting on a mat.\nIt seemed happy."),
        ("Police arrested two men.\nThe car was found later.", "The car was found later.\nPolice arrested two men."),
        ("Stocks rallied on Monday!", "Stocks fell on Monday."),
    ]
    expected = [reference.score(g, p) for g, p in by_hand]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert ours[name] == pytest.approx(sum(s[name].fmeasure for s in expected) / len(expected)), name
    # Summary-level LCS credits the swapped sentences in full, sentence-free LCS cannot: on the second
    # pair rougeLsum is 1.0. Without the newlines it silently equals rougeL (transformers PR #7410).
    assert expected[1]["rougeLsum"].fmeasure == pytest.approx(1.0)
    assert expected[1]["rougeL"].fmeasure < 0.75
    flat = reference.score(*ENGLISH[1])
    assert flat["rougeLsum"].fmeasure == flat["rougeL"].fmeasure
    assert ours["rougeLsum"] > ours["rougeL"]
    # stemming is on for English (the Perl script's -m): "runs" and "running" are one word
    assert gm.score_texts(["runs quickly"], ["running quickly"], language="en")["rouge1"] == 1.0


def test_bleu_and_chrf_equal_sacrebleu_with_wrapped_references():
    golds, preds = [g for g, _ in ENGLISH], [p for _, p in ENGLISH]
    ours = gm.score_texts(golds, preds, language="en")
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [golds]).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [golds]).score)
    assert "tok:13a" in ours["bleu_signature"] and "nrefs:1" in ours["bleu_signature"]
    # References unwrapped are read as streams of characters: a wrong score and no error (sacrebleu #272).
    assert sacrebleu.corpus_bleu(preds, golds).score != pytest.approx(ours["bleu"])
    assert 0 < ours["bleu"] < 100


def test_chinese_is_scored_on_characters_and_with_the_zh_tokenizer():
    golds = ["我们在北京工作。今天天气很好！", "张三喜欢这个电影"]
    preds = ["我们在上海工作。今天天气很好！", "李四喜欢这个电影"]
    ours = gm.score_texts(golds, preds, language="zh")
    assert gm.detect_language(golds) == "zh" and ours["language"] == "zh"
    # By hand, pair 2: 8 characters each, 6 shared: ROUGE-1 F = 6/8
    chars = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], tokenizer=gm.ChineseTokenizer())
    assert chars.score(golds[1], preds[1])["rouge1"].fmeasure == pytest.approx(6 / 8)
    expected = [chars.score(gm.split_sentences(g), gm.split_sentences(p)) for g, p in zip(golds, preds)]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert ours[name] == pytest.approx(sum(s[name].fmeasure for s in expected) / 2), name
    assert gm.split_sentences(golds[0]) == "我们在北京工作。\n今天天气很好！"
    # The default tokenizer keeps a-z0-9 only: every Chinese character would be thrown away.
    assert rouge_scorer.RougeScorer(["rouge1"]).score(golds[1], preds[1])["rouge1"].fmeasure == 0.0
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [golds], tokenize="zh").score)
    assert "tok:zh" in ours["bleu_signature"]
    assert sacrebleu.corpus_bleu(preds, [golds]).score != pytest.approx(ours["bleu"])  # 13a: one word per clause
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [golds]).score)


def test_language_detection_and_sentences():
    assert gm.detect_language(["hello there", "a b c"]) == "en"
    assert gm.detect_language(["Ça va très bien, déjà été naïve"]) == "other"
    assert gm.split_sentences("It cost 3.5 m. Why? Fine!\nNext line") == "It cost 3.5 m.\nWhy?\nFine!\nNext line"
    # other languages: Unicode words, unstemmed (the default tokenizer would drop "ç" and "é")
    assert gm.WordTokenizer().tokenize("Ça été") == ["ça", "été"]
    scores = gm.score_texts(["Ça été"], ["ça été"], language="other")
    assert scores["rouge1"] == 1.0 and scores["exact"] == 0.0  # case counts for exact, not for ROUGE


def test_the_bootstrap_statistics_give_the_scores_back():
    golds, preds = [g for g, _ in ENGLISH], [p for _, p in ENGLISH]
    ours = gm.score_texts(golds, preds, language="en")
    for name in ("rougeL", "rougeLsum", "bleu", "chrf"):
        stats = gm.item_stats(name, golds, preds, language="en")
        total = stats.sum(axis=0, keepdims=True)
        assert gm.stat_fn(name, len(golds), language="en")(total)[0] == pytest.approx(ours[name]), name


def test_compare_bootstraps_the_scores_it_reports():
    from runassist.tasks.seq2seq import Generated

    task = _task(headline="rougeLsum")
    examples = [Seq2SeqExample(f"source {i}", g) for i, (g, _) in enumerate(ENGLISH)]
    out_a = [Generated(p, 5, False) for _, p in ENGLISH]
    out_b = [Generated(g, 5, False) for g, _ in ENGLISH]  # B writes the references
    body = task.compare(examples, out_a, out_b, labels=None, n=200, seed=0, notes=[])
    assert body["headline"] == "rougeLsum" and set(body["overall"]) == {"rougeLsum", "rougeL", "bleu"}
    for metric, boot in body["overall"].items():
        assert boot["a"] == pytest.approx(body["scores"]["a"][metric]) and boot["b"] == pytest.approx(
            body["scores"]["b"][metric]), metric
    assert body["scores"]["b"]["rougeLsum"] == 1.0 and body["scores"]["b"]["bleu"] == pytest.approx(100)
    assert body["agreement"] == 0.0


# -- reader and check-data ----------------------------------------------------------------------

def test_reader_names_lines_and_leaves_empty_targets_out(tmp_path):
    path = _write_rows(tmp_path / "d.jsonl", [{"source": "a b", "target": "b"}, {"source": "c", "target": "  "},
                                              {"source": "", "target": "x"}])
    split = scan_text_pairs(path)
    assert [(ex.text, ex.target, ex.source) for ex in split.examples] == [("a b", "b", f"{path}:1")]
    assert [str(p) for p in split.problems] == [f"{path}:2: empty target ('target'); the example is left out",
                                                f"{path}:3: empty source ('source'); the example is left out"]
    bad = _write_rows(tmp_path / "bad.jsonl", [{"source": "a", "target": "b"}, {"text": "a", "summary": "b"}])
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: no key 'source'; keys here: text, summary"):
        scan_text_pairs(bad)
    named = _write_rows(tmp_path / "named.jsonl", [{"text": "a", "summary": "b"}])
    assert scan_text_pairs(named, source_column="text", target_column="summary").examples[0].target == "b"
    csv = tmp_path / "d.csv"
    csv.write_text('article,highlights\n"one, two",one\n', encoding="utf-8")
    (ex,) = scan_text_pairs(csv, source_column="article", target_column="highlights").examples
    assert (ex.text, ex.target, ex.source) == ("one, two", "one", f"{csv}:2")
    with pytest.raises(DataError, match=r"d\.csv:1: no column 'target'"):
        scan_text_pairs(csv, source_column="article")
    # prediction input: no target column at all
    assert scan_text_pairs(csv, source_column="article", target_column="x", require_targets=False).examples[0].target \
        is None
    numbers = _write_rows(tmp_path / "n.jsonl", [{"source": "a", "target": 3}])
    with pytest.raises(DataError, match=r"n\.jsonl:1: 'target' must be a string, got int"):
        scan_text_pairs(numbers)


def test_check_data_empty_targets_duplicates_and_cuts(tmp_path, tiny_t5):
    long_source = " ".join(["london"] * 40)
    train = _write_rows(tmp_path / "train.jsonl", [
        {"source": "the city of paris", "target": "paris"},
        {"source": "john works at google", "target": ""},
        {"source": long_source, "target": "london"},
        {"source": "mary said", "target": " ".join(["mary"] * 20)},
    ])
    dev = _write_rows(tmp_path / "dev.jsonl", [{"source": "the  city of paris", "target": "paris"},
                                               {"source": "new york", "target": " ".join(["york"] * 12)}])
    data = DataConfig(train=train, dev=dev)
    task = _task(tiny_t5, data=data, max_target_length=8, generation={"max_new_tokens": 10})
    report = check_data(task, data, processor=task._tokenizer)
    assert report.errors == [f"{train}:2: empty target ('target'); the example is left out"]
    warnings = "\n".join(report.warnings)
    assert f"{dev}:1: 1 of 2 dev examples also appear in train (e.g. this one, as {train}:1)" in warnings
    assert f"{train}:3: 1 of 3 sources in train are longer than model.max_length=32" in warnings
    assert f"{train}:4: 1 of 3 targets in train are longer than task.max_target_length=8" in warnings
    assert f"{dev}:2: 1 of 2 targets in dev are longer than task.generation.max_new_tokens=10" in warnings
    stats = report.splits["train"]
    assert stats.examples == 3 and stats.over_max_length == 1 and stats.subtokens["max"] == 41  # 40 + </s>
    assert stats.labels == {}


def test_a_model_that_cannot_write_is_refused(tiny_model):
    with pytest.raises(RunassistError, match="a bert model cannot write text; a seq2seq run needs an encoder-decoder"):
        _task(tiny_model)


# -- encoding -------------------------------------------------------------------------------------

def test_encoder_decoder_features_and_decoder_inputs(tiny_t5):
    task = _task(tiny_t5, prompt="summarize: {source}", max_target_length=4, max_length=12)
    tok, state = task._tokenizer, _state(task)
    assert task._kind == ENCODER_DECODER and task.peft_task_type == "SEQ_2_SEQ_LM" and state.extras == {
        "architecture": ENCODER_DECODER}
    examples = [Seq2SeqExample("john went to paris with mary smith and a movie", "john paris mary smith"),
                Seq2SeqExample("paris", "paris")]
    long, short = task.encode(examples, tok, state)
    eos = tok.eos_token_id
    head = tok("summarize:", add_special_tokens=False)["input_ids"]
    assert long.inputs["input_ids"][:len(head)] == head and long.inputs["input_ids"][-1] == eos
    assert len(long.inputs["input_ids"]) == 12 and long.meta["source_cut"] and long.meta["target_cut"]
    assert long.target == tok("john paris mary", add_special_tokens=False)["input_ids"] + [eos]
    assert short.target == tok("paris")["input_ids"] and not short.meta["truncated"]
    batch = task.collate([long, short], tok)
    assert batch["labels"][1].tolist() == short.target + [IGNORE_INDEX] * 2
    seen = {}
    model = task.build_model(str(tiny_t5), state)
    model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    task.forward(model, batch)
    # decoder inputs: the start token (pad for T5), then the labels but the last, ignored places as pad
    assert seen["decoder_input_ids"][1].tolist() == [0] + short.target + [0]
    assert task.feature_stats([long, short]) == {"examples": 2, "features": 2, "examples_cut": 1,
                                                 "examples_windowed": 0, "sources_cut": 1, "targets_cut": 1}


def test_decoder_only_loss_is_on_the_target_and_its_end_token(tiny_decoder):
    task = _task(tiny_decoder, max_length=16)
    tok, state = task._tokenizer, _state(task)
    assert task._kind == DECODER_ONLY and task.peft_task_type == "CAUSAL_LM" and tok.pad_token_id is None
    examples = [Seq2SeqExample("mary smith went to a " + "movie " * 20, "mary smith"), Seq2SeqExample("paris", "paris")]
    long, short = task.encode(examples, tok, state)
    tail = tok("\n\n### Output:\n", add_special_tokens=False)["input_ids"]
    # cut inside the source: the template's tail is always whole, <s> first, no </s> after the prompt
    assert len(long.inputs["input_ids"]) == 16 and long.inputs["input_ids"][-len(tail):] == tail
    assert long.inputs["input_ids"][0] == tok.bos_token_id and long.meta["source_cut"]
    eos = tok.eos_token_id
    assert short.target == tok("paris", add_special_tokens=False)["input_ids"] + [eos]
    batch = task.collate([long, short], tok)
    prompt = len(short.inputs["input_ids"])
    row = batch["labels"][1].tolist()
    assert row[:prompt] == [IGNORE_INDEX] * prompt and row[prompt:prompt + len(short.target)] == short.target
    assert set(row[prompt + len(short.target):]) == {IGNORE_INDEX}  # padding (with eos) is not learned ...
    assert batch["input_ids"][1, -1].item() == eos and batch["attention_mask"][1, -1].item() == 0
    assert row[prompt + len(short.target) - 1] == eos  # ... the real end token is
    # generation: prompts only, padded on the left
    bare = [task.encode([task.unlabelled(ex)], tok, state)[0] for ex in examples]
    left = task.collate(bare, tok)
    assert "labels" not in left and left["attention_mask"][1, 0].item() == 0 and left["input_ids"][1, -1] == tail[-1]
    # the loss: mean cross-entropy of the next token, over target positions only
    model = task.build_model(str(tiny_decoder), state)
    logits = task.forward(model, batch).logits.float()
    manual = torch.nn.functional.cross_entropy(logits[1, prompt - 1:prompt - 1 + len(short.target)],
                                               torch.tensor(short.target), reduction="sum")
    manual += torch.nn.functional.cross_entropy(logits[0, len(long.inputs["input_ids"]) - 1:-1],
                                                torch.tensor(long.target), reduction="sum")
    loss = task.loss(task.forward(model, batch), batch, None)
    assert loss.item() == pytest.approx(manual.item() / (len(short.target) + len(long.target)), rel=1e-5)


def test_prompt_and_lengths_are_validated(tiny_t5):
    with pytest.raises(ValueError, match=r"must hold \{source\} exactly once"):
        Seq2SeqSection(prompt="no source here")
    task = _task(tiny_t5, prompt="a very long instruction for this model to follow {source}", max_length=8)
    with pytest.raises(ConfigError, match="task.prompt: the template and special tokens take"):
        task.encode([Seq2SeqExample("paris")], task._tokenizer, _state(task))


# -- generation -----------------------------------------------------------------------------------

def _no_end_token(model, *ids: int) -> None:
    """The model can never write these tokens (its end token: every generation runs to its length limit)."""
    model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: out.index_fill(-1, torch.tensor(ids), float("-inf")))


@pytest.mark.parametrize("kind", ["t5", "decoder"])
def test_generation_honours_max_new_tokens_past_twenty(kind, tiny_t5, tiny_decoder, tmp_path):
    source = tiny_t5 if kind == "t5" else tiny_decoder
    task = _task(source, generation={"max_new_tokens": 40})
    tok, state = task._tokenizer, _state(task)
    model = task.build_model(str(source), state).eval()
    _no_end_token(model, tok.eos_token_id)
    (prediction,) = predict_examples(task, model, tok, [Seq2SeqExample("john went to paris")], state)
    assert prediction.tokens == 40 and prediction.capped
    score = task.score([Seq2SeqExample("x", "john")], [prediction], state)
    assert score["at_max_new_tokens"] == 1.0 and score["gen_tokens"] == 40
    # the trap: the same weights with a config that sets no length stop at transformers' default of 20 (#10032)
    plain = type(model).from_pretrained(source).eval()
    _no_end_token(plain, tok.eos_token_id)
    inputs = tok(["john went to paris"], return_tensors="pt")
    with torch.no_grad(), pytest.warns(UserWarning, match="model-agnostic default `max_length`"):
        out = plain.generate(**inputs, pad_token_id=tok.eos_token_id)
    assert out.shape[1] - (1 if kind == "t5" else inputs["input_ids"].shape[1]) == 20
    # the run's settings are the model's own, and saved with it
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 40 and saved["num_beams"] == 1 and "length_penalty" not in saved


def test_left_padding_gives_each_prompt_its_own_output(tiny_decoder):
    task = _task(tiny_decoder, generation={"max_new_tokens": 6})
    tok, state = task._tokenizer, _state(task)
    model = task.build_model(str(tiny_decoder), state).eval()
    examples = [Seq2SeqExample(t) for t in ("john", "mary smith went to paris with a film", "the city of london")]
    together = predict_examples(task, model, tok, examples, state, batch_size=3)
    alone = [predict_examples(task, model, tok, [ex], state)[0] for ex in examples]
    assert together == alone


def test_generation_settings_reach_generate_and_a_beam_setting_alone_is_harmless(tiny_t5, tmp_path):
    task = _task(tiny_t5, generation={"max_new_tokens": 5, "num_beams": 3, "length_penalty": 0.5,
                                      "no_repeat_ngram_size": 2})
    model = task.build_model(str(tiny_t5), _state(task))
    config = model.generation_config
    assert (config.num_beams, config.length_penalty, config.no_repeat_ngram_size, config.max_new_tokens) == (3, 0.5, 2, 5)
    # length_penalty without beams: transformers refuses to save such a config; it is left out
    task = _task(tiny_t5, generation={"length_penalty": 2.0})
    task.build_model(str(tiny_t5), _state(task)).save_pretrained(tmp_path)


def test_the_model_keeps_what_it_needs_and_the_run_sets_the_rest(tiny_t5, tmp_path):
    import shutil

    folder = tmp_path / "pretrained"
    shutil.copytree(tiny_t5, folder)
    # as a pretrained Marian or BART summariser ships it: a token it must never write, and its own lengths
    config = json.loads((folder / "generation_config.json").read_text())
    config.update(bad_words_ids=[[7]], min_length=56, max_length=142, num_beams=4, length_penalty=2.0,
                  no_repeat_ngram_size=3)
    (folder / "generation_config.json").write_text(json.dumps(config))
    task = _task(folder, generation={"max_new_tokens": 30})
    model = task.build_model(str(folder), _state(task))
    own = model.generation_config
    assert own.bad_words_ids == [[7]] and own.max_new_tokens == 30
    # generate() fills what a config leaves unset from the model's own: none of the checkpoint's lengths,
    # beams or penalties are left there to fill it with
    assert (own.num_beams, own.no_repeat_ngram_size, own.min_length, own.max_length) == (1, 0, None, None)
    assert own.length_penalty is None


def test_stream_yields_the_predicted_text_and_stops_on_request(tiny_t5):
    task = _task(tiny_t5, generation={"max_new_tokens": 12})
    tok, state = task._tokenizer, _state(task)
    model = task.build_model(str(tiny_t5), state).eval()
    _no_end_token(model, *tok.all_special_ids)  # words only, and all 12 of them
    example = Seq2SeqExample("john went to paris")
    (prediction,) = predict_examples(task, model, tok, [example], state)
    assert "".join(task.stream(model, tok, example, state)).strip() == prediction.text
    shorter = "".join(task.stream(model, tok, example, state, settings={"max_new_tokens": 3})).strip()
    assert prediction.text.startswith(shorter) and len(shorter) < len(prediction.text)
    with pytest.raises(ValueError, match="generation settings: num_beams"):
        task.stream(model, tok, example, state, settings={"num_beams": 0})
    stop = threading.Event()
    stop.set()  # the client went away before the first token
    assert "".join(task.stream(model, tok, example, state, stop=stop)).strip() in ("", prediction.text.split()[0])


def test_dev_cap_takes_examples_spread_over_the_split():
    task = _task(eval_max_examples=3)
    examples = [Seq2SeqExample(str(i), "x") for i in range(10)]
    assert [ex.text for ex in task.dev_examples(examples)] == ["0", "3", "6"]
    assert len(_task().dev_examples(examples)) == 10


# -- end to end (subprocesses) ------------------------------------------------------------------------

def _splits(tmp: Path) -> list[str]:
    return [f"data.{split}={_write_rows(tmp / f'{split}.jsonl', make_seq2seq_rows(n, seed))}"
            for split, n, seed in (("train", 96, 0), ("dev", 24, 1), ("test", 24, 2))]


@pytest.mark.slow
def test_decoder_only_trains_predicts_serves_and_scores(tiny_decoder, tmp_path):
    common = ["task=seq2seq", f"model.source={tiny_decoder}", "model.max_length=32", f"output.dir={tmp_path / 'runs'}",
              "output.name=r", "train.batch_size=8", "train.threads=1", "train.precision=fp32", "train.warmup_ratio=0",
              "train.lr=3e-3", "train.epochs=14", "task.generation.max_new_tokens=8", "task.headline=rougeLsum",
              "task.eval_max_examples=12"]
    done = subprocess.run([*CLI, "train", "--quiet", *common, *_splits(tmp_path)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(done.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["metric"] == "rougeLsum" and summary["test"]["rougeLsum"] >= 0.75, summary
    assert json.loads((run / "model" / "task.json").read_text())["extras"] == {"architecture": DECODER_ONLY}
    assert json.loads((run / "model" / "generation_config.json").read_text())["max_new_tokens"] == 8
    inputs = ["the river and mary smith said", "a great film in london"]
    text = tmp_path / "inputs.txt"
    text.write_text("\n".join(inputs) + "\n", encoding="utf-8")
    done = subprocess.run([*CLI, "predict", str(run), str(text), "-o", str(tmp_path / "out.jsonl")], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [{"output": "mary smith"}, {"output": "london"}]

    from fastapi.testclient import TestClient

    from runassist.predict import Predictor
    from runassist.serve import ServeSettings, create_app

    predictor = Predictor.from_run(run)
    with TestClient(create_app(predictor, settings=ServeSettings(max_wait_ms=1))) as client:
        served = client.post("/v1/predict", json={"inputs": inputs})
        assert served.status_code == 200 and served.json()["predictions"] == rows, served.text
    pieces = list(predictor.task.stream(predictor.model, predictor.processor, Seq2SeqExample(inputs[0]),
                                        predictor.state))
    assert "".join(pieces).strip() == "mary smith"

    done = subprocess.run([*CLI, "evaluate", str(run), "--json"], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["scores"]["rougeLsum"] == pytest.approx(summary["test"]["rougeLsum"])
    done = subprocess.run([*CLI, "export", str(run)], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "seq2seq model cannot be exported to ONNX" in done.stderr, done.stderr


@pytest.mark.slow
def test_lora_on_an_encoder_decoder_model(tiny_t5, tmp_path):
    from runassist.predict import Predictor
    from runassist.tasks import load_config
    from runassist.train.run import train

    cfg = load_config(None, ["task=seq2seq", f"model.source={tiny_t5}", "model.max_length=32",
                             f"output.dir={tmp_path / 'runs'}", "train.max_steps=3", "train.threads=1",
                             "train.precision=fp32", "task.generation.max_new_tokens=4",
                             "train.lora={r: 4, alpha: 8, target_modules: [q, v], merge: false}", *_splits(tmp_path)])
    result = train(cfg, progress=False)
    assert result.summary["trainable_parameters"] < result.summary["parameters"] / 5
    assert (result.run / "model" / "adapter_config.json").is_file()
    predictor = Predictor.from_run(result.run)  # the adapter on its base model; the kind read from the base
    assert predictor.task._kind == ENCODER_DECODER and len(predictor.predict(["john went"])) == 1


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(tiny_t5, tmp_path):
    from safetensors.torch import load_file

    from test_resume import GATED

    out = tmp_path / "runs"
    args = ["train", "--quiet", "--no-report", "task=seq2seq", f"model.source={tiny_t5}", "model.max_length=32",
            f"output.dir={out}", "train.batch_size=8", "train.threads=1", "train.precision=fp32", "train.lr=3e-3",
            "train.epochs=20", "train.max_steps=40", "train.checkpoint_every=10", "train.eval_every=20",
            "train.dropout=0.1", "task.generation.max_new_tokens=6", *_splits(tmp_path)]
    done = subprocess.run([*CLI, *args, "output.name=straight"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    marker = tmp_path / "gate"
    env = {**ENV, "GATE_FILE": str(marker), "GATE_KIND": "step", "GATE_AT": "25"}
    proc = subprocess.Popen([sys.executable, "-c", GATED, *args, "output.name=killed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "the run never reached its gate"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # five steps past the checkpoint at step 20: no chance to clean up
    proc.wait()
    proc.stderr.close()
    state = json.loads((out / "killed" / "checkpoints" / "last" / "state.json").read_text())
    assert state["position"]["step"] == 20
    done = subprocess.run([*CLI, "train", "--quiet", "--no-report", "--resume", str(out / "killed")], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(out / "straight" / "model" / "model.safetensors"), load_file(out / "killed" / "model" /
                                                                                  "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    s1, s2 = (json.loads((out / name / "summary.json").read_text()) for name in ("straight", "killed"))
    assert s2["status"] == "finished" and s1["best"] == s2["best"] and s1["test"] == pytest.approx(s2["test"])


def test_init_comments_the_generation_keys_too():
    from runassist.init_config import render

    text = render("seq2seq")
    assert "    max_new_tokens: 128  # longest output, in tokens (never the default 20)" in text
    assert "  headline: rougeLsum  # the score early stopping" in text


def test_the_example_config_loads():
    from runassist.tasks import load_config

    cfg = load_config(REPO / "examples" / "seq2seq.yaml")
    assert cfg.task.name == "seq2seq" and cfg.task.generation.num_beams == 4 and cfg.task.headline == "rougeLsum"
