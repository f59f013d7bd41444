"""What the service's routes share (app.py, openai_chat.py): the error every route raises, its JSON
(``{"error": {"code", "message", ["limit", "value"]}}``), and a request's JSON body read within a limit."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

# The status counted for a request whose client hung up before it was read (no answer is sent):
# nginx's "499 Client Closed Request", so a dashboard never shows it as the server's fault (500).
CLIENT_CLOSED = 499


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, limit: str | None = None, value: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.limit, self.value = status, code, message, limit, value
        self.headers = headers


def error_response(status: int, code: str, message: str, *, limit: str | None = None, value: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if limit is not None:
        error.update(limit=limit, value=value)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def read_json(request: Request, limit: int, limit_name: str = "max_body_bytes") -> Any:
    """The body as JSON: 413 above ``limit`` bytes (the setting ``limit_name``), 400 when it is not JSON."""
    body = await _read_body(request, limit, limit_name)
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, "bad_json", f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "bad_json", "the body's JSON is nested too deeply") from None


async def read_files(request: Request, limit: int, max_files: int) -> list[tuple[bytes, str]]:
    """A multipart/form-data body's ``file`` parts as (bytes, file name): 413 above ``limit`` bytes in all
    (read before parsing), 422 when it holds no file or does not parse."""
    from starlette.formparsers import MultiPartException

    body = await _read_body(request, limit, "max_media_bytes")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=max_files, max_fields=max_files)
    except MultiPartException as exc:
        raise ApiError(422, "invalid_input", f"the multipart body does not parse ({exc.message})") from None
    try:
        files = []
        for i, part in enumerate(form.getlist("file")):
            if isinstance(part, str):
                raise ApiError(422, "invalid_input", f"'file' part {i} is a text field, not a file upload")
            files.append((await part.read(), part.filename or f"file {i}"))
        if not files:
            raise ApiError(422, "invalid_input", "no 'file' parts: upload the files as -F file=@a.png")
        return files
    finally:
        await form.close()


async def _read_body(request: Request, limit: int, name: str = "max_body_bytes") -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body has {declared} bytes; at most {name}={limit}",
                           limit=name, value=limit)
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked bodies have no Content-Length: count as they come
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body is larger than {name}={limit}",
                           limit=name, value=limit)
        chunks.append(chunk)
    return b"".join(chunks)
