"""`fleet hook claude|codex|gemini` as the agents run it: a real subprocess, real payloads on stdin, real listeners.

Each answer is checked against the agent's documented shape (tests/agents/helpers.py ``denial``): a deny that the
agent would not read as a deny lets the tool run, so the shape is the contract.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.agents.helpers import (
    bindable,
    claude_bash,
    claude_write,
    codex_patch,
    denial,
    dumps,
    free_port,
    gemini_write,
    shell_payload,
)
from tests.conftest import Children

AGENTS = ("claude", "codex", "gemini")


def hook(fleet: Any, agent: str, payload: Any) -> Any:
    return fleet("hook", agent, input=dumps(payload))


def register(fleet: Any, pid: int, *args: str) -> None:
    r = fleet("register", "--pid", str(pid), *args)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("agent", AGENTS)
def test_plain_commands_and_free_ports_are_allowed_silently(fleet, agent: str) -> None:
    for command in ("ls -la", "git status && pytest -q", f"uvicorn app:app --port {free_port()}"):
        r = hook(fleet, agent, shell_payload(agent, command))
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), command


@pytest.mark.parametrize("agent", AGENTS)
def test_held_port_denies_naming_holder_and_a_free_alternative(fleet, children: Children, agent: str) -> None:
    server = children.listener(0, argv=["vllm", "serve", "qwen"])
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    register(fleet, server.pid, "--name", "vLLM research", "--workstream", "research", "--port", str(port),
             "--session-id", "other-session")
    r = hook(fleet, agent, shell_payload(agent, f"vllm serve Qwen/Qwen2.5-0.5B --port {port} &"))
    assert r.returncode == 0, r.stderr
    reason = denial(agent, r.stdout)
    assert reason is not None, r.stdout
    assert f"port {port} claimed by PID {server.pid} (vLLM research)" in reason
    assert "session other-session" in reason
    assert "workstream research" in reason
    alternative = int(re.search(r"Free alternative: port (\d+) \(--port (\d+)\)", reason).group(1))  # type: ignore[union-attr]
    assert alternative != port
    assert bindable(alternative)


def test_every_port_form_is_checked(fleet, children: Children) -> None:
    server = children.listener(0)
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    forms = {f"PORT={port} npm run dev": "PORT=", f"python app.py -p {port}": "-p ",
             f"export PORT={port} && node server.js --port {port}": "--port ",
             f"bash -c 'OLLAMA_HOST=127.0.0.1:{port} ollama serve'": "OLLAMA_HOST=127.0.0.1:"}
    for command, advice in forms.items():
        reason = denial("claude", hook(fleet, "claude", claude_bash(command)).stdout)
        assert reason is not None, command
        assert f"in use by PID {server.pid}" in reason
        assert "not registered with Fleet Watch" in reason
        assert re.search(rf"Free alternative: port \d+ \({re.escape(advice)}\d+\)", reason), reason


def test_model_server_memory_is_checked_by_the_guard(fleet, children: Children) -> None:
    """65536 MB pool, 8192 reserve: a registered 56000 MB claim leaves 1344 MB, less than a 7B model needs."""
    holder = children.sleeper()
    register(fleet, holder.pid, "--name", "big-train", "--workstream", "exp", "--gpu", "56000")
    port = free_port()
    r = hook(fleet, "codex", shell_payload("codex", f"llama-server -m qwen2.5-7B-Q4_K_M -c 4096 --port {port}"))
    reason = denial("codex", r.stdout)
    assert reason is not None, r.stdout
    assert "GPU budget exceeded" in reason
    assert f"PID {holder.pid} (big-train, 56000MB" in reason
    guard = fleet("guard", "--framework", "llama_cpp", "--model", "qwen2.5-7B-Q4_K_M", "--ctx", "4096", "--json")
    assert guard.returncode == 1
    assert guard.json()["checks"]["gpu"]["allowed"] is False


def _repo(tmp_path: Path, name: str) -> Path:
    repo = tmp_path / name
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    return repo


def test_other_sessions_repo_denies_writes_own_session_may(fleet, children: Children, tmp_path: Path) -> None:
    repo = _repo(tmp_path, "webapp")
    holder = children.sleeper()
    register(fleet, holder.pid, "--name", "aider", "--workstream", "web", "--repo", str(repo),
             "--session-id", "other")
    target = str(repo / "src" / "new_dir" / "app.py")  # not there yet: the work tree is still found
    for tool in ("Write", "Edit", "MultiEdit"):
        reason = denial("claude", hook(fleet, "claude", claude_write(tool, target, session="mine")).stdout)
        assert reason is not None, tool
        assert f"locked by PID {holder.pid} (aider)" in reason
        assert "session other" in reason
        assert f"worktree add {repo}-mine" in reason
    assert hook(fleet, "claude", claude_write("Write", target, session="other")).stdout == ""
    elsewhere = _repo(tmp_path, "api")
    assert hook(fleet, "claude", claude_write("Write", str(elsewhere / "x.py"), session="mine")).stdout == ""

    patch = codex_patch(["src/a.py", "README.md"], session="mine", cwd=str(repo))
    assert "locked by PID" in (denial("codex", hook(fleet, "codex", patch).stdout) or "")
    gem = gemini_write(str(repo / "src" / "a.py"), session="mine")
    assert "locked by PID" in (denial("gemini", hook(fleet, "gemini", gem).stdout) or "")


def test_a_write_through_a_symlink_is_checked_where_it_lands(fleet, children: Children, tmp_path: Path) -> None:
    repo = _repo(tmp_path, "locked")
    (repo / "sub").mkdir()
    holder = children.sleeper()
    register(fleet, holder.pid, "--name", "aider", "--workstream", "web", "--repo", str(repo),
             "--session-id", "other")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file-link").symlink_to(repo / "sub" / "f.txt")  # the target need not exist yet
    (outside / "dir-link").symlink_to(repo / "sub")
    for target in (outside / "file-link", f"{outside}/dir-link/../f.txt", outside / "dir-link" / "g.txt"):
        reason = denial("claude", hook(fleet, "claude", claude_write("Write", str(target), session="mine")).stdout)
        assert reason is not None, target
        assert f"locked by PID {holder.pid}" in reason, target
    assert hook(fleet, "claude", claude_write("Write", str(outside / "plain.txt"), session="mine")).stdout == ""


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("payload", ["", "not json", "[1, 2]", '{"hook_event_name": "Stop", "session_id": "s"}',
                                     '{"session_id": "s", "tool_name": "Bash"}'])
def test_unreadable_input_blocks_with_exit_2(fleet, agent: str, payload: str) -> None:
    r = hook(fleet, agent, payload)
    assert (r.returncode, r.stdout) == (2, ""), r
    assert "Fleet Watch" in r.stderr
    assert "Failing closed" in r.stderr


@pytest.mark.parametrize("agent", AGENTS)
def test_malformed_tool_call_is_denied_in_the_agents_format(fleet, agent: str) -> None:
    payload = shell_payload(agent, "ls")
    payload["tool_input"] = {"command": 42}
    reason = denial(agent, hook(fleet, agent, payload).stdout)
    assert reason is not None
    assert "malformed" in reason
    assert "Failing closed" in reason
    payload["tool_input"] = None
    assert denial(agent, hook(fleet, agent, payload).stdout) is not None
    payload = shell_payload(agent, "ls")
    payload["session_id"] = ""
    assert denial(agent, hook(fleet, agent, payload).stdout) is not None
    bare = {"hook_event_name": payload["hook_event_name"]}
    assert denial(agent, hook(fleet, agent, bare).stdout) is not None


def test_an_agent_is_held_to_its_own_event_names(fleet) -> None:
    r = hook(fleet, "gemini", claude_bash("ls"))  # PreToolUse is Claude's and Codex's word, not Gemini's
    assert r.returncode == 2
    assert "BeforeTool" in r.stderr


def test_internal_errors_fail_closed_unless_warn_only(fleet, fleet_home: Path) -> None:
    port = free_port()
    command = claude_bash(f"python -m http.server {port}")
    assert hook(fleet, "claude", command).stdout == ""
    (fleet_home / "registry.db").write_bytes(b"this is not a database" * 100)
    for name in ("registry.db-wal", "registry.db-shm"):
        (fleet_home / name).unlink(missing_ok=True)
    reason = denial("claude", hook(fleet, "claude", command).stdout)
    assert reason is not None
    assert "corrupt" in reason
    assert "Failing closed" in reason

    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "hooks": {"on_error": "warn"}}))
    r = hook(fleet, "claude", command)
    assert r.returncode == 0
    assert set(json.loads(r.stdout)) == {"systemMessage"}
    assert "corrupt" in json.loads(r.stdout)["systemMessage"]
    assert set(json.loads(hook(fleet, "claude", "not json").stdout)) == {"systemMessage"}

    (fleet_home / "config.json").write_text(json.dumps({**config, "hooks": {"on_error": 1}}))
    reason = denial("gemini", hook(fleet, "gemini", shell_payload("gemini", f"uvicorn a:b --port {port}")).stdout)
    assert reason is not None
    assert reason.count("'hooks.on_error'") == 1  # said once, though both the check and the policy meet it


@pytest.mark.parametrize("agent", AGENTS)
def test_session_events_are_accepted(fleet, agent: str) -> None:
    start = {"session_id": "s-1", "transcript_path": "/tmp/t", "cwd": "/tmp", "hook_event_name": "SessionStart",
             "source": "startup"}
    end = {"session_id": "s-1", "transcript_path": "/tmp/t", "cwd": "/tmp", "hook_event_name": "SessionEnd",
           "reason": "exit"}
    for payload in (start, end):
        r = hook(fleet, agent, payload)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = hook(fleet, agent, {**start, "session_id": 7})
    assert r.returncode == 0
    assert "session_id" in json.loads(r.stdout)["systemMessage"]


def _hook_from_another_agent(home: Path, agent: str, payload: Any) -> str:
    """Run the hook as a child of another process (not a shell): that process is the calling agent."""
    import subprocess
    import sys

    wrapper = ("import subprocess, sys; sys.stdout.write(subprocess.run([sys.executable, '-m', 'fleet_watch', "
               f"'hook', {agent!r}], input=sys.stdin.read(), capture_output=True, text=True).stdout)")
    out = subprocess.run([sys.executable, "-c", wrapper], input=dumps(payload), capture_output=True, text=True,
                         env={**__import__("os").environ, "FLEET_WATCH_HOME": str(home)}, timeout=60, check=True)
    return out.stdout


def test_session_start_opens_a_lease_on_its_work_tree_and_session_end_closes_it(fleet, fleet_home: Path,
                                                                                tmp_path: Path) -> None:
    repo = _repo(tmp_path, "shared")
    start = {"session_id": "agent-a", "transcript_path": "/tmp/t", "cwd": str(repo), "hook_event_name": "SessionStart",
             "source": "startup"}
    assert hook(fleet, "claude", start).returncode == 0
    leases = fleet("session", "list", "--json").json()
    assert [(x["session_id"], x["status"], x["repo_dir"]) for x in leases] == [("agent-a", "ACTIVE", str(repo))]
    # Another session's write into that work tree is denied, naming the session; the owner's own is not.
    target = str(repo / "src" / "main.py")
    reason = denial("claude", hook(fleet, "claude", claude_write("Write", target, session="agent-b")).stdout)
    assert reason is not None
    assert "session agent-a" in reason
    assert hook(fleet, "claude", claude_write("Write", target, session="agent-a")).stdout == ""
    # A second session of another agent process starting in the same tree opens its lease without it, and is told.
    other = _hook_from_another_agent(fleet_home, "claude", {**start, "session_id": "agent-b"})
    assert "does not hold" in json.loads(other)["systemMessage"]
    end = {**start, "hook_event_name": "SessionEnd", "reason": "exit"}
    del end["source"]
    assert hook(fleet, "claude", end).returncode == 0
    status = {x["session_id"]: x["status"] for x in fleet("session", "list", "--json").json()}
    assert status["agent-a"] == "CLOSED"
    assert hook(fleet, "claude", claude_write("Write", target, session="agent-b")).stdout == ""


# What a hook's cold start must not pay for: click (half of one), dataclasses (it imports inspect, and defining a
# frozen dataclass costs ~0.7 ms against ~0.3 ms for a NamedTuple: 43 of them were a third of a model-server hook),
# psutil and subprocess (Linux reads /proc instead), NVML and the rest of the heavy set.
HOOK_PATH_NEVER_IMPORTS = ("click", "dataclasses", "inspect", "psutil", "subprocess", "pynvml", "gguf", "rich")


@pytest.mark.parametrize("command", ["ollama serve", "llama-server -m qwen2.5-7B-Q4_K_M -c 8192 --port {port}",
                                     "uvicorn app:app --port {port}"])
def test_the_hook_path_stays_light(fleet_home: Path, command: str) -> None:
    """`fleet hook <agent>` is answered before click is imported, and its launch checks (the port, the estimate
    from the command line) load none of the heavy modules: the entry point's agent list is the hook module's."""
    import subprocess
    import sys

    from fleet_watch.cli import HOOK_AGENTS
    from fleet_watch.core.hookio import AGENTS as HOOKIO_AGENTS

    assert tuple(HOOK_AGENTS) == tuple(HOOKIO_AGENTS)
    code = ("import sys\nfrom fleet_watch.cli import main\ncode = main(['hook', 'claude'])\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HOOK_PATH_NEVER_IMPORTS!r}), code, "
            "file=sys.stderr)")
    payload = json.dumps({"session_id": "s", "transcript_path": "/tmp/t", "cwd": "/tmp",
                          "hook_event_name": "PreToolUse", "tool_name": "Bash",
                          "tool_input": {"command": command.format(port=free_port())}})
    r = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, text=True, check=False,
                       env={**__import__("os").environ, "FLEET_WATCH_HOME": str(fleet_home)})
    assert r.stderr.strip().splitlines()[-1] == "[] 0", r.stderr


@pytest.mark.parametrize("agent", AGENTS)
def test_a_denial_is_written_whatever_the_command_holds_and_the_locale_says(fleet, agent: str) -> None:
    """A lone surrogate in the command (valid JSON: ``\\ud800``), or a stdout that is not UTF-8, used to make
    writing the denial raise, and the exit 1 that followed lets every agent run the tool."""
    port = free_port()
    assert fleet("claim", "--port", str(port), "--session-id", "someone-else").returncode == 0
    raw = dumps(shell_payload(agent, f"uvicorn cafe --port {port}")).replace("cafe", "caf\\u00e9\\ud800")
    for env in ({}, {"PYTHONIOENCODING": "ascii"}):
        r = fleet("hook", agent, input=raw, env=env)
        assert r.returncode in (0, 2), r.stderr
        assert "Traceback" not in r.stderr
        if r.returncode == 0:
            doc = json.loads(r.stdout)
            assert "deny" in json.dumps(doc), r.stdout


_LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA locking_mode=EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE chain_head SET seq = seq")
print("locked", flush=True)
time.sleep(300)
"""


