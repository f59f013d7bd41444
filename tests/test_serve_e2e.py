"""The real `runassist serve` process: concurrent clients get what `runassist predict` writes, SIGTERM exits cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve_fixtures import RUNASSIST, free_port, subprocess_env, tiny_run  # noqa: F401  (tiny_run is a fixture)

pytestmark = pytest.mark.slow


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

        metrics = httpx.get(f"{url}/metrics").text
        assert f'runassist_requests_total{{route="/v1/predict",method="POST",status="200"}} {len(inputs) + 1}' \
            in metrics

        # SIGTERM while a slow request is being answered: it still gets its full answer
        slow = {"inputs": [" ".join(["john smith visited london"] * 200)] * 16}  # ~1,000 windows of 32 tokens
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/predict", json=slow, timeout=120)
            while not pending.done() and "runassist_predict_in_flight 1" not in httpx.get(f"{url}/metrics").text:
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
