"""The HTTP service: ``create_app(predictor, settings=...)`` -> a FastAPI app; ``serve(run, ...)`` runs it.

Routes: ``POST /v1/predict``, ``GET /v1/model``, ``GET /v1/tools``, ``GET /metrics``,
``GET /health``, a page at ``/`` (with its files under ``/static``), and OpenAI's
``POST /v1/chat/completions`` and ``GET /v1/models`` (openai_chat.py) for runs whose task streams.

No module-level state: the predictor, the micro-batcher and the metrics belong to the app
(``app.state``). Requests are checked at the edge (body size, JSON, types, limits) and
every error is a JSON object ``{"error": {"code", "message", ["limit", "value"]}}``; a
client mistake is never a 500. The predictor runs in one worker thread behind the
batcher (see batcher.py), and the lifespan drains the batcher on shutdown, so requests
in flight when SIGTERM arrives still get their answers.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hmac
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from runassist.agent import DEFAULT_MAX_CHARS, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_INPUTS, InputError, Limits, \
    check_files, check_inputs, tool_definition
from runassist.data_profile import input_words
from runassist.errors import RunassistError
from runassist.serve.batcher import Batcher, BatcherClosed
from runassist.serve.common import CLIENT_CLOSED, ApiError, error_response, read_files, read_json
from runassist.serve.feedback_routes import FeedbackHook, feedback_routes
from runassist.serve.metrics import CONTENT_TYPE, MULTIPROC_DIR, Metrics
from runassist.serve.openai_chat import chat_routes, takes_conversation

STATIC = Path(__file__).resolve().parent / "static"
ENV_RUN = "RUNASSIST_SERVE_RUN"  # the run folder, for app_from_env (uvicorn --workers N)
ENV_OPTIONS = "RUNASSIST_SERVE_OPTIONS"  # JSON: backend, threads and ServeSettings fields except api_key
ENV_API_KEY = "RUNASSIST_API_KEY"
ROUTES = ("/", "/health", "/metrics", "/v1/chat/completions", "/v1/feedback", "/v1/model", "/v1/models", "/v1/predict",
          "/v1/tools")
ENV_FEEDBACK_OPTIONS = "RUNASSIST_SERVE_FEEDBACK"  # JSON: url, queue_below (its URL may hold a password: not in OPTIONS)
PUBLIC = ("/", "/health", "/favicon.ico")  # plus /static/*: the page holds no model data and asks for the key

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

log = logging.getLogger("runassist.serve")


@dataclass(frozen=True)
class ServeSettings:
    api_key: str | None = None  # required on every route but /health and the page (X-API-Key or Bearer)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others to join
    max_batch_size: int = 64  # inputs per predictor call (a request is never split)
    max_body_bytes: int = 1_000_000  # 413 above this
    max_media_bytes: int = 10_000_000  # the body limit instead, for a model that takes files (images, audio)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # per file of such a model (413 above)
    max_inputs: int = DEFAULT_MAX_INPUTS  # inputs per request (422 above)
    max_chars: int = DEFAULT_MAX_CHARS  # characters per input (422 above); per conversation for chat (400)
    max_new_tokens: int = 1024  # chat: the most tokens a reply may ask for (max_tokens; 400 above)
    max_generations: int = 2  # chat: generations running at once, per worker process (429 above)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_body_bytes", "max_media_bytes", "max_file_bytes", "max_inputs",
                     "max_chars", "max_new_tokens", "max_generations"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise RunassistError(f"{name} = {getattr(self, name)!r}: give a whole number of 1 or more")
        if not self.max_wait_ms >= 0:
            raise RunassistError(f"max_wait_ms = {self.max_wait_ms!r}: give 0 or more (milliseconds)")
        if self.api_key is not None and not self.api_key.strip():
            # Refused, never read as "no key": --api-key "$KEY" with KEY unset gives "", and serving
            # without authentication because of a typo is the one outcome its user did not ask for.
            raise RunassistError(f"the API key is empty (--api-key \"\" or an empty {ENV_API_KEY}; an unset "
                                 f"variable in --api-key \"$KEY\"?): give a key, or leave both unset to serve "
                                 "without one")
        if self.api_key is not None and not self.api_key.isascii():
            # HTTP headers arrive as latin-1: a non-ASCII key could never match.
            raise RunassistError("the API key must be ASCII")

    @property
    def limits(self) -> Limits:
        return Limits(max_inputs=self.max_inputs, max_chars=self.max_chars, max_file_bytes=self.max_file_bytes)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "api_key"}


# -- the app ----------------------------------------------------------------

def create_app(predictor: Any, *, settings: ServeSettings = ServeSettings(), feedback: Any = None,
               queue_below: float | None = None) -> FastAPI:
    """An ASGI app serving ``predictor`` (anything with ``examples``, ``predict_examples``, ``info``
    and ``task.to_json``, as ``runassist.predict.Predictor`` has; a serve.live.LivePredictor follows a
    registry alias). ``feedback``: a feedback.FeedbackStore, which gives every prediction an id and
    opens POST /v1/feedback; inputs with ``task.confidence`` below ``queue_below`` are queued for labelling."""
    info = predictor.info()
    hook = FeedbackHook(feedback, predictor, queue_below=queue_below) if feedback is not None else None
    metrics = Metrics(queued_items=lambda: batcher.queued_items, guard=getattr(predictor, "guard", None))

    def answer(examples: list[Any]) -> list[Any]:
        """(JSON prediction, confidence) per example, counted for the drift metrics."""
        current = getattr(predictor, "current", predictor)  # one model for the whole batch, even mid-swap
        task = current.task
        answers = [(task.to_json(ex, p), task.confidence(p)) for ex, p in zip(examples, current.predict_examples(examples))]
        metrics.observe_predictions([input_words(ex) for ex in examples], [task.json_labels(a) for a, _ in answers],
                                    [c for _, c in answers])
        return answers

    metrics.set_reference(_profile(predictor), info.get("labels"))
    batcher = Batcher(answer, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                      on_batch=metrics.observe_batch)
    chat, generations = chat_routes(predictor, settings, metrics, info["run"])
    streams = bool(getattr(getattr(predictor.task, "capabilities", None), "streams", False))
    conversation = streams and takes_conversation(predictor.task, settings.max_chars)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        following = callable(getattr(type(predictor), "start", None))  # a LivePredictor: follow the registry
        if following:
            predictor.start()
        try:
            yield
        finally:
            await batcher.aclose()  # answers every request still queued, then stops the worker thread
            await asyncio.to_thread(generations.close)  # ends generations still running, within a token
            if following:
                await asyncio.to_thread(predictor.stop)

    app = FastAPI(title="runassist", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.predictor, app.state.settings = predictor, settings
    app.state.batcher, app.state.metrics = batcher, metrics

    # -- errors: always JSON, always counted --------------------------------
    def fail(status: int, code: str, message: str, **kw: Any) -> JSONResponse:
        metrics.error(code)
        return error_response(status, code, message, **kw)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return fail(exc.status, exc.code, exc.message, limit=exc.limit, value=exc.value, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no route {request.method} {request.url.path}; routes: {', '.join(ROUTES)}" \
            if exc.status_code in (404, 405) else str(exc.detail)
        return fail(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return fail(422, "invalid_input", "; ".join(str(e.get("msg")) for e in exc.errors()))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return fail(500, "internal", f"internal error ({type(exc).__name__}); the server log has the details")

    # -- auth and metrics: one ASGI layer around every request -----------------
    app.add_middleware(_Edge, settings=settings, metrics=metrics, fail=fail)

    # -- routes -------------------------------------------------------------
    @app.get("/health")
    async def health() -> JSONResponse:
        if batcher.closing:  # tell load balancers to stop sending work here
            return JSONResponse({"status": "shutting_down", "auth_required": settings.api_key is not None},
                                status_code=503)
        return JSONResponse({"status": "ok", "auth_required": settings.api_key is not None})

    @app.get("/v1/model")
    async def model() -> JSONResponse:
        # streams: the page offers its chat box (/v1/chat/completions); conversation: it sends the history
        # Asked each time: a service following the registry may have swapped its model since.
        return JSONResponse({**predictor.info(), "limits": settings.public(), "tool": task_tool()["function"]["name"],
                             "streams": streams, "conversation": conversation, "feedback": hook is not None})

    def task_tool() -> dict[str, Any]:
        return tool_definition(predictor, limits=settings.limits)

    @app.get("/v1/tools")
    async def tools() -> JSONResponse:
        return JSONResponse(task_tool())

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    media = getattr(predictor.task, "media", None)
    body_limit = settings.max_media_bytes if media else settings.max_body_bytes
    limit_name = "max_media_bytes" if media else "max_body_bytes"

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
        if multipart and not media:
            raise ApiError(415, "unsupported_media_type", f"a {predictor.task.name} model takes a JSON body "
                                                          '{"inputs": [...]}, not file uploads')
        try:
            if multipart:
                files = await read_files(request, body_limit, settings.max_inputs)
                # what the feedback store keeps of an upload: the same object a JSON client sends
                data = {"inputs": [{"base64": base64.b64encode(b).decode("ascii"), "name": n} for b, n in files]} \
                    if hook is not None else {}
                # Decoding an image takes milliseconds to a second: off the event loop.
                examples = await asyncio.to_thread(check_files, files, predictor, limits=settings.limits)
            else:
                data = await read_json(request, body_limit, limit_name)
                if media:
                    examples = await asyncio.to_thread(check_inputs, data, predictor, limits=settings.limits)
                else:
                    examples = check_inputs(data, predictor, limits=settings.limits)
        except InputError as exc:
            status = 413 if exc.code in ("file_too_large", "media_too_large") else 422
            raise ApiError(status, exc.code, exc.message, limit=exc.limit, value=exc.value) from None
        asyncio.get_running_loop().call_soon(metrics.count_queue)  # runs once submit() below has queued them
        try:
            predictions = await batcher.submit(examples)
        except BatcherClosed:
            raise ApiError(503, "shutting_down", "the server is shutting down; retry on another instance") from None
        except Exception as exc:  # the model failed on this request: logged here, answered as JSON
            log.exception("prediction failed")
            raise ApiError(500, "internal", f"prediction failed ({type(exc).__name__}: {exc})") from None
        if hook is not None:
            return JSONResponse({"predictions": await hook.stamp(data["inputs"], predictions)})
        return JSONResponse({"predictions": [p for p, _ in predictions]})

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.include_router(chat)
    app.include_router(feedback_routes(hook, settings.max_body_bytes))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _profile(predictor: Any) -> dict[str, Any] | None:
    """The run's reference profile (RUN/model/profile.json), if it has one."""
    run = getattr(predictor, "run", None)
    path = Path(run) / "model" / "profile.json" if run is not None else None
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.exists() else None
    except (OSError, ValueError):
        return None