def test_a_registry_held_by_another_process_denies_before_the_agent_gives_up(fleet, fleet_home: Path,
                                                                           children: Children) -> None:
    """SQLite waits for a lock in C, where the hook's own deadline cannot interrupt it; the 30 s busy wait of the
    other commands outlasted the 30 s that `fleet integrate` gives the hook, and the agent then runs the tool. The
    hook's connection waits 5 s, then fails closed. (The subprocess timeout below is that requirement, not a
    benchmark: the old wait took the whole 30 s.)"""
    import subprocess
    import sys

    assert fleet("status").returncode == 0  # the registry exists, migrated
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(fleet_home / "registry.db")],
                              stdout=subprocess.PIPE, text=True)
    children.procs.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    r = fleet("hook", "claude", input=dumps(claude_bash(f"uvicorn app:app --port {free_port()}")), timeout=25)
    assert r.returncode == 0, r.stderr
    reason = json.loads(r.stdout)["hookSpecificOutput"]["permissionDecisionReason"]
    assert "could not check this call" in reason, reason
    assert "locked" in reason, reason


def test_a_file_outside_any_work_tree_is_not_denied_by_a_repo_further_down(fleet, children: Children,
                                                                         tmp_path: Path) -> None:
    """Writing ``<dir>/notes.txt`` touches nothing of a repo locked at ``<dir>/project``; a plain folder that a lock
    covers from above still denies."""
    (tmp_path / "project").mkdir()
    holder = children.sleeper()
    register(fleet, holder.pid, "--name", "aider", "--workstream", "w", "--repo", str(tmp_path / "project"),
             "--session-id", "other")
    assert hook(fleet, "claude", claude_write("Write", str(tmp_path / "notes.txt"), session="mine")).stdout == ""
    inside = denial("claude", hook(fleet, "claude", claude_write("Write", str(tmp_path / "project" / "a" / "b.txt"),
                                                              session="mine")).stdout)
    assert inside is not None
    assert f"locked by PID {holder.pid}" in inside


