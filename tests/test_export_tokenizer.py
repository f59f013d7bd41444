"""`runassist export RUN --with-tokenizer`: one ONNX file from raw text to entities, run from
Python's onnxruntime and from Node.js (onnxruntime-node), compared with `runassist predict`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, make_ner_sentences, ner_overrides, write_conll

torch.set_num_threads(1)
pytestmark = pytest.mark.slow

# Entities of the tiny model's training sentences, in text the way users write it: punctuation on
# words, handles, URLs, emoji and joiners, CJK, full-width forms, accents, odd white space.
TEXTS = [
    "john smith lives in london",
    "mary smith loved paris, and new york!",
    "@john went to google (london) today...",
    "Mary's apple: http://t.co/xyz #google",
    "U.S., e-mail don't :) &amp; 'john'",
    "JOHN   SMITH\tin PARIS",
    "john smith\nin paris",
    "约翰 john 在北京 工作。",
    "mary😂😂 london😍 apple\ufe0f!",
    "Café naïve ÉCOLE — john… mary smith",
    "ｊｏｈｎ ＷＴＯ １９９８ london",
    "«paris» “london” ‘mary’ john's",
    "i'm at new york.. with john smith!!!",
    "the story of apple and google, by mary",
    "john@london.com (john) [mary] {paris}",
    "new-york paris-based johnsmith MARY",
    "#mary @@john $apple 100% 3:00pm",
    "me & john :-) ;) :P <3 xD",
    "\u200bjohn\u00admary \u2028london",
    "über straße İstanbul ΟΔΟΣ",
    ("john smith and mary smith went from london to paris and new york with apple and google people, then "
     "john went home to london while mary stayed in paris with google and apple loved the story of new york"),
    "",
    "   ",
    "john",
    "x",
]


def _train(base: Path) -> Path:
    from runassist.tasks import load_config
    from runassist.train.run import train as train_run

    base.mkdir(parents=True, exist_ok=True)
    files = {split: write_conll(base / f"{split}.conll", make_ner_sentences(n, seed))
             for (split, seed), n in zip((("train", 0), ("dev", 1), ("test", 2)), (96, 24, 8))}
    overrides = ner_overrides(files, base.parent / "model", base / "runs", max_steps=80, lr="1e-2",
                              early_stopping="null", eval_every=80) + ["model.max_length=16", "model.stride=4"]
    return train_run(load_config(None, overrides), progress=False).run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from conftest import build_tiny_model_dir

    from runassist.export_text import export_with_tokenizer

    base = tmp_path_factory.mktemp("tokexport")
    build_tiny_model_dir(base / "model")
    run = _train(base / "work")
    info = export_with_tokenizer(run)
    return run, info


def _predict(run: Path, texts: list[str]) -> list[list[dict]]:
    from runassist.predict import Predictor

    predictor = Predictor.from_run(run, precision="fp32")
    return [[{k: e[k] for k in ("label", "start", "end")} for e in out["entities"]] for out in predictor.predict(texts)]


def _keys(rows: list[list[dict]]) -> list[list[dict]]:
    return [[{k: e[k] for k in ("label", "start", "end")} for e in row] for row in rows]


def test_export_writes_one_file_and_passes_parity(exported):
    import onnx

    run, info = exported
    path = run / "onnx" / "model.with_tokenizer.onnx"
    assert info["passed"] and Path(info["file"]) == path and path.is_file()
    assert info["parity"]["texts"] == 24 and info["parity"]["agreement"] == 1.0
    meta = json.loads((run / "onnx" / "model.with_tokenizer.json").read_text())
    assert meta["names"]["entity_label"] == ["LOC", "ORG", "PER"]
    assert meta["input"]["name"] == "codepoints"
    graph = onnx.load(str(path))
    # Standard operators only: any ONNX Runtime loads it without a custom-operator library.
    assert {op.domain for op in graph.opset_import} <= {"", "ai.onnx"}
    assert all(node.domain in ("", "ai.onnx") for node in graph.graph.node)


def test_graph_matches_predict_on_raw_text(exported):
    from runassist.export_text import run_text, session_for
    from runassist.tasks.ner_graph import entities

    run, info = exported
    session = session_for(run / "onnx" / "model.with_tokenizer.onnx")
    got = [entities(run_text(session, t), info["names"], t) for t in TEXTS]
    want = _predict(run, TEXTS)
    assert sum(len(row) for row in want) >= 15, "the tiny model should find entities in these texts"
    assert _keys(got) == want
    # Windows are exercised: the run reads 14 sub-tokens a window (model.max_length=16).
    from transformers import AutoTokenizer

    from runassist.data.words import tokenize_with_offsets

    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    lengths = [len(tokenizer(tokenize_with_offsets(t)[0], is_split_into_words=True, add_special_tokens=False)
                   ["input_ids"]) if t.strip() else 0 for t in TEXTS]
    assert sum(n > 14 for n in lengths) >= 6 and max(lengths) > 50, lengths
    # Every word's tag and probability, not only the entities: a word read in another window than
    # predict reads it has other context, so another probability.
    from runassist.predict import Predictor

    predictor = Predictor.from_run(run, precision="fp32")
    examples = predictor.examples(TEXTS)
    for text, ex, pred in zip(TEXTS, examples, predictor.predict_examples(examples)):
        _, _, tag, score, *_ = run_text(session, text)
        assert [info["names"]["tag"][int(k)] for k in tag] == list(pred.tags), repr(text)
        np.testing.assert_allclose(score, pred.scores, atol=2e-5, err_msg=repr(text))
    # The entity text is the slice of the input that predict reports.
    first = got[0]
    assert [(e["label"], e["text"]) for e in first] == [("PER", "john smith"), ("LOC", "london")]


def test_graph_word_split_and_wordpieces_equal_python(exported):
    """Words (offsets) from the exported graph, and sub-word ids from the same module in torch,
    equal tokenize_with_offsets + the fast tokenizer on the texts and 300 random strings."""
    from transformers import AutoTokenizer

    from runassist.data import char_tables
    from runassist.data.words import tokenize_with_offsets
    from runassist.export_text import run_text, session_for
    from runassist.tasks.text_graph import TextToSubwords, WordPieceSpec

    run, _ = exported
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    subwords = TextToSubwords(WordPieceSpec(tokenizer), char_tables.build(tokenizer.backend_tokenizer.normalizer))
    session = session_for(run / "onnx" / "model.with_tokenizer.onnx")
    rng = random.Random(7)
    alphabet = list("aAsStTnNlL1 _@#.,!?'’:;=()-o^[]*3/&\"") + ["😂", "\ufe0f", "\u200d", "é", "\u0301", "中", "。",
                                                                "Ｗ", "ſ", "—", "…", "\u3000", "\t", "€", "İ", "\x00"]
    texts = TEXTS + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(300)]
    for text in texts:
        words, offsets = tokenize_with_offsets(text)
        start, end, *_ = run_text(session, text)
        assert list(zip(start.tolist(), end.tolist())) == offsets, repr(text)
        ids, word_of = subwords(torch.tensor([ord(c) for c in text], dtype=torch.int32))[2:]
        if words:
            enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
            assert ids.tolist() == enc["input_ids"] and word_of.tolist() == enc.word_ids(), repr(text)
        else:
            assert ids.numel() == 0


def test_node_matches_runassist_predict(exported, tmp_path):
    """The file run from Node.js (onnxruntime-node, no Python) gives the entities `runassist predict`
    prints for the same texts."""
    from runassist.errors import RunassistError
    from runassist.node_js import ensure_onnxruntime_node, node_entities

    try:
        ensure_onnxruntime_node()
    except RunassistError as exc:
        pytest.skip(f"onnxruntime-node cannot be installed from npm here: {exc}")
    run, _ = exported
    lines = [t for t in TEXTS if t.strip() and "\n" not in t and "\u2028" not in t]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "runassist", "predict", str(run), str(source), "-o", str(out),
                           "--quiet"], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    want = [[{k: e[k] for k in ("label", "start", "end")} for e in json.loads(line)["entities"]]
            for line in out.read_text(encoding="utf-8").splitlines()]
    got, timing = node_entities(run / "onnx" / "model.with_tokenizer.onnx", TEXTS)
    assert timing["texts"] == len(TEXTS)
    by_text = dict(zip(TEXTS, _keys(got)))
    assert sum(len(row) for row in want) >= 10
    assert [by_text[t] for t in lines] == want
    # Non-BMP characters (emoji) count once in the offsets, as in Python.
    emoji = TEXTS.index("mary😂😂 london😍 apple\ufe0f!")
    assert [e["text"] for e in got[emoji]] == [e["text"] for e in _full(run, TEXTS[emoji])]


def _full(run: Path, text: str) -> list[dict]:
    from runassist.predict import Predictor

    return Predictor.from_run(run, precision="fp32").predict([text])[0]["entities"]


def test_refusals(exported, monkeypatch):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from runassist.errors import RunassistError
    from runassist.export_text import export_with_tokenizer
    from runassist.tasks.base import Capabilities
    from runassist.tasks.ner import NerTask
    from runassist.tasks.text_graph import WordPieceSpec

    run, _ = exported
    level = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    level.pre_tokenizer = pre_tokenizers.Whitespace()
    assert "WordLevel" in WordPieceSpec(PreTrainedTokenizerFast(tokenizer_object=level)).reason
    monkeypatch.setattr(NerTask, "capabilities", Capabilities(text_graph=False))
    with pytest.raises(RunassistError, match="no raw-text graph"):
        export_with_tokenizer(run)


def test_rejects_below_min_agreement(exported, monkeypatch):
    """A graph that disagrees with predict is kept in onnx/rejected/, not exported."""
    from runassist import export_text

    run, _ = exported
    monkeypatch.setattr(export_text, "_parity_set",
                        lambda reference, limit: ("fake", ["john smith"], [[{"label": "LOC", "start": 0, "end": 4}]]))
    info = export_text.export_with_tokenizer(run)
    assert not info["passed"] and info["parity"]["agreement"] == 0.0
    assert (run / "onnx" / "rejected" / "model.with_tokenizer.onnx").is_file()
    assert not (run / "onnx" / "model.with_tokenizer.onnx").exists()
    np.testing.assert_equal(json.loads((run / "onnx" / "model.with_tokenizer.json").read_text())["passed"], False)
