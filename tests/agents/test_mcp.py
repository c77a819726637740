"""`fleet mcp` started as a real stdio server and spoken to with the MCP SDK's own client."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from tests.agents.helpers import free_port
from tests.conftest import Children

TOOLS = {"guard", "check", "claim", "release", "status", "estimate", "health"}


def _params(home: Path) -> StdioServerParameters:
    env = {"FLEET_WATCH_HOME": str(home), "PATH": os.environ.get("PATH", ""), "HOME": str(home)}
    return StdioServerParameters(command=sys.executable, args=["-m", "fleet_watch", "mcp"], env=env,
                                 cwd=str(Path(__file__).parents[2]))


def _session(home: Path, calls: list[tuple[str, dict[str, Any]]]) -> tuple[Any, list[Any]]:
    """Start the server, list its tools, make ``calls`` in order; return the tool list and the results."""
    out: dict[str, Any] = {}

    async def main() -> None:
        with anyio.fail_after(120):
            async with Client(_params(home)) as client:
                out["tools"] = (await client.list_tools()).tools
                out["results"] = [await client.call_tool(name, args) for name, args in calls]

    anyio.run(main)
    return out["tools"], out["results"]


def _doc(result: Any) -> Any:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def test_tools_and_guard_answer_like_the_cli(fleet, fleet_home: Path, children: Children) -> None:
    server = children.listener(0)
    held = server.bound_ports[0]  # type: ignore[attr-defined]
    assert fleet("register", "--pid", str(server.pid), "--name", "vLLM", "--workstream", "r", "--port",
                 str(held)).returncode == 0
    free = free_port()
    tools, results = _session(fleet_home, [
        ("guard", {"port": held}), ("guard", {"port": free, "model": "qwen2.5-7B-Q4_K_M", "ctx": 4096}),
        ("check", {"port": held}), ("estimate", {"model": "qwen2.5-7B-Q4_K_M", "ctx": 8192}), ("status", {}),
        ("release", {"pid": 999_999}), ("guard", {"port": 70000}), ("estimate", {"model": "no-such-model-xyz"}),
    ])
    assert {t.name for t in tools} == TOOLS
    guard_tool = next(t for t in tools if t.name == "guard")
    assert guard_tool.input_schema["properties"]["port"]["anyOf"][0] == {"type": "integer", "minimum": 1,
                                                                        "maximum": 65535}

    denied, allowed, check, estimate, status, missing, invalid, unknown = results
    cli = fleet("guard", "--port", str(held), "--json")
    assert cli.returncode == 1
    doc = _doc(denied)
    assert doc["allowed"] is False
    assert doc["checks"] == cli.json()["checks"]
    assert doc["checks"]["port"]["holder"]["pid"] == server.pid
    assert set(doc) == set(cli.json())

    doc = _doc(allowed)
    cli_doc = fleet("guard", "--port", str(free), "--model", "qwen2.5-7B-Q4_K_M", "--ctx", "4096", "--json").json()
    assert doc["checks"]["gpu"] == cli_doc["checks"]["gpu"]
    assert doc["request"] == cli_doc["request"]

    assert _doc(check) == {"allowed": False, "checks": cli.json()["checks"]}
    assert _doc(estimate) == fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--ctx", "8192", "--json").json()
    cli_status = fleet("status", "--json").json()
    assert set(_doc(status)) == set(cli_status)
    assert _doc(status)["processes"] == cli_status["processes"]

    assert missing.is_error
    error = json.loads(missing.content[0].text.split(": ", 1)[1])
    assert error == fleet("release", "--pid", "999999", "--json").json()
    assert error["exit_code"] == 3
    assert invalid.is_error  # typed input: 70000 is not a port, refused before the tool runs
    assert unknown.is_error
    cli_unknown = fleet("estimate", "--model", "no-such-model-xyz", "--json")
    assert cli_unknown.returncode == 3
    assert json.loads(unknown.content[0].text.split(": ", 1)[1]) == cli_unknown.json()


def test_release_tool_releases(fleet, fleet_home: Path, children: Children) -> None:
    sleeper = children.sleeper()
    port = free_port()
    assert fleet("register", "--pid", str(sleeper.pid), "--name", "job", "--workstream", "w", "--port",
                 str(port)).returncode == 0
    _, (released,) = _session(fleet_home, [("release", {"pid": sleeper.pid})])
    assert _doc(released) == {"released": [{"pid": sleeper.pid, "name": "job", "ports": [port], "repos": [],
                                            "gpu_mb": 0}]}
    assert fleet("status", "--json").json()["processes"] == []


def test_claim_tool_reserves_like_the_cli(fleet, fleet_home: Path) -> None:
    _, (made, refused) = _session(fleet_home, [("claim", {"port": "auto", "session_id": "mcp-a"}),
                                               ("claim", {"port": 1, "session_id": "mcp-b", "ttl_s": 0})])
    doc = _doc(made)
    assert doc["session_id"] == "mcp-a"
    port = doc["ports"][0]
    assert fleet("guard", "--port", str(port), "--session-id", "other").returncode == 1
    assert refused.is_error  # ttl_s below its minimum: refused by the typed input


def test_inputs_are_strict_and_repositories_absolute(fleet_home: Path) -> None:
    """JSON's ``true`` is not port 1, and a relative repository would be resolved against this server's own
    working directory, not the agent's: both are refused by the typed inputs."""
    _, (as_bool, relative, fine) = _session(fleet_home, [("guard", {"port": True}), ("guard", {"repo": "src"}),
                                                         ("guard", {"port": free_port()})])
    assert as_bool.is_error
    assert relative.is_error
    assert _doc(fine)["allowed"] is True
