"""One contract for every task: train -> save -> load -> predict -> serve -> score, through the real CLI.

Every task of the table runs it, and so does a third task that exists only in this file: a text
regressor (a score per text, no label set, a loss and metrics of its own, a headline where lower
is better), registered the way a plugin package registers one, through the ``runassist.tasks``
entry-point group. Nothing outside ``runassist/tasks/`` may need to learn about a task for it to
pass; nothing in ``runassist/`` names this one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pytest
import torch
from pydantic import Field

from conftest import REPO, make_ner_sentences, make_qa_rows, write_conll
from runassist.config import TaskSection
from runassist.data.records import Split
from runassist.errors import DataError
from runassist.tasks.base import Capabilities, Feature, TaskState, pad_inputs
from runassist.tasks.default import BaseTask

HERE = Path(__file__).resolve().parent
POSITIVE = "great good fun loved".split()
NEGATIVE = "bad terrible boring hated".split()
NEUTRAL = "the movie film plot story acting was a".split()


# -- the plugin task -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScoredText:
    text: str
    score: float | None = None
    source: str = ""


class TextScoreSection(TaskSection):
    name: Literal["text-score"] = "text-score"
    score_key: str = Field("score", description="JSON key of the number to predict")


class TextScoreTask(BaseTask):
    """Text regression: a number per text (mean squared error), scored by mean absolute error."""

    name = "text-score"
    Section = TextScoreSection
    headline = "mae"
    headline_mode = "min"
    capabilities = Capabilities(onnx=False, int8_guard=False)
    tool_name = "score_text"

    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        from runassist.data.io import iter_jsonl

        key, examples = self.task_cfg.score_key, []
        for line, row in iter_jsonl(path):
            score = row.get(key)
            if require_labels and not isinstance(score, (int, float)):
                raise DataError(path, line, f"'{key}' must be a number")
            examples.append(ScoredText(row["text"], None if score is None else float(score), f"{path}:{line}"))
        return Split(str(path), examples)

    def label_set(self, examples: Sequence[ScoredText]) -> None:
        return None

    def label_units(self, example: ScoredText) -> tuple[str, ...]:
        return ()

    def check_labels(self, read, report) -> None:
        if "train" in read and all(ex.score is None for ex in read["train"]):
            report.errors.append("train: no scores")

    def unlabelled(self, example: ScoredText) -> ScoredText:
        return dataclasses.replace(example, score=None)

    def example_from_input(self, item: Any) -> ScoredText:
        if not isinstance(item, str):
            raise ValueError("each input must be a string")
        return ScoredText(item)

    def encode(self, examples: Sequence[ScoredText], tokenizer: Any, state: TaskState) -> list[Feature]:
        ids = tokenizer([ex.text for ex in examples], truncation=True, max_length=self.model_cfg.max_length)
        return [Feature(example=i, inputs={"input_ids": ids["input_ids"][i]}, target=ex.score)
                for i, ex in enumerate(examples)]

    def collate(self, features: Sequence[Feature], tokenizer: Any) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, tokenizer.pad_token_id)
        if all(f.target is not None for f in features):
            batch["labels"] = torch.tensor([f.target for f in features], dtype=torch.float32)
        return batch

    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        from runassist.tasks.hf import load_model

        return load_model(AutoModelForSequenceClassification, source, None, dropout=dropout, num_labels=1,
                          problem_type="regression")

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs.logits.float().squeeze(-1), batch["labels"])

    def decode(self, examples, features, outputs, state) -> list[float]:
        return [float(out[0]) for out in outputs]

    def score(self, examples: Sequence[ScoredText], predictions: Sequence[float], state: TaskState) -> dict:
        gold = np.array([ex.score for ex in examples], dtype=float)
        pred = np.array(predictions, dtype=float)
        return {"mae": float(np.abs(gold - pred).mean()), "rmse": float(np.sqrt(((gold - pred) ** 2).mean()))}

    def to_json(self, example: ScoredText, prediction: float) -> dict:
        return {"score": round(prediction, 4)}

    def gold_json(self, example: ScoredText) -> dict:
        return {"text": example.text, "gold": example.score}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """Register TextScoreTask as an installed package would: a dist-info with an entry point."""
    from runassist import tasks

    site = tmp_path_factory.mktemp("site")
    dist = site / "textscore_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: textscore-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[runassist.tasks]\ntext-score = test_contract:TextScoreTask\n")
    sys.path.insert(0, str(site))
    tasks.refresh()
    yield site
    sys.path.remove(str(site))
    tasks.refresh()


# -- data for each task ---------------------------------------------------------------------------

def _sentiment_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(NEUTRAL, 4) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label, "score": 1.0 if label == "pos" else -1.0})
    return rows


def _ner_data(tmp: Path) -> tuple[list[str], list, str]:
    files = {s: write_conll(tmp / f"{s}.conll", make_ner_sentences(n, seed))
             for s, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    inputs = ["mary smith visited london with google", "the river in paris"]
    return [f"data.{k}={v}" for k, v in files.items()] + ["train.lr=3e-3", "train.epochs=8"], inputs, "f1"


def _classify_data(tmp: Path) -> tuple[list[str], list, str]:
    specs = []
    for split, n, seed in (("train", 96, 0), ("dev", 24, 1), ("test", 24, 2)):
        path = tmp / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in _sentiment_rows(n, seed))
        specs.append(f"data.{split}={path}")
    return specs + ["train.lr=3e-3", "train.epochs=6"], ["a great fun movie", "the plot was boring"], "accuracy"


def _score_data(tmp: Path) -> tuple[list[str], list, str]:
    specs = []
    for split, n, seed in (("train", 96, 0), ("dev", 24, 1), ("test", 24, 2)):
        path = tmp / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"text": r["text"], "score": r["score"]}) + "\n"
                                for r in _sentiment_rows(n, seed)), encoding="utf-8")
        specs.append(f"data.{split}={path}")
    return specs + ["train.lr=3e-3", "train.epochs=12"], ["a great fun movie", "the plot was boring"], "mae"


def _qa_data(tmp: Path) -> tuple[list[str], list, str]:
    specs = []
    for split, n, seed in (("train", 96, 0), ("dev", 24, 1), ("test", 24, 2)):
        path = tmp / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make_qa_rows(n, seed)), encoding="utf-8")
        specs.append(f"data.{split}={path}")
    inputs = [{"question": "which person ?", "context": "the movie with mary smith was great"},
              {"question": "which city ?", "context": "we visited london with john"}]
    return specs + ["task.no_answer=true", "train.lr=3e-3", "train.epochs=12"], inputs, "f1"


def _relations_data(tmp: Path) -> tuple[list[str], list, str]:
    from conftest import make_relation_rows

    specs = []
    for split, n, seed in (("train", 60, 0), ("dev", 16, 1), ("test", 16, 2)):
        path = tmp / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make_relation_rows(n, seed)), encoding="utf-8")
        specs.append(f"data.{split}={path}")
    inputs = [{"text": "mary smith works for google", "head": {"start": 0, "end": 10, "type": "PER"},
               "tail": {"start": 21, "end": 27, "type": "ORG"}},
              {"text": "john lives in paris", "head": {"start": 0, "end": 4, "type": "PER"},
               "tail": {"start": 14, "end": 19, "type": "LOC"}}]
    return specs + ["train.lr=3e-3", "train.epochs=8"], inputs, "f1"


def _chat_data(tmp: Path) -> tuple[list[str], list, str]:
    from conftest import build_tiny_llama_dir, make_chat_rows

    specs = []
    for split, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2)):
        path = tmp / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make_chat_rows(n, seed)), encoding="utf-8")
        specs.append(f"data.{split}={path}")
    model = build_tiny_llama_dir(tmp / "llama")  # a causal LM: the BERT the others use cannot chat
    return specs + [f"model.source={model}", "model.max_length=48", "train.lr=1e-2", "train.epochs=10",
                    "task.generation.max_new_tokens=8"], ["hello", "bye"], "perplexity"



def _seq2seq_data(tmp: Path) -> tuple[list[str], list, str]:
    from conftest import build_tiny_t5_dir, make_seq2seq_rows

    specs = []
    for split, n, seed in (("train", 96, 0), ("dev", 24, 1), ("test", 24, 2)):
        path = tmp / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make_seq2seq_rows(n, seed)), encoding="utf-8")
        specs.append(f"data.{split}={path}")
    model = build_tiny_t5_dir(tmp / "t5")  # an encoder-decoder: the BERT the others use cannot write text
    return specs + [f"model.source={model}", "train.lr=3e-3", "train.epochs=6", "task.generation.max_new_tokens=8"], \
        ["the river and mary smith said", "a great film in london"], "rougeL"



def _file_input(path: Path) -> dict:
    """A file as the service and the library take it: base64 and its name (its path, for `predict`)."""
    import base64

    return {"base64": base64.b64encode(path.read_bytes()).decode("ascii"), "name": str(path)}


def _audio_data(tmp: Path) -> tuple[list[str], list, str]:
    """Two command words said by three espeak-ng voices: trained at two speeds, scored at a third."""
    from speech_helpers import commands, needs_espeak, tiny_audio_classifier

    if needs_espeak.args[0]:
        pytest.skip(needs_espeak.kwargs["reason"])
    folder = commands()
    inputs = [_file_input(folder / "test" / word / "en_m3-160.wav") for word in ("yes", "stop")]
    return [f"data.train={folder / 'train'}", f"data.dev={folder / 'test'}", f"data.test={folder / 'test'}",
            f"model.source={tiny_audio_classifier()}", "train.lr=3e-3", "train.epochs=40",
            "train.early_stopping=null"], inputs, "accuracy"


def _asr_data(tmp: Path) -> tuple[list[str], list, str]:
    """Ten espeak-ng utterances (the digits) that a tiny CTC model, trained from scratch, overfits."""
    from speech_helpers import needs_espeak, ten_digits, tiny_ctc

    if needs_espeak.args[0]:
        pytest.skip(needs_espeak.kwargs["reason"])
    manifest = ten_digits()
    inputs = [_file_input(manifest.parent / f"{word}.wav") for word in ("seven", "two")]
    return [f"data.train={manifest}", f"data.dev={manifest}", f"data.test={manifest}", f"model.source={tiny_ctc()}",
            "task.freeze_feature_encoder=false", "train.batch_size=10", "train.lr=3e-3", "train.epochs=200",
            "train.eval_every=100", "train.scheduler=constant", "train.early_stopping=null"], inputs, "wer"


def _image_data(tmp: Path) -> tuple[list[str], list, str]:
    import base64

    from image_helpers import build_tiny_vit_dir, colour_image, write_image_folder

    specs = [f"data.{split}={write_image_folder(tmp / split, n, seed)}"
             for split, n, seed in (("train", 24, 0), ("dev", 8, 1), ("test", 8, 2))]
    model = build_tiny_vit_dir(tmp / "vit")  # an image model: the BERT the others use cannot see
    inputs = []
    for label, mode in (("light", "L"), ("dark", "RGBA")):  # grayscale and transparency convert as trained
        path = tmp / f"input-{label}.png"
        path.write_bytes(colour_image(label, 99, mode=mode))
        inputs.append({"base64": base64.b64encode(path.read_bytes()).decode("ascii"), "name": str(path)})
    return specs + [f"model.source={model}", "train.lr=3e-3", "train.epochs=4", "task.augment=[flip,crop]"], \
        inputs, "accuracy"


DATA = {"ner": _ner_data, "image": _image_data, "classify": _classify_data, "qa": _qa_data,
        "relations": _relations_data, "chat": _chat_data, "seq2seq": _seq2seq_data, "text-score": _score_data,
        "audio": _audio_data, "asr": _asr_data}


def test_every_task_has_contract_data():
    from runassist.tasks import TASKS

    assert set(TASKS) | {"text-score"} == set(DATA)


def _check_answers(task: str, rows: list[dict]) -> None:
    if task == "ner":
        assert all({"label", "text", "start", "end", "score"} <= set(e) for r in rows for e in r["entities"])
        assert any(e["label"] == "PER" and e["text"] == "mary smith" for e in rows[0]["entities"]), rows[0]
    elif task == "classify":
        assert [r["label"] for r in rows] == ["pos", "neg"]
    elif task == "image":
        assert [(r["label"], Path(r["file"]).name) for r in rows] == [("light", "input-light.png"),
                                                                      ("dark", "input-dark.png")], rows
    elif task == "relations":
        assert [r["relation"] for r in rows] == ["works_for", "lives_in"], rows
        assert [r["head"]["text"] for r in rows] == ["mary smith", "john"]
    elif task == "qa":
        assert [r["answer"] for r in rows] == ["mary smith", "london"], rows
        assert all(r["end"] - r["start"] == len(r["answer"]) for r in rows)
    elif task == "chat":
        assert rows == [{"reply": "hi how are you"}, {"reply": "see you later"}]
    elif task == "seq2seq":
        assert rows == [{"output": "mary smith"}, {"output": "london"}]
    elif task == "audio":
        assert [r["label"] for r in rows] == ["yes", "stop"], rows
    elif task == "asr":
        assert [r["text"] for r in rows] == ["seven", "two"], rows
    else:  # learned the sign of the words: positive text above zero, negative below
        assert rows[0]["score"] > 0.3 and rows[1]["score"] < -0.3, rows


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(DATA))
def test_train_save_load_predict_serve_score(task, plugin, tiny_model, tmp_path):
    overrides, inputs, headline = DATA[task](tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(plugin), str(HERE), str(REPO)])}
    common = [f"task={task}", f"model.source={tiny_model}", "model.max_length=32", "model.stride=8",
              f"output.dir={tmp_path / 'runs'}", "output.name=r", "train.batch_size=8", "train.threads=1",
              "train.precision=fp32", "train.warmup_ratio=0"]
    cli = [sys.executable, "-m", "runassist.cli"]
    done = subprocess.run([*cli, "train", "--quiet", *common, *overrides], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(done.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["metric"] == headline and summary["task"] == task
    dev = [r[headline] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if r.get("kind") == "eval"]
    # the kept model is the best dev evaluation, in the headline's own direction
    from runassist.tasks import task_class

    assert summary["best"]["value"] == (min(dev) if task_class(task).headline_mode == "min" else max(dev))
    if task == "text-score":
        assert summary["test"]["mae"] < 0.5, summary["test"]  # targets are -1 / +1: 1.0 is what a constant gets
    elif task == "qa":
        assert summary["test"]["f1"] >= 0.75 and "null_threshold" in summary["extras"], summary
    elif task == "chat":
        assert summary["test"]["perplexity"] < 2.0 < summary["dev_before_training"]["perplexity"], summary
    elif task == "asr":  # the ten utterances are learnt: CER below 0.1
        assert summary["test"]["cer"] < 0.1 and summary["test"]["wer"] <= 0.2, summary["test"]
    else:
        assert summary["test"][headline] >= 0.75, summary["test"]  # the tiny model learns the word lists
    assert (run / "report.html").is_file()

    if task_class(task).media:  # files: predict reads a list of their paths
        text = tmp_path / "inputs.txt"
        text.write_text("\n".join(i["name"] for i in inputs) + "\n", encoding="utf-8")
    elif all(isinstance(i, str) for i in inputs):
        text = tmp_path / "inputs.txt"
        text.write_text("\n".join(inputs) + "\n", encoding="utf-8")
    else:  # objects (a question and its context): JSON lines the task reads without answers
        text = tmp_path / "inputs.jsonl"
        text.write_text("".join(json.dumps(i) + "\n" for i in inputs), encoding="utf-8")
    done = subprocess.run([*cli, "predict", str(run), str(text), "-o", str(tmp_path / "out.jsonl")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(inputs)
    _check_answers(task, rows)

    # the library path loads the same run and answers the same way; so does the service
    from fastapi.testclient import TestClient

    from runassist.predict import Predictor
    from runassist.serve import ServeSettings, create_app

    predictor = Predictor.from_run(run)
    assert predictor.predict(inputs) == rows
    with TestClient(create_app(predictor, settings=ServeSettings(max_wait_ms=1))) as client:
        served = client.post("/v1/predict", json={"inputs": inputs})
        assert served.status_code == 200, served.text
        assert served.json()["predictions"] == rows
        tool = client.get("/v1/tools").json()["function"]
        assert tool["name"] == predictor.task.tool_name and tool["parameters"]["properties"]["inputs"]["items"]
        assert client.get("/v1/model").json()["task"] == task
        assert client.get("/").status_code == 200

    done = subprocess.run([*cli, "evaluate", str(run), "--json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout)["scores"]
    assert scores[headline] == pytest.approx(summary["test"][headline])


def test_a_plugin_task_is_a_task_like_any_other(plugin, tmp_path):
    """init writes its section with its comments; check-data reads its data; a config key it
    does not have fails with its own keys; export refuses what its capabilities say it cannot do."""
    from runassist.tasks import load_config, task_table

    assert task_table()["text-score"] is TextScoreTask
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(plugin), str(HERE), str(REPO)])}
    cli = [sys.executable, "-m", "runassist.cli"]
    done = subprocess.run([*cli, "init", "text-score"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "score_key: score  # JSON key of the number to predict" in done.stdout
    listed = subprocess.run([*cli, "init", "--list"], env=env, capture_output=True, text=True, timeout=120)
    assert {"ner", "classify", "text-score"} <= {line.split("\t")[0] for line in listed.stdout.splitlines()}
    with pytest.raises(Exception, match=r"task\.bogus: unknown key 'bogus'; valid keys of task: name, score_key"):
        load_config(None, ["task=text-score", "task.bogus=1"])

    overrides, _, _ = _score_data(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "score": 1}\n{"text": "no number", "score": "high"}\n', encoding="utf-8")
    done = subprocess.run([*cli, "check-data", "task=text-score", *overrides[:2], f"data.test={bad}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"{bad}:2: 'score' must be a number" in done.stdout, done.stdout


def test_export_follows_the_task_capabilities(plugin, tiny_model, tmp_path):
    from runassist.errors import RunassistError
    from runassist.export import export
    from runassist.tasks import load_config
    from runassist.train.run import train

    overrides, _, _ = _score_data(tmp_path)
    cfg = load_config(None, ["task=text-score", f"model.source={tiny_model}", "model.max_length=32",
                             f"output.dir={tmp_path / 'runs'}", "train.max_steps=2", "train.threads=1",
                             "train.precision=fp32", *overrides])
    run = train(cfg, progress=False).run
    with pytest.raises(RunassistError, match="text-score model cannot be exported to ONNX"):
        export(run)
