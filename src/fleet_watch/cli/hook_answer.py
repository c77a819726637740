"""Answering one agent hook call, without click (``fleet hook`` is the hot path: see ``cli/__init__.py``).

Fails closed: malformed input, an error anywhere, or a decision slower than ``DEADLINE_S`` blocks the tool call,
unless config.json says ``"hooks": {"on_error": "warn"}``. Nothing may escape as another exit code or a traceback
(the agents run the tool on any exit code but 0 and 2), so this module answers every failure itself instead of
leaving it to the CLI's funnel.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import IO, Any

from fleet_watch.core.hookio import Agent, Answer, BadPayload, HookEvent, parse_event

DEADLINE_S = 10.0  # well inside the 30 s that `fleet integrate` gives the hook: our answer must come first
# SQLite waits for a writer's lock in C, where the deadline's signal cannot interrupt it: the hook's connection
# waits at most this long (a registry held longer is a failure to check, and fails closed in time).
BUSY_TIMEOUT_MS = 5000
MAX_PAYLOAD_BYTES = 64 << 20  # a Write of a large file carries its content


class HookTimeout(Exception):
    pass


def _expired(signum: int, frame: FrameType | None) -> None:
    raise HookTimeout(f"the check took longer than {DEADLINE_S:g} s")


def _read(stream: IO[bytes]) -> bytes:
    data = stream.read(MAX_PAYLOAD_BYTES + 1)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"hook input is larger than {MAX_PAYLOAD_BYTES >> 20} MiB")
    if not data.strip():
        raise BadPayload("no hook input on stdin")
    return data


def _describe(err: BaseException) -> str:
    from fleet_watch.errors import FleetError

    if isinstance(err, FleetError | BadPayload | HookTimeout):
        return str(err)
    return f"internal error: {type(err).__name__}: {err}"


def _policy_and_note() -> tuple[str, str]:
    """The configured hooks.on_error, and what kept us from reading it (a broken config denies)."""
    from fleet_watch.config import load_settings, resolve_home
    from fleet_watch.errors import FleetError
    from fleet_watch.service.fleet import detect_pool_mb
    from fleet_watch.service.hooks import on_error_policy

    try:
        return on_error_policy(load_settings(resolve_home(os.environ), detect_pool_mb)), ""
    except FleetError as err:
        return "deny", f"; {err}"
    except Exception as err:  # noqa: BLE001 - the error path must not fail itself
        return "deny", f"; {type(err).__name__}: {err}"


def _failed(agent: Agent, pre_tool: bool | None, message: str) -> Answer:
    """Something kept the hook from deciding. ``pre_tool``: the call is a tool call (True), a session event
    (False), or unknown (None: the input was unreadable)."""
    from fleet_watch.core import hookio

    policy, note = _policy_and_note()
    if note[2:] not in message:  # a broken config is often the very error being reported
        message += note
    if policy == "warn":
        return hookio.warn(f"Fleet Watch could not check this call ({message}); let through because "
                           "hooks.on_error is \"warn\"")
    if pre_tool is False:
        return hookio.warn(f"Fleet Watch: {message}")  # session events cannot be blocked: say it
    text = (f"Fleet Watch could not check this call: {message}. Failing closed (config.json "
            "\"hooks\": {\"on_error\": \"warn\"} lets calls through when the check fails).")
    return hookio.deny(agent, text) if pre_tool else hookio.block_unparsed(text)


def _is_pre_tool(agent: Agent, payload: Any) -> bool | None:
    from fleet_watch.core.hookio import PRE_TOOL_EVENT

    if isinstance(payload, dict) and isinstance(payload.get("hook_event_name"), str):
        name = payload["hook_event_name"]
        return True if name == PRE_TOOL_EVENT[agent] else False if name in ("SessionStart", "SessionEnd") else None
    return None


def _decide(agent: Agent, event: HookEvent) -> Answer:
    from fleet_watch.core import hookio
    from fleet_watch.service import hooks

    if event.kind == "pre_tool" and not hooks.needs_registry(event):
        return hookio.allow()  # `ls`, `git status`, a Read: nothing to look up, no database opened
    from functools import partial

    from fleet_watch.cli.context import current_session
    from fleet_watch.cli.context import open_fleet as open_with

    open_fleet = partial(open_with, busy_timeout_ms=BUSY_TIMEOUT_MS)
    session = current_session(event.session_id) or event.session_id
    if event.kind != "pre_tool":
        described = hooks.agent_session(event, session)
        if event.kind == "session_start":
            return hookio.session_answer(hooks.open_session_lease(described, open_fleet))
        return hookio.session_answer(hooks.close_session_lease(described, open_fleet))
    verdict = hooks.decide(event, open_fleet, session)
    if not verdict.allowed:
        return hookio.deny(agent, verdict.reason or "denied by Fleet Watch")
    return hookio.warn("; ".join(verdict.notes)) if verdict.notes else hookio.allow()


def answer(agent: Agent, stream: IO[bytes]) -> Answer:
    """Read one payload from ``stream`` and answer it. Never raises."""
    from fleet_watch import jsonio

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    payload: Any = None
    try:
        try:
            payload = jsonio.loads(_read(stream))
            event = parse_event(agent, payload)
        except (BadPayload, jsonio.BadJson) as err:
            return _failed(agent, _is_pre_tool(agent, payload), f"malformed {agent} hook input: {err}")
        try:
            return _decide(agent, event)
        except BaseException as err:  # noqa: BLE001 - fail closed on anything, timeouts and interrupts included
            return _failed(agent, event.kind == "pre_tool", _describe(err))
    except BaseException as err:  # noqa: BLE001 - e.g. the deadline expiring while the input was read
        signal.setitimer(signal.ITIMER_REAL, 0)
        return _failed(agent, _is_pre_tool(agent, payload), _describe(err))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _write(stream: IO[str], text: str) -> None:
    """As bytes, whatever the locale says: nothing the answer quotes can make writing it fail."""
    if text:
        stream.buffer.write(text.encode("utf-8", "backslashreplace"))  # type: ignore[attr-defined]
        stream.flush()


def run(agent: Agent) -> int:
    """Answer the payload on stdin, print the agent's answer, return its exit code (0 or 2)."""
    result = answer(agent, sys.stdin.buffer)
    try:
        _write(sys.stdout, result.stdout)
        _write(sys.stderr, result.stderr)
    except BrokenPipeError:
        pass
    except Exception as err:  # noqa: BLE001 - an answer that cannot be written still must not let the call through
        os.write(2, f"Fleet Watch could not write its answer ({type(err).__name__}); blocking\n".encode())
        return 2
    return result.exit_code
