"""OpenAI-compatible chat: ``POST /v1/chat/completions`` and ``GET /v1/models``, so the official
``openai`` client (and what is built on it) talks to ``runassist serve``. Only runs whose task streams
(``task.capabilities.streams``) answer; any other run gets a 400 naming its task. A task whose input
schema takes ``{"messages": [...]}`` gets the conversation; one that takes a text (text-to-text) gets
the text of a single user message, and a conversation is refused.

Requests: ``messages`` (roles system, developer (read as system), user and assistant; text content,
a string or text parts; the last message may not be the assistant's), ``model`` (any value: the answer
names the run), ``max_tokens`` / ``max_completion_tokens``, ``temperature`` (0: greedy), ``top_p``,
``stop`` (up to 4 strings: the reply is cut before the first), ``n`` (1 only), ``stream`` and
``stream_options.include_usage``. ``seed`` is accepted and not applied: torch's generator belongs to
the whole process, and seeding it would reach the sampling of other requests. Other fields (``user``,
the penalties, ...) are ignored, except those whose meaning cannot be honoured (tools, logprobs, a
response format other than text), which are refused.

Errors are the service's JSON (``{"error": {"code", "message", ...}}``; the openai client shows
``error.message``), with OpenAI's statuses: 400 for a request that cannot be answered as asked,
limits included (characters over max_chars, a prompt over model.max_length tokens, max_tokens over
max_new_tokens; each names its ``limit`` and ``value``), and 429 when max_generations generations are
running. 429 rather than a queue: a generation holds a core for seconds, a queue would only hide that
wait while holding the connection, and the openai client already retries a 429 after the Retry-After
it names (twice by default), so a burst is smoothed by the client with no server queue to bound or drain.

Threads: each generation runs in a worker thread of its own (``task.stream`` runs ``generate()`` in
another), never on the event loop; its pieces come back through an asyncio queue. A slot is held until
that thread ends, not until the response does, so clients that hang up and retry cannot pile up
generations. A client that disconnects cancels its generation: a streamed response is cancelled when
uvicorn reports the disconnect (and the response's ``finally`` cancels in any case), a non-streamed
one watches for it while it waits; generation then ends within a token.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from runassist.serve.common import CLIENT_CLOSED, ApiError, read_json

log = logging.getLogger("runassist.serve")

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4
RETRY_AFTER_S = 1
REFUSED = ("tools", "functions", "tool_choice", "function_call")  # tool calling: a plain chat model has none


def chat_routes(predictor: Any, settings: Any, metrics: Any, run: str) -> tuple[APIRouter, Generations]:
    """The two routes for ``run`` (its name), and the generations they run (the app's lifespan closes them)."""
    task = predictor.task
    streams = getattr(getattr(task, "capabilities", None), "streams", False)
    conversation = takes_conversation(task, settings.max_chars)
    created = int(time.time())
    generations = Generations(predictor, metrics, settings.max_generations)
    router = APIRouter()

    @router.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": run, "object": "model", "created": created,
                                                         "owned_by": "runassist"}]})

    @router.post("/v1/chat/completions")
    async def completions(request: Request) -> Response:
        if not streams:
            raise ApiError(400, "unsupported_task", f"this run's task ({task.name}) does not generate text: "
                           "/v1/chat/completions serves runs whose task streams its predictions; use POST /v1/predict")
        asked = parse_request(await read_json(request, settings.max_body_bytes), predictor, settings, conversation)
        prompt = await asyncio.to_thread(task.prompt_tokens, predictor.processor, asked.example)
        limit = predictor.cfg.model.max_length
        if prompt is not None and prompt > limit:
            raise ApiError(400, "prompt_too_long", f"the conversation is {prompt} tokens as the model reads it; at "
                           f"most model.max_length={limit}: drop its earliest messages", limit="model.max_length",
                           value=limit)
        generation = generations.start(asked)
        if generation is None:
            raise ApiError(429, "too_many_generations", f"{settings.max_generations} generations are running, "
                           f"the most this server runs at once; retry in {RETRY_AFTER_S} s",
                           limit="max_generations", value=settings.max_generations,
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": run}
        if asked.stream:
            return _EventStream(_events(generation, head, asked.include_usage, prompt), generation,
                                media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        collect = asyncio.ensure_future(_collect(generation))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not collect.done():  # the client went away: nobody reads an answer
            collect.cancel()
            generation.cancel()
            return Response(status_code=CLIENT_CLOSED)
        try:
            text = collect.result()
        except Exception as exc:  # noqa: BLE001 -- logged by the generation thread
            raise ApiError(500, "internal", f"generation failed ({type(exc).__name__}: {exc})") from None
        return JSONResponse({**head, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
             "finish_reason": generation.finish}], "usage": generation.usage_json(prompt)})

    return router, generations


# -- the request ----------------------------------------------------------------

