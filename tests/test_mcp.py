"""`runassist mcp RUN` as an MCP client sees it: one tool, the same as GET /v1/tools, answering like the predictor."""

from __future__ import annotations

import asyncio
import json

import pytest

from serve_fixtures import RUNASSIST, subprocess_env, tiny_run  # noqa: F401  (tiny_run is a fixture)

pytestmark = pytest.mark.slow


def test_mcp_tool_lists_and_answers(tiny_run, tmp_path):  # noqa: F811
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from runassist.agent import tool_definition
    from runassist.predict import Predictor

    predictor = Predictor.from_run(tiny_run.run)
    expected_tool = tool_definition(predictor)["function"]
    inputs = [tiny_run.tagged[0], ["mary", "went", "to", "paris"]]
    expected = json.loads(json.dumps(predictor.predict(inputs)))
    env = {k: v for k, v in subprocess_env().items() if k.isupper()}
    params = StdioServerParameters(command=RUNASSIST, args=["mcp", str(tiny_run.run)], env=env)
    errlog = tmp_path / "mcp.stderr"

    async def main():
        with open(errlog, "w") as err:
            async with stdio_client(params, errlog=err) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = (await session.list_tools()).tools
                    good = await session.call_tool(expected_tool["name"], {"inputs": inputs})
                    empty = await session.call_tool(expected_tool["name"], {"inputs": []})
                    wrong = await session.call_tool(expected_tool["name"], {"inputs": [3]})
                    unknown = await session.call_tool("nope", {"inputs": ["x"]})
        return tools, good, empty, wrong, unknown

    tools, good, empty, wrong, unknown = asyncio.run(asyncio.wait_for(main(), timeout=120))

    [tool] = tools  # the same name, description and schema as GET /v1/tools
    assert tool.name == expected_tool["name"] == "extract_entities"
    assert tool.description == expected_tool["description"]
    assert tool.input_schema == expected_tool["parameters"]

    assert not good.is_error
    assert good.structured_content == {"predictions": expected}
    assert json.loads(good.content[0].text) == {"predictions": expected}
    assert good.structured_content["predictions"][0]["entities"]  # the tagged sentence has entities
    assert all({"label", "text", "start", "end", "score"} <= set(e) for e in expected[0]["entities"])

    for result, needle in ((empty, "empty"), (wrong, "inputs[0]"), (unknown, "unknown tool")):
        assert result.is_error and needle in result.content[0].text
    assert "Traceback" not in errlog.read_text()


def test_mcp_refuses_an_incomplete_run_before_serving(tmp_path):
    from runassist.agent import serve_mcp
    from runassist.errors import RunassistError

    with pytest.raises(RunassistError, match="no such run folder"):
        serve_mcp(tmp_path / "nope")


def test_mcp_answers_lines_it_cannot_read(tiny_run, tmp_path):  # noqa: F811
    """Raw lines on stdin, as a client with a bug (or a lone surrogate in its text) sends them: each gets a JSON-RPC
    error where the protocol allows one, and a line on stderr; the server never leaves a request unanswered."""
    import queue
    import subprocess
    import threading

    errlog = tmp_path / "mcp.stderr"
    with open(errlog, "w") as err:
        proc = subprocess.Popen([RUNASSIST, "mcp", str(tiny_run.run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, env=subprocess_env(), text=True, encoding="utf-8")
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def send(line: str) -> None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def reply(timeout: float = 30) -> dict:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no reply within {timeout} s; stderr:\n{errlog.read_text()[-3000:]}")
        return json.loads(line)  # stdout carries protocol messages only

    call = '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"extract_entities","arguments":%s}}'
    try:
        send("this is not JSON")  # before the handshake, too
        send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                         "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "raw", "version": "0"}}}))
        answer = reply(timeout=120)  # the model loads first
        assert answer["id"] is None and answer["error"]["code"] == -32700, answer
        assert answer["error"]["message"].startswith("Parse error"), answer
        assert reply()["result"]["serverInfo"]["name"] == "runassist"
        send('{"jsonrpc":"2.0","method":"notifications/initialized"}')

        send(call % (2, '{"inputs": ["john \\ud800 went"]}'))  # valid JSON; not valid Unicode
        answer = reply()
        assert answer["id"] == 2 and answer["error"]["code"] == -32602, answer
        assert "params.arguments.inputs[0]" in answer["error"]["message"], answer
        send('{"jsonrpc":"2.0","id":3,"method":"tools/call",')  # cut short
        answer = reply()
        assert answer["id"] is None and answer["error"]["code"] == -32700, answer
        send('{"jsonrpc":"2.0","id":4,"method":7}')  # JSON, but not a JSON-RPC message
        answer = reply()
        assert answer["id"] == 4 and answer["error"]["code"] == -32600, answer
        assert "method: Input should be a valid string" in answer["error"]["message"], answer
        send('{"jsonrpc":"2.0","method":"notifications/x","params":{"a":"\\udc00"}}')  # a notification: no reply
        send(call % (5, json.dumps({"inputs": [tiny_run.tagged[0]]})))  # and it goes on answering
        answer = reply()
        assert answer["id"] == 5 and answer["result"]["structuredContent"]["predictions"][0]["entities"], answer
    finally:
        proc.stdin.close()
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    assert lines.empty()
    log = errlog.read_text()
    assert "Traceback" not in log, log
    for needle in ("not JSON (Invalid JSON: expected ident at line 1 column 2): 'this is not JSON'; answered -32700",
                   "params.arguments.inputs[0] holds a lone surrogate", "answered -32602 (id 2)",
                   "not a JSON-RPC message (method: Input should be a valid string)",
                   "a notification that is not valid JSON-RPC was dropped", "notifications/x"):
        assert needle in log, (needle, log)



@pytest.mark.parametrize("line, answer", [
    ('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{"\\ud800":1}}}',
     (7, -32602, "a key of params.arguments")),
    ('{"jsonrpc":"2.0","id":7,"method":"x\\ud800"}', (7, -32600, "method is not valid Unicode")),
    ('{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', (None, -32600, "id is not valid Unicode")),
    ('{"jsonrpc":"2.0","id":7,"result":{"a":"\\ud800"}}', None),  # a response: never answered
    ('{"jsonrpc":"2.0","method":"ping","params":{"a":"\\ud800"}}', None),  # a notification: never answered
    ('{"jsonrpc":"2.0","id":7,"result":3}', None),
    ("[1, 2]", (None, -32600, "not a JSON object")),
    ("", (None, -32700, "Parse error")),
])
def test_what_the_transport_cannot_read_is_answered_where_the_protocol_allows(line, answer):
    import mcp_types as types

    from runassist.mcp_stdio import _unreadable

    with pytest.raises(Exception) as caught:  # what mcp's stdio_server puts on the read stream for the line
        types.jsonrpc_message_adapter.validate_json(line + "\n", by_name=False)
    reason, reply = _unreadable(caught.value)
    assert reason
    if answer is None:
        assert reply is None
    else:
        assert (reply.id, reply.error.code) == answer[:2] and answer[2] in reply.error.message, reply
        json.loads(reply.model_dump_json(by_alias=True, exclude_unset=True))  # writable as it is sent