class _Edge:
    """Pure ASGI middleware: the API key check (every route but /health and the page) and
    the request count / latency metrics, labelled by route (never by raw path: bounded)."""

    def __init__(self, app, *, settings: ServeSettings, metrics: Metrics, fail):
        self.app, self.settings, self.metrics, self.fail = app, settings, metrics, fail

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in ROUTES else "/static" if path.startswith("/static/") else "other"
        status: int | None = None  # the response's, once it starts; none started counts as 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        predicting = route == "/v1/predict"
        if predicting:
            self.metrics.in_flight.inc()
        try:
            if self._authorised(scope, path):
                await self.app(scope, receive, send_status)
            else:
                response = self.fail(401, "unauthorized", "missing or wrong API key: send it as 'X-API-Key: KEY' "
                                     "or 'Authorization: Bearer KEY'", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_status)
        except ClientDisconnect:
            # The client closed the connection while its body was being read (Starlette raises this
            # from request.stream()). Nobody is left to answer and it is no fault of the server: caught
            # here, inside Starlette's ServerErrorMiddleware, it is neither a 500 in the metrics nor
            # two tracebacks (ours and uvicorn's "Exception in ASGI application") in the log.
            if status is None:
                status = CLIENT_CLOSED
            client = scope.get("client") or ("?", "?")
            log.warning("client %s:%s disconnected before its request %s %s was read; not answered",
                        client[0], client[1], scope.get("method", ""), path)
        finally:
            if predicting:
                self.metrics.in_flight.dec()
            method = scope.get("method", "")
            # A client chooses the method string: keep the label set bounded, or /metrics grows without end.
            method = method if method in _METHODS else "other"
            self.metrics.observe_request(route, method, 500 if status is None else status,
                                         time.perf_counter() - started)

    def _authorised(self, scope, path: str) -> bool:
        key = self.settings.api_key
        if key is None or path in PUBLIC or path.startswith("/static/"):
            return True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-api-key")
        if given is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        return given is not None and hmac.compare_digest(given.encode(), key.encode())


