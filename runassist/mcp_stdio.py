"""MCP over stdio: the read side of the transport, made to answer what it cannot read.

Kept apart from ``agent.py`` (the tool itself) because it works around one library's transport:
when mcp's ``stdio_server`` improves, this module is what goes.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Self

log = logging.getLogger("runassist.mcp")


def _encodes(value: Any) -> bool:
    """A string is valid Unicode (JSON may carry lone surrogates such as \\ud800)."""
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class AnswerUnreadable:
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
    if not (isinstance(request_id, (str, int)) and not isinstance(request_id, bool) and _encodes(request_id)):
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
        if isinstance(item, str) and not _encodes(item):
            return path or "(the message)"
        if isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                if not _encodes(key):
                    return f"a key of {path or 'the message'}"
                stack.append((f"{path}.{key}" if path else key, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
    return None
