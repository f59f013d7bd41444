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
