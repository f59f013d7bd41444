"""Keeping the model current, end to end: the feedback store (SQLite and PostgreSQL), corrections
through the service, the export with its held-out slice, a service following the registry that
swaps models without failing a request, and the whole loop train -> serve -> correct -> export ->
retrain -> gate -> promote."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import make_ner_sentences, train_tiny_ner
from pg_server import postgres_server
from serve_fixtures import REPO, RUNASSIST
from runassist.data.tags import char_entities
from runassist.feedback import SCHEMA_VERSION, FeedbackStore, _v1, export, held_out, input_hash
from runassist.predict import Predictor
from runassist.registry import Registry
from runassist.serve.app import create_app
from runassist.serve.live import LivePredictor


def _text_and_entities(sentence):
    """A sentence of (word, tag) as the text a client sends and its gold entities as character spans."""
    return char_entities([w for w, _ in sentence], [t for _, t in sentence])


@pytest.fixture(scope="module")
def project(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("lifecycle")
    champion = train_tiny_ner(tiny_model, base, (48, 16, 40), steps=40, name="champion", warmup_ratio=0)
    files = {split: base / f"{split}.conll" for split in ("train", "dev", "test")}
    return base, champion, files


# -- the store ----------------------------------------------------------------------------------

def _rows(n, version="m@1"):
    return [{"id": f"p{i}", "model": "run-a", "version": version, "task": "ner", "input": f"john went to paris {i}",
             "output": {"entities": []}, "confidence": i / n} for i in range(n)]


def _exercise_store(store: FeedbackStore):
    store.record_predictions(_rows(40))
    assert store.counts()["predictions"] == 40
    assert store.prediction("p3")["input"] == "john went to paris 3"
    store.add_correction("p3", {"entities": [{"start": 0, "end": 4, "label": "PER"}]})
    store.add_correction("p3", {"entities": [{"start": 0, "end": 4, "label": "ORG"}]})  # the later one wins
    store.add_correction("p5", {"entities": []})
    with pytest.raises(KeyError):
        store.add_correction("nope", {"entities": []})
    corrected = store.corrected()
    assert len(corrected) == 2
    assert {c["id"]: c["corrected"]["entities"][0]["label"] for c in corrected if c["corrected"]["entities"]} == \
        {"p3": "ORG"}
    assert store.enqueue([{"input": "x", "score": 0.1}, {"input": "x", "score": 0.2}, {"input": "y"}]) == 2
    assert [q["input"] for q in store.queued()][:1] == ["x"]
    assert store.schema_version() == SCHEMA_VERSION


def test_sqlite_store_records_corrects_and_queues(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    _exercise_store(store)
    with sqlite3.connect(tmp_path / "feedback.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.slow
def test_postgresql_store_records_corrects_and_queues():
    with postgres_server() as url:
        store = FeedbackStore(url)
        _exercise_store(store)
        assert FeedbackStore(url).schema_version() == SCHEMA_VERSION  # opened again: nothing to migrate
        store.close()


def test_a_version_1_store_is_migrated_with_its_rows(tmp_path):
    from sqlalchemy import create_engine

    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # a store as the first release left it
        _v1(conn)
        conn.exec_driver_sql("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO schema_version VALUES (1)")
        conn.exec_driver_sql("INSERT INTO predictions VALUES ('old', 't', 'm', '1', 'ner', 'h', '\"a text\"', '{}')")
    engine.dispose()
    store = FeedbackStore(path)
    assert store.schema_version() == 2
    assert store.prediction("old")["input"] == "a text" and store.prediction("old")["confidence"] is None
    store.add_correction("old", {"tags": ["O", "O"]})
    assert store.counts() == {"predictions": 1, "corrections": 1, "label_queue": 0}
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(Exception, match="schema version 99"):
        FeedbackStore(path)


def test_export_writes_the_tasks_format_and_holds_out_by_hash(project, tmp_path):
    base, champion, files = project
    task = Predictor.from_run(champion).task
    store = FeedbackStore(tmp_path / "fb.sqlite")
    sentences = make_ner_sentences(60, seed=11)
    rows = []
    for i, sentence in enumerate(sentences):
        text, entities = _text_and_entities(sentence)
        rows.append({"id": f"p{i}", "model": "champion", "version": "ner@1", "task": "ner", "input": text,
                     "output": {"entities": []}})
    store.record_predictions(rows)
    for i, sentence in enumerate(sentences):
        store.add_correction(f"p{i}", {"entities": _text_and_entities(sentence)[1]})
    first = export(store, task, tmp_path / "export-1", holdout=0.25)
    second = export(store, task, tmp_path / "export-2", holdout=0.25)
    assert first["content_hash"] == second["content_hash"]  # pinned: the same corrections, the same dataset
    n_test = sum(held_out(input_hash(r["input"]), 0.25) for r in rows)
    assert first["files"]["test"]["examples"] == n_test and 0 < n_test < 60
    assert first["files"]["train"]["examples"] == 60 - n_test
    # the files are CoNLL the task reads back, with the corrected tags
    back = task.read(first["files"]["train"]["path"]) + task.read(first["files"]["test"]["path"])
    gold = {" ".join(w for w, _ in s): tuple(t for _, t in s) for s in sentences}
    assert all(gold[" ".join(ex.tokens)] == ex.tags for ex in back) and len(back) == 60
    test_texts = {" ".join(ex.tokens) for ex in task.read(first["files"]["test"]["path"])}
    assert test_texts == {r["input"] for r in rows if held_out(input_hash(r["input"]), 0.25)}


def test_ner_corrections_must_cover_whole_words(project):
    base, champion, files = project
    task = Predictor.from_run(champion).task
    ex = task.example_from_feedback("mary smith went home", {"entities": [{"start": 0, "end": 10, "label": "PER"}]})
    assert ex.tags == ("B-PER", "I-PER", "O", "O")
    with pytest.raises(ValueError, match="whole words"):
        task.example_from_feedback("mary smith went home", {"entities": [{"start": 0, "end": 3, "label": "PER"}]})
    with pytest.raises(ValueError, match="one tag"):
        task.example_from_feedback("mary smith", {"tags": ["B-PER"]})
    with pytest.raises(ValueError, match='"entities"'):
        task.example_from_feedback("mary smith", {"label": "x"})


# -- the service ---------------------------------------------------------------------------------

def test_service_stamps_predictions_takes_corrections_and_follows_the_registry(project, tmp_path):
    base, champion, files = project
    reg = Registry(tmp_path / "registry")
    reg.add("ner", champion, alias="champion")
    copy = tmp_path / "copy"
    shutil.copytree(champion, copy)
    live = LivePredictor("registry:ner@champion", reg, lambda p: Predictor.from_run(p), poll_s=60)
    store = FeedbackStore(tmp_path / "fb.sqlite")
    with TestClient(create_app(live, feedback=store, queue_below=1.01)) as client:
        answer = client.post("/v1/predict", json={"inputs": ["john went to paris", "mary smith works at google"]})
        assert answer.status_code == 200
        preds = answer.json()["predictions"]
        assert all(len(p["id"]) == 32 and p["model_version"] == "ner@1" for p in preds)
        assert store.counts()["predictions"] == 2
        assert store.counts()["label_queue"] == 2  # every confidence is below 1.01
        ok = client.post("/v1/feedback", json={"id": preds[0]["id"],
                                               "output": {"entities": [{"start": 0, "end": 4, "label": "PER"}]}})
        assert ok.status_code == 200 and ok.json() == {"stored": 1}
        assert client.post("/v1/feedback", json={"id": "nope", "output": {}}).status_code == 404
        bad = client.post("/v1/feedback", json={"id": preds[0]["id"],
                                                "output": {"entities": [{"start": 0, "end": 2, "label": "PER"}]}})
        assert bad.status_code == 422 and "whole words" in bad.json()["error"]["message"]
        assert client.post("/v1/feedback", json={"output": {}}).status_code == 422
        assert client.get("/v1/model").json()["registry"]["version"] == 1

        reg.add("ner", copy, alias="champion")  # a new champion: the service follows it
        assert live.refresh() and live.version == 2
        assert client.get("/v1/model").json()["registry"]["version"] == 2
        again = client.post("/v1/predict", json={"inputs": ["john went to paris"]}).json()["predictions"][0]
        assert again["model_version"] == "ner@2"
        assert again["entities"] == preds[0]["entities"]  # the same weights: the same answer
        reg.rollback("ner")
        assert live.refresh() and live.version == 1
    assert len(store.corrected()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(ref: str, registry, *extra: str):
    port = _free_port()
    env = {"RUNASSIST_REGISTRY": str(registry), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    import os

    env = {**os.environ, **env}
    proc = subprocess.Popen([RUNASSIST, "serve", ref, "--port", str(port), *extra], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not become healthy")


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_clients_write_1600_corrections_and_none_is_lost(project, tmp_path, backend):
    base, champion, files = project
    reg = Registry(tmp_path / "registry")
    reg.add("ner", champion, alias="champion")
    with (postgres_server() if backend == "postgresql" else _nothing(None)) as url:
        extra = ("--feedback", url) if url else ()
        proc, address = _serve("registry:ner@champion", reg.root, *extra)
        try:
            ids = [p["id"] for p in httpx.post(address + "/v1/predict", json={"inputs": ["john went to paris"] * 8},
                                               timeout=30).json()["predictions"]]
            failures = []

            def client(k: int) -> None:
                with httpx.Client(base_url=address, timeout=60) as http:
                    for i in range(200):
                        r = http.post("/v1/feedback", json={"id": ids[k], "output": {"tags": ["B-PER", "O", "O", "O"]},
                                                            "source": f"client-{k}-{i}"})
                        if r.status_code != 200:
                            failures.append(r.text)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            _stop(proc)
        assert not failures, failures[:3]
        store = FeedbackStore(url or reg.root / "feedback.sqlite")
        assert store.counts()["corrections"] == 1600
        assert store.counts()["predictions"] == 8


class _nothing:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


@pytest.mark.slow
def test_the_whole_loop_and_the_service_switches_without_failing_a_request(project, tmp_path):
    """train -> serve from the registry -> 50 predictions -> corrections -> export -> retrain -> gate
    -> promote -> the running service answers with the new version; a client kept asking throughout."""
    base, champion, files = project
    reg = Registry(tmp_path / "registry")
    reg.add("ner", champion, alias="champion")
    sentences = make_ner_sentences(50, seed=21)
    proc, address = _serve("registry:ner@champion", reg.root)
    import os

    env = {**os.environ, "RUNASSIST_REGISTRY": str(reg.root)}
    stop, seen, failures = threading.Event(), set(), []

    def keep_asking() -> None:
        with httpx.Client(base_url=address, timeout=60) as http:
            while not stop.is_set():
                r = http.post("/v1/predict", json={"inputs": ["mary smith works at google"]})
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    seen.add(r.json()["predictions"][0]["model_version"])

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        texts = [_text_and_entities(s) for s in sentences]
        preds = httpx.post(address + "/v1/predict", json={"inputs": [t for t, _ in texts]}, timeout=60).json()
        assert len(preds["predictions"]) == 50
        corrections = [{"id": p["id"], "output": {"entities": ents}} for p, (_, ents) in zip(preds["predictions"], texts)]
        assert httpx.post(address + "/v1/feedback", json={"corrections": corrections}, timeout=60).json() == \
            {"stored": 50}

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([RUNASSIST, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

        exported = cli("feedback", "export", "registry:ner@champion", "-o", str(tmp_path / "export"))
        assert exported.returncode == 0, exported.stderr
        manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
        assert manifest["corrections"] == 50 and manifest["files"]["test"]["examples"] > 0
        gate = tmp_path / "gate.yaml"
        gate.write_text("epsilon: 0.5\nlatency_ratio: 10\nsamples: 200\n")  # the loop is under test here, not the bar
        retrained = cli("retrain", "registry:ner@champion", "--data", manifest["files"]["train"]["path"],
                        "--feedback-test", manifest["files"]["test"]["path"], "--promote", "--gate", str(gate),
                        "train.max_steps=20", "train.eval_every=20", "train.threads=1")
        assert retrained.returncode == 0, retrained.stdout + retrained.stderr
        assert reg.champion("ner")[0] == 2
        deadline = time.monotonic() + 60
        while "ner@2" not in seen and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        asker.join()
        _stop(proc)
    assert seen == {"ner@1", "ner@2"}, seen  # answered by the old model, then by the new one
    assert not failures, failures
    events = [e["event"] for e in reg.history("ner")]
    assert events[-2:] == ["add", "alias:champion"]
