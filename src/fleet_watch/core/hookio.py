"""The agents' hook wire formats: what Claude Code, Codex and Gemini CLI send on stdin, and how each one must be
answered so that a denial really blocks.

Pure: a decoded JSON value in, a ``HookEvent`` out (or ``BadPayload`` naming what is wrong); a verdict in, an
``Answer`` (stdout, stderr, exit code) out. Formats from ``shared/docs/ecosystem.md`` section 3:

- Claude Code and Codex: ``PreToolUse``; deny = exit 0 with ``hookSpecificOutput.permissionDecision: "deny"`` and a
  non-empty ``permissionDecisionReason`` (Codex refuses a deny without a reason, and any field it does not know).
- Gemini CLI: ``BeforeTool``; deny = exit 0 with ``{"decision": "deny", "reason": ...}``.
- All three: exit 2 with the reason on stderr blocks too; any other exit code, a timeout or an unparsable answer lets
  the tool run. That is why the hook never exits with anything but 0 or 2.
- Allow is *no output*: an explicit ``allow`` would skip the user's own permission prompt (Claude Code), and Codex
  rejects ``allow`` without ``updatedInput`` as unsupported.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal, NamedTuple

Agent = Literal["claude", "codex", "gemini"]
AGENTS: tuple[Agent, ...] = ("claude", "codex", "gemini")
EventKind = Literal["pre_tool", "session_start", "session_end"]
Action = Literal["shell", "edit", "other"]

# hook_event_name -> what it means, per agent.
_EVENTS: dict[Agent, dict[str, EventKind]] = {
    "claude": {"PreToolUse": "pre_tool", "SessionStart": "session_start", "SessionEnd": "session_end"},
    "codex": {"PreToolUse": "pre_tool", "SessionStart": "session_start", "SessionEnd": "session_end"},
    "gemini": {"BeforeTool": "pre_tool", "SessionStart": "session_start", "SessionEnd": "session_end"},
}
# tool_name -> what it does, per agent; any other tool is not ours to judge.
_SHELL_TOOLS: dict[Agent, frozenset[str]] = {
    "claude": frozenset({"Bash"}),
    "codex": frozenset({"Bash", "shell", "local_shell", "exec_command", "unified_exec", "container.exec"}),
    "gemini": frozenset({"run_shell_command"}),
}
_EDIT_TOOLS: dict[Agent, dict[str, str]] = {  # tool -> the tool_input key that holds the file's path
    "claude": {"Edit": "file_path", "Write": "file_path", "MultiEdit": "file_path", "NotebookEdit": "notebook_path"},
    "codex": {},
    "gemini": {"write_file": "file_path", "replace": "file_path", "edit": "file_path"},
}
PATCH_TOOL = "apply_patch"  # Codex: the patch text is tool_input.command

# Hook matchers that `fleet integrate` installs (the same tool names as above).
PRE_TOOL_MATCHER: dict[Agent, str] = {
    "claude": "Bash|Edit|Write|MultiEdit|NotebookEdit",
    "codex": "Bash|apply_patch",
    "gemini": "run_shell_command|write_file|replace|edit",
}
PRE_TOOL_EVENT: dict[Agent, str] = {"claude": "PreToolUse", "codex": "PreToolUse", "gemini": "BeforeTool"}

MAX_ID_CHARS = 256
MAX_COMMAND_CHARS = 1 << 20  # a shell line longer than a MiB is not something we parse


class BadPayload(ValueError):
    """The hook's input is not what this agent sends; the message says what, in one line."""


class HookEvent(NamedTuple):
    agent: Agent
    kind: EventKind
    event_name: str
    session_id: str
    cwd: str | None
    tool: str | None = None
    action: Action | None = None
    command: str | None = None  # shell tools
    paths: tuple[str, ...] = ()  # edit tools: absolute paths about to be written
    detail: str | None = None  # SessionStart source / SessionEnd reason


class Answer(NamedTuple):
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


def _text(payload: dict[str, Any], key: str, *, required: bool, limit: int = 4096) -> str | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadPayload(f"{key!r} must be a non-empty string")
    if len(value) > limit or "\0" in value:
        raise BadPayload(f"{key!r} is longer than {limit} characters or holds a NUL byte")
    return value


def _absolute(path: str, cwd: str | None, key: str) -> str:
    if "\0" in path or not path.strip():
        raise BadPayload(f"{key!r} must be a non-empty path")
    if not os.path.isabs(path):
        if cwd is None or not os.path.isabs(cwd):
            raise BadPayload(f"{key!r} is relative ({path!r}) and no absolute 'cwd' came with it")
        path = os.path.join(cwd, path)
    return path  # not normalised: `link/..` means what the kernel makes of it (probes.workspace resolves it)