# -- running it ---------------------------------------------------------------

def load_predictor(run: str | Path, *, backend: str = "torch", threads: int = 1, poll_s: float = 1.0) -> Any:
    """A run folder -> its Predictor; ``registry:NAME@ALIAS`` -> a LivePredictor that follows the alias
    (the registry folder: RUNASSIST_REGISTRY or ./registry)."""
    from runassist.predict import Predictor
    from runassist.registry import Registry, is_reference

    if is_reference(str(run)):
        from runassist.serve.live import LivePredictor

        return LivePredictor(str(run), Registry(), lambda path: Predictor.from_run(path, backend=backend, threads=threads),
                             poll_s=poll_s)
    return Predictor.from_run(run, backend=backend, threads=threads)


def feedback_store(run: str | Path, feedback: str | None) -> Any:
    """The store a service writes to: ``feedback`` (a SQLAlchemy URL or a SQLite path; "none": off), by
    default the registry's SQLite file when serving a registry reference, else none."""
    from runassist.registry import default_root, is_reference

    if feedback is None and is_reference(str(run)):
        from runassist.feedback import default_url

        feedback = default_url(default_root())
    if feedback is None or feedback == "none":
        return None
    from runassist.feedback import FeedbackStore

    return FeedbackStore(feedback)


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers (``runassist.serve.app:app_from_env``, factory=True): each worker
    process loads the run named by RUNASSIST_SERVE_RUN with RUNASSIST_SERVE_OPTIONS."""
    run = os.environ.get(ENV_RUN)
    if not run:
        raise RunassistError(f"{ENV_RUN} is not set: it names the run folder to serve")
    options = json.loads(os.environ.get(ENV_OPTIONS) or "{}")
    backend, threads = options.pop("backend", "torch"), options.pop("threads", 1)
    known = {f.name for f in fields(ServeSettings)} - {"api_key"}
    unknown = set(options) - known
    if unknown:
        raise RunassistError(f"{ENV_OPTIONS}: unknown key(s) {', '.join(sorted(unknown))}; known: "
                             f"backend, threads, {', '.join(sorted(known))}")
    settings = ServeSettings(api_key=os.environ.get(ENV_API_KEY), **options)  # unset: no key; empty: refused
    fb = json.loads(os.environ.get(ENV_FEEDBACK_OPTIONS) or "{}")
    app = create_app(load_predictor(run, backend=backend, threads=threads), settings=settings,
                     feedback=feedback_store(run, fb.get("url")), queue_below=fb.get("queue_below"))
    _freeze_heap()
    return app


def _freeze_heap() -> None:
    """Exempt what is loaded at start (torch, transformers, the model: millions of objects) from the
    garbage collector's full passes; without this, one pass under load stalled every request in
    flight for ~0.4 s (the p99 of bench/serve.py at 32 clients)."""
    gc.collect()
    gc.freeze()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for such sockets; without
    # it a response written in two parts (headers, body) waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RunassistError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host")
    return sock


@contextmanager
def _exit_quietly_after_shutdown():
    """uvicorn shuts down gracefully on SIGTERM/SIGINT, restores the handlers it found, then raises
    the signal again; with the default handlers the process would die by that signal (exit -15)
    or raise KeyboardInterrupt after a clean shutdown. No-op handlers while serving make a
    finished graceful shutdown exit 0 (in the main thread only: signals live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = (signal.SIGINT, signal.SIGTERM)
    saved = {sig: signal.signal(sig, lambda *_: None) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def serve(run: str | Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, backend: str = "torch",
          api_key: str | None = None, max_wait_ms: float = 5.0, threads: int = 1, max_generations: int = 2,
          max_new_tokens: int = 1024, settings: ServeSettings | None = None, log_level: str = "info",
          feedback: str | None = None, queue_below: float | None = None) -> None:
    """``runassist serve RUN``: load the run (a RunassistError if its folder is incomplete), then serve
    until SIGINT/SIGTERM, finishing the requests in flight. One torch thread per worker process:
    scale with --workers."""
    import uvicorn

    from runassist.predict import BACKENDS
    from runassist.registry import Registry, is_reference
    from runassist.runs import require

    settings = settings or ServeSettings(api_key=api_key, max_wait_ms=max_wait_ms, max_generations=max_generations,
                                         max_new_tokens=max_new_tokens)  # an empty key is refused there
    if workers < 1:
        raise RunassistError(f"--workers {workers}: give 1 or more")
    if settings.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {host} exposes the model to the network without an API key "
              f"(--api-key or {ENV_API_KEY})", file=sys.stderr)
    common = dict(log_level=log_level, timeout_graceful_shutdown=30, lifespan="on")
    if workers == 1:
        predictor = load_predictor(run, backend=backend, threads=threads)
        app = create_app(predictor, settings=settings, feedback=feedback_store(run, feedback), queue_below=queue_below)
        _freeze_heap()
        sock = _bind(host, port)
        with _exit_quietly_after_shutdown():
            uvicorn.Server(uvicorn.Config(app, host=host, port=port, **common)).run(sockets=[sock])
        return
    # Several processes: uvicorn imports the app in each worker, so it gets an import string and
    # the settings travel in the environment. Check the run here so a bad folder fails once, at start.
    if is_reference(str(run)):
        Registry().resolve(str(run))  # an unknown name or alias fails once, here
        os.environ[ENV_RUN] = str(run)
        os.environ.setdefault("RUNASSIST_REGISTRY", str(Registry().root.resolve()))
    else:
        require(Path(run), "config.yaml", "model/task.json")
        os.environ[ENV_RUN] = str(Path(run).resolve())
    if backend not in BACKENDS:
        raise RunassistError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    feedback_store(run, feedback)  # create and migrate it once, before the workers race to
    os.environ[ENV_FEEDBACK_OPTIONS] = json.dumps({"url": feedback, "queue_below": queue_below})
    os.environ[ENV_OPTIONS] = json.dumps({"backend": backend, "threads": threads, **settings.public()})
    if settings.api_key is not None:
        os.environ[ENV_API_KEY] = settings.api_key
    else:
        os.environ.pop(ENV_API_KEY, None)
    # What uvicorn.run(..., workers=N) does, with our own listening socket (see _bind: TCP_NODELAY).
    from uvicorn.supervisors import Multiprocess

    sock = _bind(host, port)
    sock.set_inheritable(True)
    config = uvicorn.Config("runassist.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            **common)
    print(f"serving {Path(run).name} on http://{host}:{port} with {workers} worker processes", file=sys.stderr)
    # /metrics adds up the workers' numbers from files in a folder of this server's own (mode 0700), named
    # in the environment before the workers start: they import prometheus_client with it set (see metrics.py).
    inherited = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = metrics_dir = tempfile.mkdtemp(prefix="runassist-metrics-")
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        if inherited is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = inherited
        shutil.rmtree(metrics_dir, ignore_errors=True)
