"""What Fleet Watch may never signal, who may preempt whom, and what counts as a runaway. Pure.

The signal path (``probes.signals``) asks ``refusal`` before it opens the process, with facts it read; the services
ask ``may_preempt`` and ``runaway_flags`` with data they gathered. Nothing here reads the OS or the clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from fleet_watch.core import liveness
from fleet_watch.core.discovery import ProcLike, SessionMatch, ancestry

# Below this, PIDs belong to what the system started at boot (init's first children, kernel threads). The CLI always
# uses it; a caller inside a fresh PID namespace (the test suite) meets it for real, since the namespace's first
# processes get small numbers too.
MIN_PID = 100


def refusal(pid: int, *, target_uid: int | None, own_pid: int, own_ancestors: Collection[int], euid: int,
            allow_other_users: bool, min_pid: int = MIN_PID) -> str | None:
    """Why ``pid`` must not be signalled at all, or None. Checked before any identity work, whoever asks."""
    if pid <= 1:
        return f"PID {pid} is init: never signalled"
    if pid < min_pid:
        return f"PID {pid} is below {min_pid}: system processes are never signalled"
    if pid == own_pid:
        return f"PID {pid} is this Fleet Watch process itself"
    if pid in own_ancestors:
        return f"PID {pid} is an ancestor of this Fleet Watch process (the shell or agent that ran it)"
    if target_uid is None:
        return f"PID {pid}'s owner could not be read: not signalled"
    if target_uid != euid:
        if euid != 0:
            return f"PID {pid} belongs to uid {target_uid}, not to you (uid {euid})"
        if not allow_other_users:
            return (f"PID {pid} belongs to uid {target_uid}, not to root; "
                    "root signals other users' processes only with --allow-other-users")
    return None


def may_preempt(requested: int, holder_priority: int) -> str | None:
    """None when ``requested`` may take a resource from a holder; else why not. Only a strictly higher priority
    preempts (larger numbers win, 1-5)."""
    if requested <= holder_priority:
        return f"cannot preempt: priority {requested} is not higher than the holder's priority {holder_priority}"
    return None


class CpuSample(NamedTuple):
    """One process in the runaway window: its CPU share over the window, and what identifies it."""

    pid: int
    start_time: float
    name: str
    command: str
    uid: int | None
    cpu_pct: float  # 100 = one core, over the whole window (two samples, not a lifetime average)
    runtime_s: float  # how long the process has existed at the second sample


def runaway_flags(samples: Sequence[CpuSample], *, threshold_pct: float, sustained_s: float) -> list[CpuSample]:
    """Processes at or above the threshold over the whole window, that have existed at least ``sustained_s``;
    busiest first."""
    hot = [s for s in samples if s.cpu_pct >= threshold_pct and s.runtime_s >= sustained_s]
    return sorted(hot, key=lambda s: (-s.cpu_pct, s.pid))


def ownership_proof(pid: int, start_time: float, *, registered_start: float | None,
                    agent_session: str | None) -> str | None:
    """Why Fleet Watch may act on (pid, start_time), or None when it is not Fleet Watch's to touch: a registry row
    for ``pid`` whose start time matches (the one liveness rule's comparison), or membership of one of the invoking
    user's agent sessions (``agent_session`` says which, for the same identity)."""
    if registered_start is not None and liveness.same_start(registered_start, start_time):
        return f"registered as PID {pid} with this start time"
    return agent_session


def agent_members(procs: Sequence[ProcLike], sessions: Sequence[SessionMatch], *, euid: int,
                  lease_owners: Mapping[int, str]) -> dict[int, str]:
    """The processes of the invoking user's agent sessions, each with the reason: an agent CLI of ``euid`` (matched
    by ``session_patterns``) or the live owner of one of the user's open session leases (``lease_owners``: pid ->
    session id), and everything below either. {pid: why}."""
    by_pid = {p.pid: p for p in procs}
    roots: dict[int, str] = {}
    for s in sessions:
        agent = by_pid.get(s.pid)
        if agent is not None and agent.uid == euid:
            roots[s.pid] = f"in your {s.kind} session (agent PID {s.pid})"
    for pid, session_id in lease_owners.items():
        roots.setdefault(pid, f"in your session {session_id!r} (lease owner PID {pid})")
    # A root the signal path would refuse (PID 1, a system PID) proves nothing: everything descends from PID 1.
    roots = {pid: why for pid, why in roots.items() if pid >= MIN_PID}
    parent = {p.pid: p.ppid for p in procs}
    out: dict[int, str] = {}
    for p in procs:
        if p.pid in roots:
            out[p.pid] = roots[p.pid]
            continue
        root = next((a for a in ancestry(p.pid, parent) if a in roots), None)
        if root is not None:
            out[p.pid] = roots[root]
    return out
