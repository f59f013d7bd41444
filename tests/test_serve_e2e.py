"""The real `runassist serve` process: concurrent clients get what `runassist predict` writes, SIGTERM exits cleanly,
with --workers N /metrics adds up every worker's numbers, and the openai client chats with a chat run."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from serve_fixtures import RUNASSIST, chat_runs, free_port, subprocess_env, tiny_run  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

PREDICT_OK = ("runassist_requests_total",
              frozenset({"route": "/v1/predict", "method": "POST", "status": "200"}.items()))


def _same(a, b, path="") -> None:
    """Equal JSON, scores within 1e-3: another batch composition pads differently (float noise)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-3), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _wait_healthy(proc: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server did not answer /health:\n{log.read_text()[-3000:]}")


def test_served_answers_equal_predict_and_sigterm_exits_cleanly(tiny_run, tmp_path):  # noqa: F811
    inputs = [text for _ in range(3) for text in tiny_run.all_inputs] + ["paris", "the river in london was great"]
    source = tmp_path / "inputs.txt"
    source.write_text("\n".join(inputs) + "\n", encoding="utf-8")
    port, env = free_port(), subprocess_env()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    terminated = False
    with open(log, "w") as log_file:  # a file, not a pipe: a full pipe would block the server's logging
        server = subprocess.Popen([RUNASSIST, "serve", str(tiny_run.run), "--port", str(port)],
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        # the batch CLI runs while the server starts (overlapping the two imports of torch)
        predict = subprocess.Popen([RUNASSIST, "predict", str(tiny_run.run), str(source), "-o",
                                    str(tmp_path / "out.jsonl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env, text=True)
        _wait_healthy(server, url, log)

        def one(i: int):
            with httpx.Client(base_url=url, timeout=30) as client:
                return i, client.post("/v1/predict", json={"inputs": [inputs[i]]})

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(one, range(len(inputs))))
            # and one request with every input at once
            whole = httpx.post(f"{url}/v1/predict", json={"inputs": inputs}, timeout=30)

        _, err = predict.communicate(timeout=120)
        assert predict.returncode == 0, err
        expected = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert len(expected) == len(inputs)
        for i, response in answers:
            assert response.status_code == 200, response.text
            _same(response.json()["predictions"][0], expected[i], f"inputs[{i}]")
        assert whole.status_code == 200
        _same(whole.json()["predictions"], expected)
        assert any(p["entities"] for p in expected)

        assert _samples(httpx.get(f"{url}/metrics").text)[PREDICT_OK] == len(inputs) + 1

        # SIGTERM while a slow request is being answered: it still gets its full answer
        slow = {"inputs": [" ".join(["john smith visited london"] * 200)] * 16}  # ~1,000 windows of 32 tokens
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/predict", json=slow, timeout=120)
            while not pending.done() and "\nrunassist_predict_in_flight 1.0\n" not in httpx.get(f"{url}/metrics").text:
                time.sleep(0.005)
            in_flight = not pending.done()
            server.send_signal(signal.SIGTERM)
            terminated = True
            response = pending.result()
        assert in_flight, "the slow request finished before SIGTERM could be sent"
        assert response.status_code == 200 and len(response.json()["predictions"]) == 16
    finally:
        if not terminated:
            server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Application shutdown complete" in text and "Traceback" not in text, text[-3000:]


def _answered_per_worker(folder: Path) -> dict[int, float]:
    """POST /v1/predict answered 200, per worker process: each worker's own counter file, read apart."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        samples = [s for metric in MultiProcessCollector.merge([str(path)]) for s in metric.samples]
        counts[int(path.stem.split("_")[1])] = sum(s.value for s in samples
                                                   if (s.name, frozenset(s.labels.items())) == PREDICT_OK)
    return counts


def test_metrics_add_up_the_workers(tiny_run, tmp_path):  # noqa: F811
    port, env = free_port(), subprocess_env()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["TMPDIR"] = str(tmp_path)  # where serve makes its private metrics folder: looked into, then gone
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    terminated = False
    with open(log, "w") as log_file:
        server = subprocess.Popen([RUNASSIST, "serve", str(tiny_run.run), "--port", str(port), "--workers", "2"],
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(server, url, log)
        folders = list(tmp_path.glob("runassist-metrics-*"))
        assert len(folders) == 1 and folders[0].stat().st_mode & 0o077 == 0, folders
        folder = folders[0]
        deadline = time.monotonic() + 90
        while len(list(folder.glob("counter_*.db"))) < 2:  # a file per worker, made when its app is created
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)

        def one(i: int) -> None:  # a new connection each time: the kernel hands them to either worker
            response = httpx.post(f"{url}/v1/predict", json={"inputs": [tiny_run.all_inputs[i % 8]]}, timeout=30)
            assert response.status_code == 200, response.text

        sent = 0
        with ThreadPoolExecutor(max_workers=4) as pool:
            while True:  # until both workers have answered some (the kernel decides which one accepts)
                list(pool.map(one, range(sent, sent + 8)))
                sent += 8
                per_worker = _answered_per_worker(folder)
                if sum(n > 0 for n in per_worker.values()) == 2 or sent >= 400:
                    break
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        assert sum(per_worker.values()) == sent

        for _ in range(6):  # whichever worker answers a scrape, it reports all of them
            text = httpx.get(f"{url}/metrics", timeout=10).text
            s = _samples(text)
            assert s[PREDICT_OK] == sent and s[("runassist_inputs_total", frozenset())] == sent
            assert s[("runassist_predict_in_flight", frozenset())] == 0
            assert s[("runassist_queued_inputs", frozenset())] == 0
            assert text.count("# TYPE runassist_requests_total counter") == 1  # registered once: no double count
        server.send_signal(signal.SIGTERM)
        terminated = True
        code = server.wait(timeout=60)
    finally:
        if not terminated:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
    assert not folder.exists()  # the metrics folder goes with the server


def test_a_client_that_hangs_up_mid_body_is_no_server_error(tiny_run, tmp_path):  # noqa: F811
    port, env = free_port(), subprocess_env()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    terminated = False
    with open(log, "w") as log_file:
        server = subprocess.Popen([RUNASSIST, "serve", str(tiny_run.run), "--port", str(port)],
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(server, url, log)
        # a raw client: promises 1,000 bytes, sends 14, then closes the connection
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b'{"inputs": ["j')
            time.sleep(0.2)  # let the server start reading the body
        deadline = time.monotonic() + 30
        while True:  # the server notices the hang-up on its own time
            s = _samples(httpx.get(f"{url}/metrics", timeout=10).text)
            predict = {dict(labels)["status"]: value for (name, labels), value in s.items()
                       if name == "runassist_requests_total" and dict(labels)["route"] == "/v1/predict"}
            if predict or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert predict == {"499": 1.0}, predict  # counted as the client's hang-up, never as a 500
        assert not any(name == "runassist_errors_total" for name, _ in s), s  # no error answered, none internal
        # and the server goes on answering
        response = httpx.post(f"{url}/v1/predict", json={"inputs": [tiny_run.tagged[0]]}, timeout=30)
        assert response.status_code == 200, response.text
        server.send_signal(signal.SIGTERM)
        terminated = True
        code = server.wait(timeout=30)
    finally:
        if not terminated:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "disconnected before its request POST /v1/predict was read" in text, text[-3000:]
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


@pytest.mark.parametrize("how", ["unset variable in --api-key", "empty RUNASSIST_API_KEY"])
def test_cli_refuses_an_empty_api_key(tiny_run, tmp_path, how):  # noqa: F811
    env = {k: v for k, v in subprocess_env().items() if k not in ("KEY", "RUNASSIST_API_KEY")}
    port = str(free_port())
    if how == "empty RUNASSIST_API_KEY":
        command = [RUNASSIST, "serve", str(tiny_run.run), "--port", port]
        env["RUNASSIST_API_KEY"] = ""
    else:  # what a script gets when it forgot to export KEY
        command = ["bash", "-c", 'exec "$0" serve "$1" --port "$2" --api-key "$KEY"', RUNASSIST, str(tiny_run.run),
                   port]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it is serving, without authentication
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"`runassist serve` started with an empty API key:\n{err[-3000:]}")
    assert proc.returncode == 2, err
    assert "error:" in err and "API key is empty" in err and "Traceback" not in err, err
    assert "Uvicorn running" not in err + out


def test_the_openai_client_chats_with_runassist_serve_and_its_workers(chat_runs, tmp_path):  # noqa: F811
    openai = pytest.importorskip("openai")
    port, env = free_port(), subprocess_env()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen([RUNASSIST, "serve", str(chat_runs.trained), "--port", str(port), "--workers", "2",
                                   "--api-key", "s3cret", "--max-new-tokens", "64"],
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(server, url, log)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in client.models.list()] == [chat_runs.trained.name]
        hello = [{"role": "user", "content": "hello"}]
        for _ in range(3):  # new connections: either worker may answer
            stream = client.chat.completions.create(model="any", messages=hello, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream) == "hi how are you"
            whole = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "bye"}])
            assert whole.choices[0].message.content == "see you later"
        with pytest.raises(openai.BadRequestError, match="max_new_tokens=64"):
            client.chat.completions.create(model="any", messages=hello, max_tokens=65)
        s = _samples(httpx.get(f"{url}/metrics", headers={"X-API-Key": "s3cret"}).text)  # every worker's
        assert s[("runassist_generations_total", frozenset({"finish": "stop"}.items()))] == 6
        assert s[("runassist_generated_tokens_total", frozenset())] == 3 * (5 + 4)
        assert s[("runassist_generations_in_flight", frozenset())] == 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
