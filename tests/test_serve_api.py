"""The HTTP service in process: every route, every limit, bad input, auth, metrics, batching, draining."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from runassist.errors import RunassistError
from runassist.serve import ServeSettings, create_app
from serve_fixtures import StubPredictor, tiny_run  # noqa: F401  (tiny_run is a fixture)

STATIC = Path(__file__).resolve().parents[1] / "runassist" / "serve" / "static"


@pytest.fixture(scope="module")
def predictor(tiny_run):  # noqa: F811
    from runassist.predict import Predictor

    return Predictor.from_run(tiny_run.run)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, settings=ServeSettings(max_wait_ms=1))) as c:
        yield c


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


# -- routes -------------------------------------------------------------------

def test_predict_matches_the_predictor(client, predictor, tiny_run):  # noqa: F811
    inputs = [*tiny_run.all_inputs, ["john", "went", "to", "paris"], "", "   "]
    response = client.post("/v1/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions == json.loads(json.dumps(predictor.predict(inputs)))
    tagged = [p for text, p in zip(inputs, predictions) if text in tiny_run.tagged]
    entity = tagged[0]["entities"][0]
    assert {"label", "text", "start", "end", "score"} <= set(entity)
    text = next(t for t, p in zip(inputs, predictions) if p is tagged[0])
    assert text[entity["start"]:entity["end"]] == entity["text"]
    for e in predictions[len(tiny_run.all_inputs)]["entities"]:  # a word list: word positions, no char offsets
        assert "word_start" in e and "start" not in e
    assert predictions[-1] == {"tokens": [], "tags": [], "entities": []}


def test_health_model_tools_and_page(client, predictor):
    assert client.get("/health").json() == {"status": "ok", "auth_required": False}
    model = client.get("/v1/model").json()
    info = predictor.info()
    assert {k: model[k] for k in info} == json.loads(json.dumps(info))
    assert model["task"] == "ner" and model["metrics"]["dev"]["f1"] > 0
    assert model["limits"]["max_inputs"] == 64 and "api_key" not in model["limits"]

    tool = client.get("/v1/tools").json()
    assert tool["type"] == "function"
    function = tool["function"]
    assert function["name"] == "extract_entities"
    assert all(t in function["description"] for t in ("LOC", "ORG", "PER"))
    schema = function["parameters"]
    assert schema["type"] == "object" and schema["required"] == ["inputs"]
    assert schema["properties"]["inputs"]["maxItems"] == 64 and schema["properties"]["inputs"]["minItems"] == 1

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in ("app.js", "app.css"):
        assert f"static/{name}" in page.text
        assert client.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():  # no CDN, no external URL of any kind
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path.name


def test_unknown_routes_and_methods_are_json(client):
    _error(client.get("/v2/predict"), 404, "not_found")
    _error(client.get("/v1/predict"), 405, "method_not_allowed")


# -- bad input and limits ----------------------------------------------------------

@pytest.mark.parametrize("body,status,code", [
    (b"{bad json", 400, "bad_json"),
    (b"", 400, "bad_json"),
    (b"\xff\xfe\x00garbage", 400, "bad_json"),
    (b"[" * 50_000 + b"]" * 50_000, 400, "bad_json"),  # deep nesting must not become a RecursionError 500
    (b'["john"]', 422, "invalid_input"),
    (b'{"texts": ["john"]}', 422, "invalid_input"),
    (b'{"inputs": ["a"], "extra": 1}', 422, "invalid_input"),
    (b"{}", 422, "invalid_input"),
    (b'{"inputs": "john went"}', 422, "invalid_input"),
    (b'{"inputs": null}', 422, "invalid_input"),
    (b'{"inputs": []}', 422, "invalid_input"),
    (b'{"inputs": [1, 2]}', 422, "invalid_input"),
    (b'{"inputs": [["john", 3]]}', 422, "invalid_input"),
    (b'{"inputs": [{"text": "x"}]}', 422, "invalid_input"),
])
def test_bad_bodies_are_4xx_with_a_json_error(client, body, status, code):
    error = _error(client.post("/v1/predict", content=body, headers={"content-type": "application/json"}),
                   status, code)
    if code == "invalid_input" and b"[1, 2]" in body:
        assert error["message"].startswith("inputs[0]:")


@pytest.fixture(scope="module")
def small(predictor):
    settings = ServeSettings(max_body_bytes=300, max_inputs=3, max_chars=40, max_wait_ms=1)
    with TestClient(create_app(predictor, settings=settings)) as c:
        yield c


def test_limits_name_themselves_and_their_value(small):
    error = _error(small.post("/v1/predict", json={"inputs": ["x"] * 4}), 422, "too_many_inputs")
    assert (error["limit"], error["value"]) == ("max_inputs", 3)
    error = _error(small.post("/v1/predict", json={"inputs": ["ok", "y" * 41]}), 422, "input_too_long")
    assert (error["limit"], error["value"]) == ("max_chars", 40) and "inputs[1]" in error["message"]
    error = _error(small.post("/v1/predict", json={"inputs": [["w" * 20, "w" * 21]]}), 422, "input_too_long")
    error = _error(small.post("/v1/predict", json={"inputs": ["z" * 30] * 3 + [" " * 200]}), 413, "body_too_large")
    assert (error["limit"], error["value"]) == ("max_body_bytes", 300)
    # a chunked body has no Content-Length: it is counted as it arrives
    chunks = iter([b'{"inputs": ["', b"q" * 200, b"q" * 200, b'"]}'])
    error = _error(small.post("/v1/predict", content=chunks), 413, "body_too_large")
    assert error["value"] == 300
    assert small.post("/v1/predict", json={"inputs": ["w" * 40] * 3}).status_code == 200  # at the limits: fine
    assert small.get("/v1/tools").json()["function"]["parameters"]["properties"]["inputs"]["maxItems"] == 3


# -- auth ---------------------------------------------------------------------

def test_api_key_on_every_route_but_health_and_page(predictor):
    with TestClient(create_app(predictor, settings=ServeSettings(api_key="s3cret"))) as c:
        assert c.get("/health").json()["auth_required"] is True
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        for method, path in (("GET", "/v1/model"), ("GET", "/v1/tools"), ("GET", "/metrics"),
                             ("POST", "/v1/predict"), ("GET", "/nowhere")):
            _error(c.request(method, path), 401, "unauthorized")
            _error(c.request(method, path, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
            _error(c.request(method, path, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
            _error(c.request(method, path, headers={"Authorization": "Basic s3cret"}), 401, "unauthorized")
        assert c.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.post("/v1/predict", json={"inputs": ["john"]}, headers={"authorization": "bearer s3cret"})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1
        assert c.get("/v1/model").headers["www-authenticate"] == "Bearer"


# -- metrics ------------------------------------------------------------------

def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, parsed by prometheus_client's own parser (which fails on bad text)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_count_routes_latency_batches_and_errors(predictor):
    with TestClient(create_app(predictor, settings=ServeSettings(max_wait_ms=1))) as c:
        for _ in range(3):
            assert c.post("/v1/predict", json={"inputs": ["john went", "to paris"]}).status_code == 200
        c.post("/v1/predict", content=b"{oops")
        c.post("/v1/predict", json={"inputs": []})
        c.get("/health")
        response = c.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = _samples(response.text)
    predict = {"route": "/v1/predict", "method": "POST"}
    assert _value(s, "runassist_requests_total", **predict, status="200") == 3
    assert _value(s, "runassist_requests_total", **predict, status="400") == 1
    assert _value(s, "runassist_requests_total", **predict, status="422") == 1
    assert _value(s, "runassist_requests_total", route="/health", method="GET", status="200") == 1
    assert _value(s, "runassist_errors_total", kind="bad_json") == 1
    assert _value(s, "runassist_errors_total", kind="invalid_input") == 1
    assert _value(s, "runassist_request_duration_seconds_count", route="/v1/predict") == 5
    assert _value(s, "runassist_request_duration_seconds_bucket", route="/v1/predict", le="+Inf") == 5
    assert _value(s, "runassist_inputs_total") == 6
    assert _value(s, "runassist_batch_size_count") == 3 and _value(s, "runassist_batch_size_bucket", le="2.0") == 3
    assert _value(s, "runassist_queued_inputs") == 0 and _value(s, "runassist_predict_in_flight") == 0
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["runassist_requests"].type == "counter"
    assert families["runassist_request_duration_seconds"].type == "histogram"
    assert families["runassist_queued_inputs"].documentation == "Inputs waiting for the model."
    buckets = [(float(sample.labels["le"]), sample.value) for sample in
               families["runassist_request_duration_seconds"].samples
               if sample.name.endswith("_bucket") and sample.labels["route"] == "/v1/predict"]
    assert [le for le, _ in buckets] == [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                         float("inf")]
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative


def test_two_apps_in_one_process_count_apart(predictor):
    # each app has its own registry: no clash on names, no shared counts
    with TestClient(create_app(predictor)) as one, TestClient(create_app(predictor)) as two:
        for _ in range(3):
            assert one.post("/v1/predict", json={"inputs": ["john went"]}).status_code == 200
        assert two.post("/v1/predict", json={"inputs": ["to paris", "mary"]}).status_code == 200
        two.post("/v1/predict", content=b"{oops")
        first, second = _samples(one.get("/metrics").text), _samples(two.get("/metrics").text)
    ok = {"route": "/v1/predict", "method": "POST", "status": "200"}
    assert _value(first, "runassist_requests_total", **ok) == 3 and _value(first, "runassist_inputs_total") == 3
    assert _value(second, "runassist_requests_total", **ok) == 1 and _value(second, "runassist_inputs_total") == 2
    assert _value(second, "runassist_errors_total", kind="bad_json") == 1
    assert ("runassist_errors_total", frozenset({"kind": "bad_json"}.items())) not in first


# -- batching, isolation, draining (stub predictor: fast, and counts its calls) ------------------

async def _post(client: httpx.AsyncClient, text: str) -> httpx.Response:
    return await client.post("/v1/predict", json={"inputs": [text]})


def test_concurrent_requests_share_one_predictor_call_in_one_thread():
    stub = StubPredictor(delay=0.05)
    app = create_app(stub, settings=ServeSettings(max_wait_ms=20, max_batch_size=64))

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                texts = [f"text number {i}" + "!" * i for i in range(24)]
                responses = await asyncio.gather(*(_post(client, t) for t in texts))
        return texts, responses

    texts, responses = asyncio.run(main())
    for text, response in zip(texts, responses):  # each request gets its own answers back
        assert response.status_code == 200
        assert response.json()["predictions"][0]["echo"] == text
    assert len(stub.calls) <= 3, [len(c) for c in stub.calls]  # 24 requests, a handful of predictor calls
    assert max(len(c) for c in stub.calls) >= 12
    assert len(stub.threads) == 1  # always the same worker thread


def test_batches_stop_at_max_batch_size_and_never_split_a_request():
    stub = StubPredictor(delay=0.03)
    app = create_app(stub, settings=ServeSettings(max_wait_ms=20, max_batch_size=4))

    async def main():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                sizes = [3, 3, 3, 6, 1, 1]
                return sizes, await asyncio.gather(*(client.post("/v1/predict", json={"inputs": [f"r{i}"] * n})
                                                     for i, n in enumerate(sizes)))

    sizes, responses = asyncio.run(main())
    for i, (n, response) in enumerate(zip(sizes, responses)):
        assert [p["echo"] for p in response.json()["predictions"]] == [f"r{i}"] * n
    calls = [len(c) for c in stub.calls]
    assert 6 in calls and all(n <= 4 for n in calls if n != 6)  # the 6-input request went whole, alone
    assert sum(calls) == sum(sizes) and len(calls) < len(sizes)  # the two 1-input requests shared a call


def test_a_failing_request_does_not_fail_its_batch_mates():
    stub = StubPredictor(delay=0.02)
    app = create_app(stub, settings=ServeSettings(max_wait_ms=30))

    async def main():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                return await asyncio.gather(*(_post(client, t) for t in ("fine", "boom", "also fine")))

    ok1, bad, ok2 = asyncio.run(main())
    assert ok1.status_code == ok2.status_code == 200
    _error(bad, 500, "internal")
    assert len(stub.calls[0]) == 3  # they were batched, then retried one by one


def test_shutdown_answers_requests_in_flight_then_refuses():
    stub = StubPredictor(delay=0.2)
    app = create_app(stub, settings=ServeSettings(max_wait_ms=0, max_batch_size=2))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async with app.router.lifespan_context(app):
                pending = [asyncio.create_task(_post(client, f"t{i}")) for i in range(6)]
                while len(stub.calls) < 1:  # the first batch is running, the rest still queued
                    await asyncio.sleep(0.01)
            # the lifespan has ended: the batcher drained every queued request before returning
            done = [task.done() for task in pending]
            late = await _post(client, "too late")
            health = await client.get("/health")
            return done, await asyncio.gather(*pending), late, health

    done, responses, late, health = asyncio.run(main())
    assert all(done) and all(r.status_code == 200 for r in responses)
    assert sum(len(c) for c in stub.calls) == 6
    _error(late, 503, "shutting_down")
    assert health.status_code == 503 and health.json()["status"] == "shutting_down"


# -- starting -------------------------------------------------------------------

def test_incomplete_run_folder_is_a_clear_error_before_binding(tmp_path):
    from runassist.serve import serve

    (tmp_path / "config.yaml").write_text("task: {name: ner}\n")
    with pytest.raises(RunassistError, match="incomplete run folder, missing model/task.json"):
        serve(tmp_path, port=1)  # port 1 would fail to bind: the run is checked first
    with pytest.raises(RunassistError, match="no such run folder"):
        serve(tmp_path / "nope", workers=2, port=1)


@pytest.mark.parametrize("bad", [{"max_wait_ms": -1}, {"max_inputs": 0}, {"max_body_bytes": 1.5},
                                 {"api_key": "  "}])
def test_settings_are_checked(bad):
    with pytest.raises(RunassistError, match=next(iter(bad)) if "api_key" not in bad else "API key"):
        ServeSettings(**bad)


def test_cli_prints_the_error_and_exits_2_for_an_incomplete_run(tmp_path, monkeypatch, capsys):
    from runassist import cli

    monkeypatch.setattr("sys.argv", ["runassist", "serve", str(tmp_path), "--port", "1"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "incomplete run folder" in err and "Traceback" not in err


def test_worker_factory_reads_the_run_from_the_environment(tiny_run, monkeypatch):  # noqa: F811
    from runassist.serve.app import app_from_env

    monkeypatch.setenv("RUNASSIST_SERVE_RUN", str(tiny_run.run))
    monkeypatch.setenv("RUNASSIST_SERVE_OPTIONS", json.dumps({"backend": "torch", "threads": 1, "max_inputs": 5}))
    monkeypatch.setenv("RUNASSIST_API_KEY", "k")
    with TestClient(app_from_env()) as c:
        assert c.get("/v1/model").status_code == 401
        model = c.get("/v1/model", headers={"X-API-Key": "k"}).json()
        assert model["run"] == tiny_run.run.name and model["limits"]["max_inputs"] == 5
    monkeypatch.setenv("RUNASSIST_SERVE_OPTIONS", json.dumps({"max_input": 5}))
    with pytest.raises(RunassistError, match="unknown key"):
        app_from_env()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_an_empty_api_key(tiny_run, workers):  # noqa: F811
    import socket

    from runassist.serve import serve

    # The port is taken: if the empty key were let through, serve() would fail on it (or, with workers, start).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        for key in ("", "   "):
            with pytest.raises(RunassistError, match="API key is empty"):
                serve(tiny_run.run, port=taken.getsockname()[1], workers=workers, api_key=key)


def test_worker_factory_refuses_an_empty_api_key_and_serves_without_an_unset_one(tiny_run, monkeypatch):  # noqa: F811
    from runassist.serve.app import app_from_env

    monkeypatch.setenv("RUNASSIST_SERVE_RUN", str(tiny_run.run))
    monkeypatch.setenv("RUNASSIST_API_KEY", "")  # as the parent's --api-key "$KEY" would pass an unset KEY on
    with pytest.raises(RunassistError, match="API key is empty"):
        app_from_env()
    monkeypatch.delenv("RUNASSIST_API_KEY")
    with TestClient(app_from_env()) as c:
        assert c.get("/health").json() == {"status": "ok", "auth_required": False}
        assert c.get("/v1/model").status_code == 200


def test_lone_surrogates_are_a_client_error(client):
    # valid JSON, but no tokenizer accepts it: 422, never a 500 (and never a re-run of the batch)
    body = '{"inputs": ["john \\ud800 went"]}'
    error = _error(client.post("/v1/predict", content=body, headers={"content-type": "application/json"}),
                   422, "invalid_input")
    assert "Unicode" in error["message"]


def test_client_chosen_methods_do_not_grow_the_metrics(predictor):
    with TestClient(create_app(predictor, settings=ServeSettings(max_wait_ms=1))) as c:
        for i in range(20):
            c.request(f"FOO{i}", "/v1/model")
        text = c.get("/metrics").text
    assert "FOO" not in text
    assert 'method="other"' in text