_PATCH_FILE = re.compile(r"^\*\*\* (?:Add|Update|Delete) File: (.+?)\s*$|^\*\*\* Move to: (.+?)\s*$", re.M)


def patch_paths(patch: str) -> list[str]:
    """The files a Codex ``apply_patch`` envelope writes (added, updated, deleted, moved to)."""
    return [m.group(1) or m.group(2) for m in _PATCH_FILE.finditer(patch)]


def _shell_command(value: object) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        import shlex

        return shlex.join(value)  # Codex may send argv
    if not isinstance(value, str):
        raise BadPayload("tool_input.command must be a string")
    if len(value) > MAX_COMMAND_CHARS:
        raise BadPayload(f"tool_input.command is longer than {MAX_COMMAND_CHARS} characters")
    return value


def parse_event(agent: Agent, payload: object) -> HookEvent:
    """Validate one hook payload of ``agent``. Unknown fields are ignored; missing or mistyped ones are not."""
    if not isinstance(payload, dict):
        raise BadPayload(f"the hook input must be a JSON object, not {type(payload).__name__}")
    name = _text(payload, "hook_event_name", required=True, limit=64)
    assert name is not None
    kind = _EVENTS[agent].get(name)
    if kind is None:
        known = ", ".join(_EVENTS[agent])
        raise BadPayload(f"{agent} hook event {name!r} is not one this hook handles ({known})")
    session = _text(payload, "session_id", required=True, limit=MAX_ID_CHARS)
    assert session is not None
    cwd = _text(payload, "cwd", required=False)
    if kind == "session_start":
        return HookEvent(agent, kind, name, session, cwd, detail=_text(payload, "source", required=False, limit=64))
    if kind == "session_end":
        return HookEvent(agent, kind, name, session, cwd, detail=_text(payload, "reason", required=False, limit=64))

    tool = _text(payload, "tool_name", required=True, limit=256)
    assert tool is not None
    tool_input = payload.get("tool_input")
    if not isinstance(tool_input, dict):
        raise BadPayload("tool_input must be a JSON object")
    if tool in _SHELL_TOOLS[agent]:
        command = _shell_command(tool_input.get("command"))
        return HookEvent(agent, kind, name, session, cwd, tool, "shell", command=command)
    if agent == "codex" and tool == PATCH_TOOL:
        patch = _shell_command(tool_input.get("command", tool_input.get("patch")))
        files = patch_paths(patch)
        if not files:
            raise BadPayload("apply_patch input names no file (no '*** Add/Update/Delete File:' line)")
        return HookEvent(agent, kind, name, session, cwd, tool, "edit",
                         paths=tuple(_absolute(f, cwd, "apply_patch file") for f in files))
    key = _EDIT_TOOLS[agent].get(tool)
    if key is not None:
        path = tool_input.get(key)
        if not isinstance(path, str):
            raise BadPayload(f"tool_input.{key} must be a string")
        return HookEvent(agent, kind, name, session, cwd, tool, "edit", paths=(_absolute(path, cwd, key),))
    return HookEvent(agent, kind, name, session, cwd, tool, "other")


# -- answers ---------------------------------------------------------------------------------------------------

def _json(doc: dict[str, Any]) -> str:
    # ASCII only: a reason quoting a command with a lone surrogate, or an agent whose stdout is not UTF-8, must not
    # turn the answer into an encoding error (an exit 1 lets the tool run).
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + "\n"


def deny(agent: Agent, reason: str) -> Answer:
    """Block a tool call, in the agent's documented JSON (exit 0)."""
    reason = reason.strip() or "denied by Fleet Watch"
    if agent == "gemini":
        return Answer(_json({"decision": "deny", "reason": reason}))
    return Answer(_json({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                                "permissionDecisionReason": reason}}))


def allow() -> Answer:
    """No objection: no output, so the agent's own permission rules still apply."""
    return Answer()


def warn(message: str) -> Answer:
    """Let the call through and tell the user why (``systemMessage`` is read by all three agents)."""
    return Answer(_json({"systemMessage": message}))


def block_unparsed(reason: str) -> Answer:
    """For input so broken that the event is unknown: exit 2 with the reason on stderr blocks in every agent."""
    return Answer(stderr=reason.strip() + "\n", exit_code=2)


def session_answer(message: str | None) -> Answer:
    """SessionStart/SessionEnd: nothing, or a message for the user."""
    return warn(message) if message else allow()
