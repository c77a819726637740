"""Payloads in the shapes each agent really sends (ecosystem.md section 3), and small checks shared by the tests."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers.ports import bindable, free_port

__all__ = ["bindable", "claude_bash", "claude_write", "free_port"]


def claude_bash(command: str, session: str = "claude-session-1", cwd: str = "/tmp") -> dict[str, Any]:
    return {"session_id": session, "prompt_id": "p-1", "transcript_path": f"/tmp/{session}.jsonl", "cwd": cwd,
            "permission_mode": "default", "effort": "medium", "hook_event_name": "PreToolUse", "tool_name": "Bash",
            "tool_input": {"command": command, "description": "run it", "timeout": 120000,
                           "run_in_background": False},
            "tool_use_id": "toolu_01"}


def claude_write(tool: str, path: str, session: str = "claude-session-1", cwd: str = "/tmp") -> dict[str, Any]:
    tool_input: dict[str, Any] = {"file_path": path}
    if tool == "Write":
        tool_input["content"] = "print('hi')\n"
    elif tool == "Edit":
        tool_input.update(old_string="a", new_string="b", replace_all=False)
    else:  # MultiEdit
        tool_input["edits"] = [{"old_string": "a", "new_string": "b"}]
    return {"session_id": session, "transcript_path": "/tmp/t.jsonl", "cwd": cwd, "permission_mode": "acceptEdits",
            "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tool_input, "tool_use_id": "toolu_02"}


def codex_bash(command: str, session: str = "0199a213-81c0-7800-8aa1-bbab2a035a53",
               cwd: str = "/tmp") -> dict[str, Any]:
    return {"session_id": session, "turn_id": "turn-1", "transcript_path": None, "cwd": cwd,
            "hook_event_name": "PreToolUse", "model": "gpt-5-codex", "permission_mode": "workspace-write",
            "tool_name": "Bash", "tool_input": {"command": command}, "tool_use_id": "call-1"}


def codex_patch(files: list[str], session: str = "0199a213-81c0-7800-8aa1-bbab2a035a53",
                cwd: str = "/tmp") -> dict[str, Any]:
    body = "".join(f"*** Update File: {f}\n@@\n-a\n+b\n" for f in files)
    return {**codex_bash("", session, cwd), "tool_name": "apply_patch",
            "tool_input": {"command": f"*** Begin Patch\n{body}*** End Patch\n"}}


def gemini_shell(command: str, session: str = "gemini-session-1", cwd: str = "/tmp") -> dict[str, Any]:
    return {"session_id": session, "transcript_path": "/tmp/g.json", "cwd": cwd, "hook_event_name": "BeforeTool",
            "timestamp": "2026-11-26T10:30:00Z", "tool_name": "run_shell_command",
            "tool_input": {"command": command, "description": "start it"}}


def gemini_write(path: str, session: str = "gemini-session-1", cwd: str = "/tmp") -> dict[str, Any]:
    return {"session_id": session, "transcript_path": "/tmp/g.json", "cwd": cwd, "hook_event_name": "BeforeTool",
            "timestamp": "2026-11-26T10:30:00Z", "tool_name": "write_file",
            "tool_input": {"file_path": path, "content": "x"}}


def shell_payload(agent: str, command: str, session: str | None = None) -> dict[str, Any]:
    maker = {"claude": claude_bash, "codex": codex_bash, "gemini": gemini_shell}[agent]
    return maker(command) if session is None else maker(command, session)


def dumps(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)


def denial(agent: str, stdout: str) -> str | None:
    """The deny reason in the agent's format, or None when the answer does not deny. Fails on anything that is
    not exactly that agent's documented shape."""
    if not stdout.strip():
        return None
    doc = json.loads(stdout)
    if agent == "gemini":
        if "decision" not in doc:
            return None
        assert set(doc) == {"decision", "reason"}
        assert doc["decision"] == "deny"
        assert doc["reason"]
        return str(doc["reason"])
    if "hookSpecificOutput" not in doc:
        return None
    assert set(doc) == {"hookSpecificOutput"}
    out = doc["hookSpecificOutput"]
    assert set(out) == {"hookEventName", "permissionDecision", "permissionDecisionReason"}
    assert out["hookEventName"] == "PreToolUse"
    assert out["permissionDecision"] == "deny"
    assert out["permissionDecisionReason"]
    return str(out["permissionDecisionReason"])
