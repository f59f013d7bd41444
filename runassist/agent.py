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
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# The tool's contract: the service's defaults too (the server can change them).
DEFAULT_MAX_INPUTS = 64  # inputs per call
DEFAULT_MAX_CHARS = 10_000  # characters per input (a text, a word list's words, or text + text_pair)
DEFAULT_MAX_FILE_BYTES = 8_000_000  # bytes per file of a media task (an image, a recording), decoded


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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


# -- the definition ---------------------------------------------------------

def tool_definition(predictor: Any, *, limits: Limits = Limits()) -> dict[str, Any]:
    """The OpenAI-style function definition of the model (``GET /v1/tools``, and MCP's tool); the
    task words the description and the schema of one input."""
    info = predictor.info()
    task = predictor.task
    about = f"(fine-tuned from {info.get('base_model')}, run {info.get('run')})"
    each = (f"each a file of at most {limits.max_file_bytes} bytes" if getattr(task, "media", None)
            else f"each at most {limits.max_chars} characters")
    parameters = {
        "type": "object",
        "properties": {"inputs": {"type": "array", "minItems": 1, "maxItems": limits.max_inputs,
                                  "items": task.input_schema(limits.max_chars),
                                  "description": f"1 to {limits.max_inputs} inputs, {each}"}},
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
    if getattr(predictor.task, "media", None):
        return _media_inputs(inputs, predictor, limits)
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


def _media_inputs(inputs: list[Any], predictor: Any, limits: Limits) -> list[Any]:
    """A media task's inputs: files as ``{"base64": ..., "name": ...}``, each within max_file_bytes
    (checked on the base64 length before decoding), decoded by ``predictor.examples``."""
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("base64"), str):
            raise InputError(f'inputs[{i}]: a file input is an object {{"base64": "<the file in base64>", '
                             f'"name": "optional.png"}}, not {_json_type(item)}')
        size = len(item["base64"].partition(",")[2] if item["base64"].startswith("data:") else item["base64"]) * 3 // 4
        if size > limits.max_file_bytes:
            raise InputError(f"inputs[{i}] is a file of about {size} bytes; at most max_file_bytes="
                             f"{limits.max_file_bytes}", code="file_too_large", limit="max_file_bytes",
                             value=limits.max_file_bytes)
    return media_examples(predictor, lambda: predictor.examples(inputs))


def check_files(files: list[tuple[bytes, str]], predictor: Any, *, limits: Limits = Limits()) -> list[Any]:
    """Uploaded files (multipart/form-data parts: bytes and file name) -> the predictor's examples."""
    if not files:
        raise InputError("no files: send one or more 'file' parts")
    if len(files) > limits.max_inputs:
        raise InputError(f"{len(files)} files; at most max_inputs={limits.max_inputs} per request",
                         code="too_many_inputs", limit="max_inputs", value=limits.max_inputs)
    for i, (data, name) in enumerate(files):
        if len(data) > limits.max_file_bytes:
            raise InputError(f"file {i} ({name}) has {len(data)} bytes; at most max_file_bytes={limits.max_file_bytes}",
                             code="file_too_large", limit="max_file_bytes", value=limits.max_file_bytes)

    def decode() -> list[Any]:
        out = []
        for i, (data, name) in enumerate(files):
            try:
                out.append(predictor.task.media_example(data, name))
            except ValueError as exc:
                raise type(exc)(f"file {i}: {exc}") from None
        return out

    return media_examples(predictor, decode)


def media_examples(predictor: Any, decode: Any) -> list[Any]:
    """``decode()``'s examples; MediaTooLarge (too many pixels, too long a recording) becomes InputError
    ``media_too_large`` (the service answers 413), any other ValueError ``invalid_input`` (422)."""
    from runassist.errors import MediaTooLarge

    try:
        return decode()
    except MediaTooLarge as exc:
        raise InputError(str(exc), code="media_too_large") from None
    except ValueError as exc:
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

    from runassist.mcp_stdio import AnswerUnreadable
    from runassist.predict import Predictor

    with _stdout_to_stderr():
        predictor = Predictor.from_run(run, backend=backend, threads=threads)
        server = build_mcp_server(predictor)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            # Lines the transport cannot read are answered and logged, not dropped (see mcp_stdio.AnswerUnreadable).
            await server.run(AnswerUnreadable(read_stream, write_stream), write_stream,
                             server.create_initialization_options())

    anyio.run(main)