def test_a_new_session_of_the_same_agent_process_supersedes_its_old_one(fleet, tmp_path: Path) -> None:
    """Codex starts a new session on /clear without any SessionEnd; Claude Code's SessionEnd hook may fail. The old
    session of the same agent process must not keep the agent's own repo from it."""
    repo = _repo(tmp_path, "mine")
    start = {"session_id": "old", "transcript_path": "/tmp/t", "cwd": str(repo), "hook_event_name": "SessionStart",
             "source": "startup"}
    assert hook(fleet, "codex", start).returncode == 0
    port = free_port()
    assert fleet("claim", "--port", str(port), "--session-id", "old").returncode == 0
    again = hook(fleet, "codex", {**start, "session_id": "new", "source": "clear"})
    assert (again.returncode, again.stdout) == (0, "")  # it holds the tree: nothing to say
    leases = {x["session_id"]: (x["status"], x["repo_dir"]) for x in fleet("session", "list", "--json").json()}
    assert leases == {"old": ("CLOSED", None), "new": ("ACTIVE", str(repo))}
    assert fleet("guard", "--port", str(port), "--session-id", "else").returncode == 0  # its reservation went too
    patch = codex_patch(["a.py"], session="new", cwd=str(repo))
    assert hook(fleet, "codex", patch).stdout == ""
