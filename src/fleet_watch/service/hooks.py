"""The decisions behind ``fleet hook claude|codex|gemini``: the guard's verdict on what a tool call is about to do.

Nothing here re-implements a rule. A shell command is read for what it will start (``core.launches``) and each
launch is put to the guard (``Fleet.evaluate``) exactly as ``fleet guard --port N --framework F --model M`` would;
a file write is put to the guard's repo check for the file's work tree. This module only words the answer: who
holds the resource and what is free instead.

The registry is opened only when a command starts something or a file is written: ``ls`` costs no database.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from fleet_watch.core.hookio import HookEvent
from fleet_watch.core.launches import Launch, parse_launches
from fleet_watch.errors import UsageError

if TYPE_CHECKING:
    from fleet_watch.config import Settings
    from fleet_watch.service.fleet import Fleet
    from fleet_watch.service.preflight import GuardResult

OnError = Literal["deny", "warn"]
FleetOpener = Callable[[], "Fleet"]


def on_error_policy(settings: Settings) -> OnError:
    """``hooks.on_error`` (``config.py`` checks it): ``"deny"``, the default, makes a hook that cannot decide block
    the call; ``"warn"`` lets the call through and says why."""
    return "warn" if settings.hooks_on_error == "warn" else "deny"


class Verdict(NamedTuple):
    allowed: bool
    reason: str | None = None
    notes: tuple[str, ...] = ()  # for the user: what could not be checked


@functools.lru_cache(maxsize=4)
def _launches(command: str) -> tuple[Launch, ...]:
    """What the line starts that the guard can judge: a port, or a model to size (read once per call)."""
    return tuple(launch for launch in parse_launches(command) if launch.port is not None or launch.model is not None)


def needs_registry(event: HookEvent) -> bool:
    """Whether the call touches anything the registry knows about; if not it is allowed without opening it."""
    if event.action == "shell" and event.command is not None:
        return bool(_launches(event.command))
    return event.action == "edit"


def decide(event: HookEvent, open_fleet: FleetOpener, session_id: str | None) -> Verdict:
    """The verdict on one PreToolUse/BeforeTool call."""
    if event.action == "shell" and event.command is not None:
        return _decide_shell(event.command, open_fleet, session_id)
    if event.action == "edit":
        return _decide_edit(event.paths, open_fleet, session_id)
    return Verdict(True)


# -- shell commands ---------------------------------------------------------------------------------------------

def _decide_shell(command: str, open_fleet: FleetOpener, session_id: str | None) -> Verdict:
    launches = _launches(command)
    if not launches:
        return Verdict(True)
    fleet = open_fleet()
    try:
        notes: list[str] = []
        for launch in launches:
            verdict = _judge_launch(fleet, launch, session_id)
            if not verdict.allowed:
                return verdict
            notes.extend(verdict.notes)
        return Verdict(True, notes=tuple(notes))
    finally:
        fleet.close()


def _judge_launch(fleet: Fleet, launch: Launch, session_id: str | None) -> Verdict:
    from fleet_watch.service.preflight import GuardRequest, evaluate

    device = launch.gpu_device if str(launch.gpu_device) in fleet.settings.gpu_devices else None
    notes: tuple[str, ...] = ()
    try:
        result = evaluate(fleet, GuardRequest(
            port=launch.port, framework=launch.framework if launch.model else None, model=launch.model,
            ctx=launch.ctx, kv_dtype=launch.kv_dtype, flash_attn=launch.flash_attn if launch.model else None,
            gpu_device=device if launch.model else None, session_id=session_id))
    except UsageError as err:
        if launch.model is None:
            raise
        # The line names a model the estimator refuses (a typo'd KV type, a format the engine cannot load): the
        # server will refuse it too. Its port is still checked.
        notes = (f"Fleet Watch did not check the memory of `{_short(launch.text)}`: {err.message}",)
        if launch.port is None:
            return Verdict(True, notes=notes)
        result = evaluate(fleet, GuardRequest(port=launch.port, session_id=session_id))
    if result.allowed:
        return Verdict(True, notes=notes)
    return Verdict(False, _shell_denial(fleet, launch, result), notes)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _holder_tail(holder: dict[str, Any] | None) -> str:
    if not holder or holder.get("kind") != "process":
        return ""
    return f" [workstream {holder['workstream']}, session {holder['session_id']}]"


def _shell_denial(fleet: Fleet, launch: Launch, result: GuardResult) -> str:
    parts: list[str] = []
    port = result.checks.get("port")
    if port is not None and not port["allowed"]:
        text = "Port: " + port["reason"] + _holder_tail(port["holder"])
        free = port["suggested_ports"]
        if free:
            text += f". Free alternative: port {free[0]} ({launch.port_advice(free[0])})"
            if len(free) > 1:
                text += f"; also free: {', '.join(map(str, free[1:]))}"
        else:
            text += ". No free port was found to suggest"
        parts.append(text)
    gpu = result.checks.get("gpu")
    if gpu is not None and not gpu["allowed"]:
        text = "GPU: " + str(gpu.get("detail") or gpu["reason"])
        holders = _gpu_holders(fleet)
        if holders:
            text += f"; GPU memory is held by {holders}"
        suggestion = (gpu.get("working_set") or {}).get("suggestion")
        if suggestion:
            text += f". Alternative: {suggestion}"
        elif gpu.get("suggested_max_mb"):
            text += f". Alternative: a model that needs at most {gpu['suggested_max_mb']}MB"
        parts.append(text)
    return f"Fleet Watch denied `{_short(launch.text)}`: " + ". ".join(parts) + "."


def _gpu_holders(fleet: Fleet, limit: int = 3) -> str:
    """The largest live GPU claims, for the denial message."""
    by_holder: dict[int, tuple[Any, int]] = {}
    for claim in fleet.ledger().gpu_claims():
        holder, mb = by_holder.get(claim.holder.record_id, (claim.holder, 0))
        by_holder[claim.holder.record_id] = (holder, mb + claim.amount_mb)
    largest = sorted(by_holder.values(), key=lambda hm: -hm[1])[:limit]
    return ", ".join(f"PID {h.pid} ({h.name}, {mb}MB, session {h.session_id})" for h, mb in largest)


# -- file writes ------------------------------------------------------------------------------------------------

def _decide_edit(paths: tuple[str, ...], open_fleet: FleetOpener, session_id: str | None) -> Verdict:
    from fleet_watch.probes.workspace import write_repos
    from fleet_watch.service.preflight import GuardRequest, evaluate

    repos: dict[str, str] = {}
    for path in paths:
        for repo in write_repos(path):
            repos.setdefault(repo, path)
    fleet = open_fleet()
    try:
        for repo, path in repos.items():
            result = evaluate(fleet, GuardRequest(repo=repo, session_id=session_id))
            check = result.checks["repo"]
            if not check["allowed"]:
                return Verdict(False, _edit_denial(path, result.request["repo_dir"], check, session_id))
        return Verdict(True)
    finally:
        fleet.close()


def _edit_denial(path: str, repo_dir: str, check: dict[str, Any], session_id: str | None) -> str:
    from fleet_watch.probes.workspace import free_sibling, is_git_work_tree

    holder = check["holder"] or {}
    lock = holder.get("repo_dir") or repo_dir
    # A lock on a parent covers its siblings too: the alternative must lie outside the lock, not just the repo.
    base = lock if repo_dir == lock or repo_dir.startswith(lock.rstrip("/") + "/") else repo_dir
    slug = re.sub(r"[^A-Za-z0-9]+", "-", session_id or "session").strip("-")[:12] or "session"
    alternative = free_sibling(base, slug)
    if is_git_work_tree(repo_dir):
        how = f"work in a separate git worktree (`git -C {repo_dir} worktree add {alternative}`)"
    else:
        how = f"work on a copy outside the lock (for example {alternative})"
    who = f"PID {holder['pid']}" if holder.get("pid") is not None else "its holder"
    return (f"Fleet Watch denied writing {path}: {check['reason']}{_holder_tail(holder)}. "
            f"Free alternative: {how}, or wait until {who} releases it (`fleet status` shows the holders).")


# -- session lifecycle (the lease API of issue #9 plugs in here) ----------------------------------------------

class AgentSession(NamedTuple):
    """An agent session as its SessionStart/SessionEnd hook describes it, with the agent's own process (the lease's
    owner) identified by PID and start time."""

    agent: str
    session_id: str
    cwd: str | None
    detail: str | None  # SessionStart's source (startup, resume, ...) or SessionEnd's reason
    owner_pid: int | None
    owner_start_time: float | None


def agent_session(event: HookEvent, session_id: str) -> AgentSession:
    from fleet_watch.probes.processes import process_facts
    from fleet_watch.probes.workspace import agent_process

    pid = agent_process()
    facts = process_facts(pid) if pid is not None else None
    return AgentSession(agent=event.agent, session_id=session_id, cwd=event.cwd, detail=event.detail,
                        owner_pid=facts.pid if facts else None, owner_start_time=facts.start_time if facts else None)


def open_session_lease(session: AgentSession, open_fleet: FleetOpener) -> str | None:
    """SessionStart: the one place where an agent session's lease is opened, owned by the agent's own process
    (``session.owner_pid``), holding the git work tree it starts in, so that other sessions' writes there are
    denied. When another session already holds that tree, the lease opens without it and the user is told who
    holds it. Returns a message for the user, or None."""
    from fleet_watch.errors import Conflict
    from fleet_watch.probes.workspace import enclosing_repo, is_git_work_tree
    from fleet_watch.service import sessions

    tree = enclosing_repo(os.path.join(session.cwd, "_")) if session.cwd else None  # cwd itself, or above it
    repo = tree if tree is not None and is_git_work_tree(tree) else None
    with open_fleet() as fleet:
        sessions.close_superseded(fleet, session.session_id, owner_pid=session.owner_pid)
        try:
            sessions.ensure(fleet, session.session_id, owner_pid=session.owner_pid, repo=repo)
        except Conflict as err:
            sessions.ensure(fleet, session.session_id, owner_pid=session.owner_pid)
            return f"Fleet Watch: this session does not hold {repo}: {err.message}"
    return None


def close_session_lease(session: AgentSession, open_fleet: FleetOpener) -> str | None:
    """SessionEnd: the one place where the session's lease (its repo and its reservations) is released. Returns a
    message for the user, or None."""
    from fleet_watch.errors import NotFound
    from fleet_watch.service import sessions

    with open_fleet() as fleet:
        try:
            sessions.close(fleet, session.session_id)
        except NotFound:
            return None  # no lease was opened (a hook installed mid-session)
    return None
