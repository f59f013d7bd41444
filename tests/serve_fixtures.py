"""One tiny trained NER run shared by the serving, browser and MCP tests, and two tiny chat runs.

A fixture imported into several test modules becomes one fixture definition per module,
each with its own cache, so a plain session fixture would train once per module. The run
is therefore memoised here, at module level, and trained once per test session (so are the chat runs).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import make_chat_rows, make_ner_sentences, ner_overrides, write_conll, write_jsonl

REPO = Path(__file__).resolve().parents[1]
# the console script beside this interpreter (the venv's), else the one on PATH
RUNASSIST = str(Path(sys.executable).with_name("runassist")) if Path(sys.executable).with_name("runassist").exists() \
    else (shutil.which("runassist") or "runassist")

# Sentences made of the training vocabulary; the fixture keeps those the trained model tags.
CANDIDATES = [
    "john smith visited london",
    "mary went to paris with john",
    "apple works in new york",
    "google said mary smith lives in london",
    "the movie was great and john loved it",
    "paris is a city on the river",
    "mary smith works at google",
    "john went to new york",
]


@dataclass(frozen=True)
class TinyRun:
    run: Path
    tagged: list[str]  # inputs for which the run predicts at least one entity
    all_inputs: list[str]


_CACHE: dict[str, TinyRun] = {}


def train_tiny_run(tiny_model: Path, folder: Path) -> TinyRun:
    import torch

    from runassist.tasks import load_config
    from runassist.predict import Predictor
    from runassist.train.run import train

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    files = {split: write_conll(folder / f"{split}.conll", make_ner_sentences(n, seed))
             for split, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    cfg = load_config(None, ner_overrides(files, tiny_model, folder / "runs", max_steps=30, lr="1e-2",
                                          warmup_ratio=0, early_stopping="null"))
    run = train(cfg, progress=False).run
    predictions = Predictor.from_run(run).predict(CANDIDATES)
    tagged = [text for text, p in zip(CANDIDATES, predictions) if p["entities"]]
    return TinyRun(run=run, tagged=tagged, all_inputs=list(CANDIDATES))


@pytest.fixture(scope="session")
def tiny_run(tiny_model, tmp_path_factory) -> TinyRun:
    key = str(tiny_model)
    if key not in _CACHE:
        _CACHE[key] = train_tiny_run(tiny_model, tmp_path_factory.mktemp("serve-run"))
    found = _CACHE[key]
    assert found.tagged, "the tiny run tags none of the candidate sentences; train it longer"
    return found


@dataclass(frozen=True)
class ChatRuns:
    trained: Path  # answers "hello" with "hi how are you", "bye" with "see you later"
    untrained: Path  # one step at a learning rate of 1e-12: greedy decoding loops without ever ending


_CHAT_CACHE: dict[str, ChatRuns] = {}


def train_chat_runs(tiny_llama: Path, folder: Path) -> ChatRuns:
    import torch

    from runassist.tasks import load_config
    from runassist.train.run import train

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    files = {split: write_jsonl(folder, make_chat_rows(n, seed), f"{split}.jsonl")
             for split, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}

    def overrides(out: str, **train_args) -> list[str]:
        items = ["task=chat", f"model.source={tiny_llama}", "model.max_length=48", f"output.dir={folder / out}",
                 *(f"data.{k}={v}" for k, v in files.items()), "train.batch_size=8", "train.threads=1",
                 "train.precision=fp32", "train.warmup_ratio=0", "task.generation.max_new_tokens=8"]
        return items + [f"train.{k}={v}" for k, v in train_args.items()]

    trained = train(load_config(None, overrides("trained", epochs=10, lr="1e-2")), progress=False).run
    untrained = train(load_config(None, overrides("untrained", max_steps=1, lr="1e-12")), progress=False).run
    return ChatRuns(trained=trained, untrained=untrained)


@pytest.fixture(scope="session")
def chat_runs(tiny_llama, tmp_path_factory) -> ChatRuns:
    key = str(tiny_llama)
    if key not in _CHAT_CACHE:
        _CHAT_CACHE[key] = train_chat_runs(tiny_llama, tmp_path_factory.mktemp("chat-runs"))
    return _CHAT_CACHE[key]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


class ThreadedServer:
    """An ASGI app on a free loopback port, served by uvicorn in a daemon thread."""

    def __init__(self, app):
        import uvicorn

        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it a response
        # written in two parts waits ~40 ms for a delayed ACK (Nagle)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ThreadedServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


from runassist.tasks.default import BaseTask  # noqa: E402


class StubTask(BaseTask):
    """Answers like a task's to_json, without a model: for tests of the serving machinery. The
    edges the service reads (tool schema, descriptions) are BaseTask's defaults."""

    def __init__(self, name: str = "classify", labels: tuple[str, ...] = ("negative", "positive")):
        self.name, self.labels, self.multi_label = name, list(labels), False

    def to_json(self, example: str, prediction: float) -> dict:
        if self.name == "ner":
            return {"tokens": example.split(), "tags": [], "entities": []}
        probs = {self.labels[1]: prediction, self.labels[0]: round(1 - prediction, 4)}
        ranked = dict(sorted(probs.items(), key=lambda kv: -kv[1]))
        top = next(iter(ranked))
        return {"labels": [top], "label": top, "probs": ranked, "echo": example}


class StubPredictor:
    """Any object with examples / predict_examples / info / task serves. This one records every
    predictor call (its batch), can be slow, and fails on the input "boom"."""

    def __init__(self, *, delay: float = 0.0, task: str = "classify"):
        import threading

        self.task = StubTask(task)
        self.delay, self.calls, self.threads = delay, [], set()
        self._lock = threading.Lock()

    def examples(self, inputs):
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise ValueError(f"inputs[{i}]: each input must be a string")
        return list(inputs)

    def predict_examples(self, examples):
        import threading
        import time

        with self._lock:
            self.calls.append(list(examples))
            self.threads.add(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if "boom" in examples:
            raise RuntimeError("the model exploded")
        return [round(min(len(text), 100) / 100, 4) for text in examples]

    def info(self):
        return {"run": "stub-run", "task": self.task.name, "labels": self.task.labels, "base_model": "stub-model",
                "backend": "torch", "metrics": {"best": {"step": 3, "epoch": 1, "metric": "accuracy", "value": 0.75},
                                                "dev": {"accuracy": 0.75, "macro_f1": 0.7}, "test": {"accuracy": 0.7}}}