def takes_conversation(task: Any, max_chars: int) -> bool:
    """Whether the task's input schema takes an OpenAI-style conversation (else one text)."""
    schema = task.input_schema(max_chars)
    options = schema.get("anyOf") or [schema]
    return any(o.get("type") == "object" and "messages" in (o.get("properties") or {}) for o in options)


@dataclass
class ChatRequest:
    example: Any
    stream: bool = False
    include_usage: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # generation settings for task.stream
    stops: list[str] = field(default_factory=list)


def parse_request(data: Any, predictor: Any, settings: Any, conversation: bool = True) -> ChatRequest:
    """An OpenAI chat request as the task's example and generation settings; ApiError(400) says what is wrong.
    ``conversation``: the task takes ``{"messages": [...]}``; else the text of one user message."""
    def bad(message: str, code: str = "invalid_input", **limit: Any) -> ApiError:
        return ApiError(400, code, message, **limit)

    if not isinstance(data, dict):
        raise bad("the body must be a JSON object with 'messages'")
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("messages: give a non-empty list of {\"role\", \"content\"}")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise bad(f"messages[{i}] must be an object {{\"role\", \"content\"}}")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise bad(f"messages[{i}]: unknown role {role!r}; roles: {', '.join(ROLES)}")
        content = _text(message.get("content"), i, bad)
        if not content.strip():
            raise bad(f"messages[{i}]: an empty message")
        messages.append({"role": ROLES[role], "content": content})
    if messages[-1]["role"] == "assistant":
        raise bad("messages: the last message is the assistant's; end with the user's message to get a reply")
    chars = sum(len(m["content"]) for m in messages)
    if chars > settings.max_chars:
        raise bad(f"the messages hold {chars} characters; at most max_chars={settings.max_chars}", "input_too_long",
                  limit="max_chars", value=settings.max_chars)
    for name in REFUSED:
        if data.get(name):
            raise bad(f"{name}: tool calling is not supported by this model")
    if data.get("logprobs"):
        raise bad("logprobs: not supported")
    form = data.get("response_format")
    if form is not None and (not isinstance(form, dict) or form.get("type") != "text"):
        raise bad("response_format: only {\"type\": \"text\"} is supported")
    n = data.get("n")
    if n is not None and (n != 1 or isinstance(n, bool)):
        raise bad(f"n = {n!r}: only n = 1 is supported (one reply per request)")
    if not conversation and (len(messages) > 1 or messages[0]["role"] != "user"):
        raise bad(f"this run's task ({predictor.task.name}) answers one text, not a conversation: send one "
                  "user message")
    try:
        example = predictor.task.example_from_input({"messages": messages} if conversation
                                                    else messages[0]["content"])
    except ValueError as exc:
        raise bad(str(exc)) from None
    asked = ChatRequest(example=example, stream=_flag(data, "stream", bad),
                        include_usage=_flag(data.get("stream_options") or {}, "include_usage", bad))
    asked.overrides["max_new_tokens"] = _max_tokens(data, predictor, settings, bad)
    temperature, top_p = _number(data, "temperature", 0, 2, bad), _number(data, "top_p", 0, 1, bad)
    if top_p == 0:
        raise bad("top_p = 0: give a number above 0 and at most 1")
    if temperature == 0:
        asked.overrides["do_sample"] = False
    elif temperature is not None or (top_p is not None and top_p < 1):
        asked.overrides["do_sample"] = True
    if temperature:
        asked.overrides["temperature"] = temperature
    if top_p is not None:
        asked.overrides["top_p"] = top_p
    asked.stops = _stops(data.get("stop"), bad)
    return asked


def _text(content: Any, i: int, bad) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}, ...]
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad(f"messages[{i}]: only text content is supported (a part of type {kind!r})")
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad(f"messages[{i}]: 'content' must be a string or a list of text parts")


def _flag(data: dict, name: str, bad) -> bool:
    value = data.get(name, False) if isinstance(data, dict) else False
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"{name} = {value!r}: give true or false")
    return value


def _number(data: dict, name: str, low: float, high: float, bad) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad(f"{name} = {value!r}: give a number from {low} to {high}")
    return float(value)


def _max_tokens(data: dict, predictor: Any, settings: Any, bad) -> int:
    name = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    value = data.get(name)
    cap = settings.max_new_tokens
    if value is None:  # the run's own setting, within the server's cap
        saved = getattr(getattr(predictor.model, "generation_config", None), "max_new_tokens", None)
        return min(saved or cap, cap)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad(f"{name} = {value!r}: give a whole number of 1 or more")
    if value > cap:
        raise bad(f"{name} = {value}: at most max_new_tokens={cap} on this server", "max_tokens_too_large",
                  limit="max_new_tokens", value=cap)
    return value


def _stops(stop: Any, bad) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise bad(f"stop: give a string or a list of up to {MAX_STOPS} non-empty strings")
    return stops


