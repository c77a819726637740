"""From a decision to a signal: the rights of the invoking user, the ownership proof, and the one signal path.

Every command that stops a process (``reap``, ``reap-sessions``, ``runaway --kill``, ``preempt``) comes through
``stop_owned``: nothing is signalled without a proof that Fleet Watch owns it (a registry row with the same start
time, or membership of the invoking user's agent session), and then only through ``probes.signals.stop``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from fleet_watch.core import discovery as dcore
from fleet_watch.core import safety
from fleet_watch.core.discovery import ProcLike
from fleet_watch.errors import UsageError
from fleet_watch.probes import signals
from fleet_watch.probes.ancestry import own_ancestors
from fleet_watch.probes.processes import death_reason
from fleet_watch.service.fleet import Fleet
from fleet_watch.store import leases, registry

GRACE_S = 5.0  # reap, reap-sessions, runaway: how long SIGTERM has before SIGKILL


class Rights(NamedTuple):
    """What this invocation may signal: computed once per command."""

    euid: int
    allow_other_users: bool = False
    ancestors: frozenset[int] = frozenset()
    min_pid: int = safety.MIN_PID


def rights(allow_other_users: bool) -> Rights:
    euid = os.geteuid()
    if allow_other_users and euid != 0:
        raise UsageError("--allow-other-users is for root only: a user can only signal their own processes")
    return Rights(euid=euid, allow_other_users=allow_other_users, ancestors=frozenset(own_ancestors()))


def stop_owned(pid: int, start_time: float, proof: str | None, who: Rights, *,
               grace_s: float = GRACE_S) -> signals.StopResult:
    """Stop (pid, start_time) if ``proof`` says Fleet Watch owns it; else refuse without touching it."""
    if proof is None:
        return signals.StopResult(pid, start_time, signals.REFUSED, (),
                                  f"PID {pid} is not Fleet Watch's: not registered with this start time, "
                                  "nor part of your agent sessions")
    return signals.stop(pid, start_time, grace_s=grace_s, min_pid=who.min_pid,
                        allow_other_users=who.allow_other_users, ancestors=who.ancestors)


def registered_starts(fleet: Fleet) -> dict[int, float]:
    """{pid: registered start time} for every row: the registry half of the ownership proof."""
    with fleet.reading() as conn:
        return {r.pid: r.start_time for r in registry.list_records(conn)}


def agent_members(fleet: Fleet, procs: Sequence[ProcLike], euid: int) -> dict[int, str]:
    """The invoking user's agent sessions (``session_patterns``, and the live owners of the user's open leases) and
    every process below them: the other half of the ownership proof. {pid: which session}."""
    patterns = dcore.compile_session_patterns(fleet.settings.session_patterns)
    sessions = dcore.find_sessions(procs, patterns, exclude_pids={os.getpid()})
    with fleet.reading() as conn:
        open_leases = [lease for lease in leases.list_all(conn) if not lease.is_closed]
    owners = {lease.owner_pid: lease.session_id for lease in open_leases
              if lease.owner_pid is not None and lease.owner_start_time is not None and lease.owner_uid == euid
              and death_reason(lease.owner_pid, lease.owner_start_time) is None}
    return safety.agent_members(procs, sessions, euid=euid, lease_owners=owners)
