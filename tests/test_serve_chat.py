"""OpenAI-compatible chat serving: the official openai client against a real uvicorn serving a tiny
trained chat run (streamed and not), a client that hangs up stops its generation, every limit and bad
request is the service's JSON error, and a run whose task does not stream says so."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from serve_fixtures import ChatRuns, StubPredictor, StubTask, ThreadedServer, chat_runs  # noqa: F401  (a fixture)

from runassist.serve import ServeSettings, create_app
from runassist.serve.openai_chat import StopCut
from runassist.tasks.base import Capabilities

openai = pytest.importorskip("openai")
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def trained(chat_runs: ChatRuns):  # noqa: F811
    from runassist.predict import Predictor

    return Predictor.from_run(chat_runs.trained)


@pytest.fixture(scope="module")
def untrained(chat_runs: ChatRuns):  # noqa: F811
    from runassist.predict import Predictor

    return Predictor.from_run(chat_runs.untrained)


def _metrics(url: str, **headers: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{url}/metrics", headers=headers).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


# -- the openai client against a real server -------------------------------------------------

def test_the_openai_client_gets_streamed_and_whole_replies_from_a_chat_run(trained):
    run = trained.run.name
    with ThreadedServer(create_app(trained, settings=ServeSettings(api_key="s3cret"))) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in client.models.list()] == [run]

        stream = client.chat.completions.create(model="anything", messages=HELLO, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        assert all(c.object == "chat.completion.chunk" and c.model == run for c in chunks)
        assert len({c.id for c in chunks}) == 1
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == "hi how are you" and len(pieces) > 1  # token by token, not one piece
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        usage = chunks[-1].usage  # stream_options.include_usage: a last chunk with no choices
        assert chunks[-1].choices == [] and usage.prompt_tokens == 6
        assert usage.completion_tokens == 5  # four words and the end-of-turn token

        whole = client.chat.completions.create(model=run, messages=[
            {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi how are you"},
            {"role": "user", "content": "bye"}])
        assert whole.object == "chat.completion" and whole.model == run
        choice = whole.choices[0]
        assert (choice.message.role, choice.message.content, choice.finish_reason) == \
            ("assistant", "see you later", "stop")
        assert whole.usage.completion_tokens == 4 and whole.usage.total_tokens == whole.usage.prompt_tokens + 4

        short = client.chat.completions.create(model=run, messages=HELLO, max_tokens=2)
        assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("hi how", "length")
        cut = client.chat.completions.create(model=run, messages=HELLO, stop=[" are", "nothing"])
        assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("hi how", "stop")
        parts = client.chat.completions.create(model=run, max_completion_tokens=8, temperature=0, seed=7,
                                               messages=[{"role": "developer", "content": "you are a bot"},
                                                         {"role": "user", "content": [{"type": "text",
                                                                                        "text": "bye"}]}])
        assert parts.choices[0].message.content == "see you later"

        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=run, messages=[{"role": "robot", "content": "hello"}])
        assert "unknown role 'robot'" in caught.value.message and caught.value.code == "invalid_input"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()

        s = _metrics(server.url, **{"X-API-Key": "s3cret"})
        assert _value(s, "runassist_generations_total", finish="stop") == 4
        assert _value(s, "runassist_generations_total", finish="length") == 1
        # 5 + 4 + 2 + 4, and the reply cut at " are": 3 tokens, or up to all 5 of them, since generation
        # ends within a token of the cut (the stop event is checked between tokens)
        assert 5 + 4 + 2 + 4 + 3 <= _value(s, "runassist_generated_tokens_total") <= 5 + 4 + 2 + 4 + 5
        assert _value(s, "runassist_generations_in_flight") == 0
        ok = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
        assert _value(s, "runassist_requests_total", **ok) == 5
        assert _value(s, "runassist_errors_total", kind="invalid_input") == 1


def _wait_idle(url: str, timeout: float = 10.0) -> tuple[float, dict]:
    """Seconds until no generation is in flight, and the metrics then."""
    started = time.monotonic()
    while True:
        samples = _metrics(url)
        if _value(samples, "runassist_generations_in_flight") == 0:
            return time.monotonic() - started, samples
        assert time.monotonic() - started < timeout, "the generation never ended"
        time.sleep(0.01)


def test_a_client_that_disconnects_stops_its_generation(untrained):
    """The untrained run never emits its end-of-turn token: only the client's leaving can end a
    generation of 8,192 tokens (~10 s here) before max_tokens."""
    settings = ServeSettings(max_new_tokens=8192)
    with ThreadedServer(create_app(untrained, settings=settings)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        stream = client.chat.completions.create(model="x", messages=HELLO, stream=True, max_tokens=8192)
        received = 0
        for chunk in stream:
            received += bool(chunk.choices[0].delta.content)
            if received == 3:
                # the event loop is free while the model generates in its worker thread
                started = time.monotonic()
                assert httpx.get(f"{server.url}/health").status_code == 200
                assert time.monotonic() - started < 1.0
                assert _value(_metrics(server.url), "runassist_generations_in_flight") == 1
                break
        stream.close()  # hang up mid-stream
        waited, samples = _wait_idle(server.url)
        assert waited < 2.0, waited
        assert _value(samples, "runassist_generations_total", finish="cancelled") == 1
        tokens = _value(samples, "runassist_generated_tokens_total")
        assert 3 <= tokens < 1000, tokens  # far from the 8,192 asked for

        # not streamed: a client that gives up waiting stops it too
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", timeout=0.5,
                       json={"model": "x", "messages": HELLO, "max_tokens": 8192})
        waited, samples = _wait_idle(server.url)
        assert waited < 2.0, waited
        assert _value(samples, "runassist_generations_total", finish="cancelled") == 2
        assert _value(samples, "runassist_generated_tokens_total") - tokens < 4000
        assert _value(samples, "runassist_requests_total", route="/v1/chat/completions", method="POST",
                      status="499") == 1


# -- limits and bad requests -----------------------------------------------------------------

@pytest.fixture(scope="module")
def small(trained):
    settings = ServeSettings(max_chars=300, max_new_tokens=16, max_body_bytes=4000)
    with TestClient(create_app(trained, settings=settings)) as c:
        yield c


def _ask(client, **body):
    return client.post("/v1/chat/completions", json={"model": "x", "messages": HELLO, **body})


def test_limits_are_400s_that_name_themselves(small):
    error = _error(_ask(small, messages=[{"role": "user", "content": "y" * 301}]), 400, "input_too_long")
    assert (error["limit"], error["value"]) == ("max_chars", 300)
    many = " ".join(["hello"] * 45)  # 269 characters, 50 tokens with the template: over max_length 48
    error = _error(_ask(small, messages=[{"role": "user", "content": many}]), 400, "prompt_too_long")
    assert (error["limit"], error["value"]) == ("model.max_length", 48) and "50 tokens" in error["message"]
    for name in ("max_tokens", "max_completion_tokens"):
        error = _error(_ask(small, **{name: 17}), 400, "max_tokens_too_large")
        assert (error["limit"], error["value"]) == ("max_new_tokens", 16) and name in error["message"]
    _error(small.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "z" * 3990}]}),
           413, "body_too_large")
    ok = _ask(small, max_tokens=16)  # at the limit: fine
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "hi how are you"


@pytest.mark.parametrize("body,words", [
    ({"messages": []}, "non-empty list"),
    ({"messages": None}, "non-empty list"),
    ({"messages": [{"role": "tool", "content": "42"}]}, "unknown role 'tool'"),
    ({"messages": [{"role": "user"}]}, "'content' must be"),
    ({"messages": [{"role": "user", "content": "   "}]}, "an empty message"),
    ({"messages": ["hello"]}, "must be an object"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "only text content"),
    ({"messages": HELLO + [{"role": "assistant", "content": "hi"}]}, "last message is the assistant's"),
    ({"messages": HELLO, "n": 2}, "only n = 1"),
    ({"messages": HELLO, "temperature": 3}, "temperature = 3"),
    ({"messages": HELLO, "top_p": 0}, "top_p = 0"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens = 0"),
    ({"messages": HELLO, "stream": "yes"}, "stream = 'yes'"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "up to 4"),
    ({"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool calling"),
    ({"messages": HELLO, "logprobs": True}, "logprobs"),
    ([HELLO], "JSON object"),
])
def test_bad_requests_are_400_with_a_message(small, body, words):
    error = _error(small.post("/v1/chat/completions", json=body), 400, "invalid_input")
    assert words in error["message"], error["message"]


def test_bad_json_and_the_other_routes(small, trained):
    _error(small.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}),
           400, "bad_json")
    _error(small.get("/v1/chat/completions"), 405, "method_not_allowed")
    assert small.get("/v1/models").json()["data"][0]["id"] == trained.run.name
    assert small.get("/v1/model").json()["streams"] is True and small.get("/v1/model").json()["conversation"] is True
    streamed = _ask(small, stream=True)  # the SSE body as OpenAI writes it
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [line for line in streamed.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_a_run_whose_task_does_not_stream_says_so():
    with TestClient(create_app(StubPredictor(task="classify"))) as c:
        error = _error(_ask(c), 400, "unsupported_task")
        assert "(classify)" in error["message"] and "/v1/predict" in error["message"]
        assert c.get("/v1/model").json()["streams"] is False and c.get("/v1/model").json()["conversation"] is False
        assert c.get("/v1/models").json()["data"][0]["id"] == "stub-run"


# -- too many at once (a stub that streams until released: the timing is the test's) -----------------

class HeldTask(StubTask):
    capabilities = Capabilities(onnx=False, int8_guard=False, streams=True)

    def __init__(self):
        super().__init__("echo")
        self.release = threading.Event()

    def example_from_input(self, item):  # one text (BaseTask's input schema): the user's message
        return item

    def prompt_tokens(self, processor, example):
        return len(example.split())

    def stream(self, model, processor, example, state, *, stop=None, settings=None, usage=None):
        yield "echo:"
        while not self.release.wait(0.01):
            if stop.is_set():
                return
        for word in example.split():
            yield " " + word
        usage.update(prompt_tokens=self.prompt_tokens(processor, example),
                     completion_tokens=len(example.split()) + 1, ended="eos")


class HeldPredictor(StubPredictor):
    def __init__(self):
        super().__init__()
        self.task = HeldTask()
        self.model = self.processor = self.state = None
        self.cfg = SimpleNamespace(model=SimpleNamespace(max_length=32))


def test_over_max_generations_is_a_429_with_retry_after():
    predictor = HeldPredictor()
    with ThreadedServer(create_app(predictor, settings=ServeSettings(max_generations=1))) as server:
        url = f"{server.url}/v1/chat/completions"
        body = {"model": "x", "messages": [{"role": "user", "content": "one two"}], "stream": True}
        with httpx.stream("POST", url, json=body, timeout=10) as first:
            assert first.status_code == 200
            lines = first.iter_lines()
            assert next(lines).startswith("data: ")  # the first holds the only slot
            second = httpx.post(url, json={**body, "stream": False}, timeout=10)
            error = _error(second, 429, "too_many_generations")
            assert (error["limit"], error["value"]) == ("max_generations", 1)
            assert second.headers["retry-after"] == "1"
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="x", messages=HELLO)
            predictor.task.release.set()
            text = "\n".join(lines)
        assert "\"content\": \" one\"" in text and text.rstrip().endswith("data: [DONE]")
        _wait_idle(server.url)
        whole = httpx.post(url, json={**body, "stream": False}, timeout=10).json()  # the slot is free again
        assert whole["choices"][0]["message"]["content"] == "echo: one two"
        assert whole["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


class TextTask(StubTask):
    """A text-to-text task that streams, written before stream() reported usage: it takes one text (the
    default input schema), has no usage parameter and does not count its prompt."""

    capabilities = Capabilities(onnx=False, int8_guard=False, streams=True)

    def __init__(self):
        super().__init__("reverse")

    def example_from_input(self, item):
        return item

    def stream(self, model, processor, example, state, *, stop=None, settings=None):
        for word in reversed(example.split()):
            yield word + " "


def test_a_streaming_task_that_takes_one_text_gets_the_user_message():
    predictor = HeldPredictor()
    predictor.task = TextTask()
    with TestClient(create_app(predictor)) as c:
        model = c.get("/v1/model").json()
        assert (model["streams"], model["conversation"]) == (True, False)  # the page sends one message
        whole = _ask(c, messages=[{"role": "user", "content": "one two three"}]).json()
        assert whole["choices"][0]["message"]["content"] == "three two one "
        assert whole["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}  # not counted
        streamed = _ask(c, stream=True, messages=[{"role": "user", "content": "a b"}])
        assert '"content": "b "' in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
        error = _error(_ask(c, messages=HELLO + [{"role": "assistant", "content": "hi"}, *HELLO]),
                       400, "invalid_input")
        assert "(reverse) answers one text, not a conversation" in error["message"]


def test_stop_strings_are_cut_across_pieces():
    cut = StopCut(["</s>", "END"])
    out = [cut.feed(p) for p in ("hello <", "/", "s> more")]
    assert "".join(out) == "hello " and cut.hit
    cut = StopCut(["END"])
    assert [cut.feed(p) for p in ("a E", "N", "d")] == ["a ", "", "ENd"] and not cut.hit
    assert cut.feed("x EN") == "x " and cut.flush() == "EN"


def test_the_cli_passes_the_chat_limits_to_the_server(monkeypatch):
    from runassist import cli

    seen = {}
    monkeypatch.setattr("runassist.serve.serve", lambda run, **kwargs: seen.update(kwargs))
    monkeypatch.setattr("sys.argv", ["runassist", "serve", "runs/x", "--max-generations", "3",
                                     "--max-new-tokens", "64"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    assert (seen["max_generations"], seen["max_new_tokens"]) == (3, 64)
    with pytest.raises(Exception, match="max_generations = 0"):
        ServeSettings(max_generations=0)