class StopCut:
    """Cuts streamed text before the first stop string, holding back any end of the text that could
    be the start of one (a stop string can arrive split across pieces)."""

    def __init__(self, stops: list[str]):
        self.stops, self.held, self.hit = stops, "", False

    def feed(self, piece: str) -> str:
        text = self.held + piece
        found = [at for at in (text.find(s) for s in self.stops) if at >= 0]
        if found:
            self.hit, self.held = True, ""
            return text[:min(found)]
        keep = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text


# -- generations ----------------------------------------------------------------

_END = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Generations:
    """The running generations: at most ``limit`` at once, each in a worker thread of its own."""

    def __init__(self, predictor: Any, metrics: Any, limit: int):
        self.predictor, self.metrics = predictor, metrics
        self.slots = threading.BoundedSemaphore(limit)
        # A task written before stream() reported its usage (a plugin) streams all the same, uncounted.
        parameters = inspect.signature(predictor.task.stream).parameters
        self.reports_usage = "usage" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        self.running: set[Generation] = set()
        self.lock = threading.Lock()

    def start(self, asked: ChatRequest) -> Generation | None:
        """A started generation, or None when every slot is taken."""
        if not self.slots.acquire(blocking=False):
            return None
        generation = Generation(self, asked, asyncio.get_running_loop())
        with self.lock:
            self.running.add(generation)
        self.metrics.generating.inc()
        generation.thread.start()
        return generation

    def ended(self, generation: Generation, finish: str, tokens: int) -> None:
        """Called by the generation's thread as it ends."""
        self.metrics.observe_generation(finish, tokens)
        self.metrics.generating.dec()
        with self.lock:
            self.running.discard(generation)
        self.slots.release()

    def close(self, timeout: float = 10.0) -> None:
        """Stop every generation (the server is shutting down) and wait for their threads."""
        with self.lock:
            running = list(self.running)
        for generation in running:
            generation.cancel()
        for generation in running:
            generation.thread.join(timeout)


class Generation:
    def __init__(self, owner: Generations, asked: ChatRequest, loop: asyncio.AbstractEventLoop):
        self.owner, self.asked, self.loop = owner, asked, loop
        self.stop = threading.Event()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.usage: dict[str, Any] = {}
        self.finish: str | None = None  # stop | length (OpenAI's finish_reason), once it has ended
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="runassist-chat")

    def cancel(self) -> None:
        """The client went away: end generation within a token (no-op once it has ended)."""
        if self.finish is None:
            self.cancelled = True
        self.stop.set()

    def usage_json(self, prompt: int | None) -> dict[str, int]:
        prompt = self.usage.get("prompt_tokens", prompt or 0)
        completion = self.usage.get("completion_tokens", 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def pieces(self) -> AsyncIterator[str]:
        """The reply's text as it is made; cancelling the reader cancels the generation."""
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            self.cancel()

    def _put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is reading
            self.stop.set()

    def _run(self) -> None:
        p, outcome = self.owner.predictor, "error"
        try:
            cut = StopCut(self.asked.stops)
            usage = {"usage": self.usage} if self.owner.reports_usage else {}
            stream = p.task.stream(p.model, p.processor, self.asked.example, p.state, stop=self.stop,
                                   settings=self.asked.overrides, **usage)
            with closing(stream):  # closing it sets stop and waits for generate() to end: usage is then filled
                for piece in stream:
                    text = cut.feed(piece)
                    if text:
                        self._put(text)
                    if cut.hit:
                        break
            if not cut.hit and (rest := cut.flush()):
                self._put(rest)
            ended = self.usage.get("ended")
            self.finish = "length" if ended == "length" and not cut.hit else "stop"
            outcome = "cancelled" if self.cancelled else self.finish
            self._put(_END)
        except BaseException as exc:
            log.exception("generation failed")
            self._put(_Failed(exc))
        finally:
            self.owner.ended(self, outcome, int(self.usage.get("completion_tokens", 0)))


# -- answers ----------------------------------------------------------------------

class _EventStream(StreamingResponse):
    """A streamed answer that cancels its generation however the response ends (a disconnect that
    interrupts a send leaves the body iterator suspended, not closed)."""

    def __init__(self, content: Any, generation: Generation, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.generation = generation

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.cancel()


def _event(data: Any) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def _events(generation: Generation, head: dict[str, Any], include_usage: bool,
                  prompt: int | None) -> AsyncIterator[bytes]:
    """Server-sent events as OpenAI sends them: chat.completion.chunk objects, then ``[DONE]``."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _event({**head, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for text in generation.pieces():
            yield chunk({"content": text})
    except Exception as exc:  # noqa: BLE001 -- logged by the generation thread; openai raises on the event
        yield _event({"error": {"code": "internal", "message": f"generation failed ({type(exc).__name__}: {exc})"}})
        return
    yield chunk({}, generation.finish)
    if include_usage:
        yield _event({**head, "object": "chat.completion.chunk", "choices": [], "usage": generation.usage_json(prompt)})
    yield b"data: [DONE]\n\n"


async def _collect(generation: Generation) -> str:
    return "".join([text async for text in generation.pieces()])


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (its body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
