"""The model as a tool for LLM agents: one definition, shared by the HTTP service and MCP.

``tool_definition(predictor)`` builds the OpenAI-style function definition that
``GET /v1/tools`` returns; ``runassist mcp RUN`` exposes the same name, description and
input schema over MCP (stdio). The tool's arguments are exactly the body of
``POST /v1/predict`` (``{"inputs": [...]}``), and ``check_inputs`` enforces the same
limits on both, so an agent gets the same answer whichever way it calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, Sequence

# The tool's contract: the service's defaults too (the server can change them).
DEFAULT_MAX_INPUTS = 64  # inputs per call
DEFAULT_MAX_CHARS = 10_000  # characters per input (a text, a word list's words, or text + text_pair)

log = logging.getLogger("runassist.mcp")

class InputError(ValueError):
    """An input the tool refuses; ``limit``/``value`` name the limit broken, if one was."""

    def __init__(self, message: str, *, code: str = "invalid_input", limit: str | None = None,
                 value: int | None = None):
        super().__init__(message)
        self.message, self.code, self.limit, self.value = message, code, limit, value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.limit is not None:
            out.update(limit=self.limit, value=self.value)
        return out


@dataclass(frozen=True)
class Limits:
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_chars: int = DEFAULT_MAX_CHARS


# -- the definition ---------------------------------------------------------

def tool_definition(predictor: Any, *, limits: Limits = Limits()) -> dict[str, Any]:
    """The OpenAI-style function definition of the model (``GET /v1/tools``, and MCP's tool); the
    task words the description and the schema of one input."""
    info = predictor.info()
    task = predictor.task
    about = f"(fine-tuned from {info.get('base_model')}, run {info.get('run')})"
    parameters = {
        "type": "object",
        "properties": {"inputs": {"type": "array", "minItems": 1, "maxItems": limits.max_inputs,
                                  "items": task.input_schema(limits.max_chars),
                                  "description": f"1 to {limits.max_inputs} inputs, each at most "
                                                 f"{limits.max_chars} characters"}},
        "required": ["inputs"],
        "additionalProperties": False,
    }
    return {"type": "function",
            "function": {"name": task.tool_name, "description": task.tool_description(info["labels"], about),
                         "parameters": parameters}}


# -- checking a call --------------------------------------------------------

def _chars(item: Any) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, (list, tuple)):  # a word counts at least 1: a list of empty strings is not free
        return sum(max(len(w), 1) for w in item if isinstance(w, str))
    if isinstance(item, dict):
        return sum(len(v) for v in item.values() if isinstance(v, str))
    return 0


def check_inputs(arguments: Any, predictor: Any, *, limits: Limits = Limits()) -> list[Any]:
    """The tool's arguments (the request body) -> the predictor's examples, or InputError."""
    if not isinstance(arguments, dict):
        raise InputError('the body must be a JSON object: {"inputs": [...]}')
    unknown = sorted(set(arguments) - {"inputs"})
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(map(repr, unknown))}; the only key is 'inputs'")
    if "inputs" not in arguments:
        raise InputError("missing 'inputs': a list of texts")
    inputs = arguments["inputs"]
    if not isinstance(inputs, list):
        raise InputError(f"'inputs' must be a list, not {_json_type(inputs)}")
    if not inputs:
        raise InputError("'inputs' is empty: give at least one input")
    if len(inputs) > limits.max_inputs:
        raise InputError(f"{len(inputs)} inputs; at most max_inputs={limits.max_inputs} per request",
                         code="too_many_inputs", limit="max_inputs", value=limits.max_inputs)
    for i, item in enumerate(inputs):
        if not _valid_unicode(item):
            raise InputError(f"inputs[{i}] is not valid Unicode (it holds a lone surrogate such as \\ud800)")
        if _chars(item) > limits.max_chars:
            raise InputError(f"inputs[{i}] has {_chars(item)} characters; at most max_chars={limits.max_chars}",
                             code="input_too_long", limit="max_chars", value=limits.max_chars)
    try:
        return predictor.examples(inputs)
    except ValueError as exc:  # "inputs[3]: each input must be a string or a list of strings"
        raise InputError(str(exc)) from None


def _valid_unicode(item: Any) -> bool:
    """JSON may carry lone surrogates (\\ud800) that no tokenizer accepts: a client error, not a 500."""
    parts = item if isinstance(item, list) else item.values() if isinstance(item, dict) else [item]
    try:
        for part in parts:
            if isinstance(part, str):
                part.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def predict_json(predictor: Any, examples: Sequence[Any]) -> list[dict[str, Any]]:
    """Examples -> JSON-ready predictions, in one predictor call."""
    return [predictor.task.to_json(ex, p) for ex, p in zip(examples, predictor.predict_examples(examples))]


# -- MCP over stdio ---------------------------------------------------------

@contextlib.contextmanager
def _stdout_to_stderr():
    """While loading the model, anything written to stdout (Python or C level) goes to stderr:
    in a stdio server stdout carries the protocol and nothing else."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def build_mcp_server(predictor: Any, *, limits: Limits = Limits()):
    """A low-level MCP server whose one tool has exactly ``tool_definition``'s name, description and schema
    (the decorator-based MCPServer would derive its own schema from a Python signature)."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server

    function = tool_definition(predictor, limits=limits)["function"]
    tool = types.Tool(name=function["name"], description=function["description"],
                      input_schema=function["parameters"])

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool])

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        def failure(message: str) -> types.CallToolResult:
            return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)

        if params.name != tool.name:
            return failure(f"unknown tool {params.name!r}; this server has {tool.name!r}")
        try:
            examples = check_inputs(dict(params.arguments or {}), predictor, limits=limits)
        except InputError as exc:
            return failure(json.dumps({"error": exc.to_json()}))
        # The model runs in a thread: the server keeps answering (pings, cancellations) meanwhile.
        predictions = await anyio.to_thread.run_sync(predict_json, predictor, examples)
        result = {"predictions": predictions}
        text = json.dumps(result, ensure_ascii=False)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=result)

    info = predictor.info()
    return Server("runassist", version=_version(), instructions=f"{info['task']} model from run {info['run']}",
                  on_list_tools=list_tools, on_call_tool=call_tool)


class _AnswerUnreadable:
    """The read side of MCP's stdio transport, answering the lines the transport could not read.

    mcp 2.x's ``stdio_server`` parses each stdin line with pydantic and, when that fails, puts the
    exception on the read stream in place of a message; ``Server.run``'s dispatcher then drops it with a
    debug-level log line (``JSONRPCDispatcher`` has an ``on_stream_exception`` hook, but ``Server.run``
    builds its dispatchers without one). pydantic's JSON parser also refuses a lone surrogate escape
    (``"\\ud800"``) as invalid JSON, so a request holding one was dropped as well, and its client
    waited forever. This wrapper sits between the transport and ``Server.run``: messages pass
    through untouched; each exception is taken off the stream, logged on stderr (``runassist.mcp``)
    and answered on the write stream with a JSON-RPC error (``_unreadable``), except where the
    protocol forbids an answer (a notification, a response). Stdout still carries only what the
    transport writes there: protocol messages.
    """

    def __init__(self, inner: Any, write_stream: Any):
        self._inner, self._write = inner, write_stream

    @property
    def last_context(self):  # the sender's contextvars, which the dispatcher reads off the stream
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item
            await self._answer(item)

    async def _answer(self, exc: Exception) -> None:
        import anyio
        from mcp.shared.message import SessionMessage

        try:
            reason, answer = _unreadable(exc)
        except Exception:  # a bug here must cost this line, not the connection
            log.exception("the MCP transport could not read a message (%r); it was not answered", exc)
            return
        log.warning("%s%s", reason, "" if answer is None else f"; answered {answer.error.code} (id {answer.id!r})")
        if answer is not None:
            try:
                await self._write.send(SessionMessage(answer))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):  # the connection is closing
                log.warning("the answer was not sent: the connection is closing")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _unreadable(exc: Exception):
    """What the stdio transport could not read -> (a line for the log, the JSON-RPC error to answer or None)."""
    import mcp_types as types
    from pydantic import ValidationError

    def error(request_id: Any, code: int, message: str) -> types.JSONRPCError:
        return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))

    if not isinstance(exc, ValidationError):  # not known to come from stdio_server: nothing to answer
        return f"the MCP transport failed to read a message ({type(exc).__name__}: {exc})", None
    problems = exc.errors()
    first = problems[0] if problems else {}
    unparsed = first.get("type") == "json_invalid" and isinstance(first.get("input"), str)
    if unparsed:  # pydantic's parser refused the line; its error holds the whole line
        line = first["input"]
        shown = repr(line.rstrip("\n")[:200])
        try:
            message = json.loads(line)  # Python's parser accepts lone surrogates: the one known difference
        except (ValueError, RecursionError):
            return (f"not JSON ({first.get('msg')}): {shown}",
                    error(None, types.PARSE_ERROR, f"Parse error: the line is not JSON ({first.get('msg')})"))
    else:  # JSON, but not a JSON-RPC message; the root object is the input of an error about the whole message
        message = next((p["input"] for p in problems if len(p["loc"]) == 1
                        or (p["type"] == "missing" and len(p["loc"]) == 2)), None)
        shown = repr(json.dumps(message, ensure_ascii=True)[:200]) if message is not None else "(unknown)"
    if not isinstance(message, dict):
        return (f"not a JSON-RPC message (not a JSON object): {shown}",
                error(None, types.INVALID_REQUEST, "Invalid Request: not a JSON object"))
    method = message.get("method")
    request_id = message.get("id")
    if not (isinstance(request_id, (str, int)) and not isinstance(request_id, bool) and _valid_unicode(request_id)):
        request_id = None
    if method is None and ("result" in message or "error" in message):  # a response: never answered
        return f"a response that is not valid JSON-RPC was dropped: {shown}", None
    if method is not None and "id" not in message:  # a notification: never answered
        return f"a notification that is not valid JSON-RPC was dropped: {shown}", None
    where = _lone_surrogate_at(message) if unparsed else None
    if where is not None and where.removeprefix("a key of ").partition(".")[0].partition("[")[0] == "params":
        return (f"request {request_id!r} ({method!r}): {where} holds a lone surrogate: {shown}",
                error(request_id, types.INVALID_PARAMS, f"Invalid params: {where} is not valid Unicode (it holds "
                                                        "a lone surrogate such as \\ud800)"))
    if where is not None:
        return (f"request {request_id!r}: {where} holds a lone surrogate: {shown}",
                error(request_id, types.INVALID_REQUEST, f"Invalid Request: {where} is not valid Unicode"))
    if unparsed:  # Python's parser took what pydantic's refused, for another reason
        return (f"not JSON ({first.get('msg')}): {shown}",
                error(request_id, types.PARSE_ERROR, f"Parse error: {first.get('msg')}"))
    # pydantic tried each kind of message; name what is wrong with the kind this one claims to be
    kind = "JSONRPCRequest" if method is not None else None
    named = [p for p in problems if kind is None or p["loc"][:1] == (kind,)] or problems
    what = "; ".join(dict.fromkeys(f"{'.'.join(map(str, p['loc'][1:])) or 'the message'}: {p['msg']}"
                                   for p in named))
    return (f"not a JSON-RPC message ({what}): {shown}",
            error(request_id, types.INVALID_REQUEST, f"Invalid Request: not a JSON-RPC message ({what})"))


def _lone_surrogate_at(value: Any) -> str | None:
    """Where in parsed JSON a string (or a key) is not valid Unicode, as ``params.arguments.inputs[0]``."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str) and not _valid_unicode(item):
            return path or "(the message)"
        if isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                if not _valid_unicode(key):
                    return f"a key of {path or 'the message'}"
                stack.append((f"{path}.{key}" if path else key, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runassist")
    except PackageNotFoundError:
        return "0"


def serve_mcp(run: str | Path, *, backend: str = "torch", threads: int = 1) -> None:
    """``runassist mcp RUN``: the model as an MCP tool over stdio, until stdin closes.

    An incomplete run folder raises RunassistError before anything is read from stdin.
    """
    import anyio
    from mcp.server.stdio import stdio_server

    from runassist.predict import Predictor

    with _stdout_to_stderr():
        predictor = Predictor.from_run(run, backend=backend, threads=threads)
        server = build_mcp_server(predictor)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            # Lines the transport cannot read are answered and logged, not dropped (see _AnswerUnreadable).
            await server.run(_AnswerUnreadable(read_stream, write_stream), write_stream,
                             server.create_initialization_options())

    anyio.run(main)
