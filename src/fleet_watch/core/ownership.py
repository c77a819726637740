"""Ownership: is a registered process still owned by someone, and could it ever be stopped as an orphan? Pure.

The seed's states, most owned first: ``live > disconnected > stale_candidate > orphan_confirmed > exited``.
``orphan_confirmed`` needs three independent signals at once (README, "Ownership Model"):

1. its heartbeat is older than ``STALE_AFTER_S`` (180 s);
2. no session owns it: its session lease is missing (a process registered without a session has none), closed, or
   its owner process is gone;
3. its parent chain is detached: it was re-parented to PID 1 or adopted by a subreaper (its launcher is gone).

"Detached" never means "no terminal": on servers, CI and containers nothing has one. It is read from the parent
chain (``parent_chain``), and a process that the service manager owns (a systemd ``*.service`` unit, a launchd job)
is never an orphan, whatever its parent. Facts come from ``probes.ancestry``; this module only decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

from fleet_watch.core import liveness

STALE_AFTER_S = 180.0  # a heartbeat older than this has expired (README ownership model)

OwnershipClass = Literal["live", "disconnected", "stale_candidate", "orphan_confirmed", "exited"]
LIVE: Final = "live"
DISCONNECTED: Final = "disconnected"
STALE_CANDIDATE: Final = "stale_candidate"
ORPHAN_CONFIRMED: Final = "orphan_confirmed"
EXITED: Final = "exited"
CLASSES: tuple[OwnershipClass, ...] = (LIVE, DISCONNECTED, STALE_CANDIDATE, ORPHAN_CONFIRMED, EXITED)

# What a lease says about its session (``LeaseFacts.status``); MISSING: a named session without a lease; NONE: the
# process was registered for itself (session ``cli-<pid>``), so there is no lease to look for.
ACTIVE = "ACTIVE"
CLOSED = "CLOSED"
OWNER_GONE = "OWNER_GONE"
MISSING = "MISSING"
NONE = "NONE"


def own_session(pid: int, session_id: str) -> bool:
    """A process registered without a session (by hand or by discovery) is its own session, ``cli-<pid>``."""
    return session_id == f"cli-{pid}"


# -- the parent chain -----------------------------------------------------------------------------------------------
class ProcessNode(NamedTuple):
    """One process as the ancestry probe read it. ``unit``: the systemd unit its cgroup names (the deepest
    ``.service`` or ``.scope`` in the path), None when it is in none (containers, no systemd, macOS)."""

    pid: int
    ppid: int | None
    name: str
    sid: int | None = None
    pgid: int | None = None
    unit: str | None = None


class ChainFacts(NamedTuple):
    """What the parent-chain rule needs about one process, read at one moment.

    ``parent`` is None when the parent is PID 0/1 or could not be read; ``ancestors`` are the PIDs above the process,
    nearest first. ``session_leader_alive``/``group_leader_alive``: whether the leader of its session / process group
    still runs (None when the process leads it itself, or it could not be read). ``launchd_job``: the label of the
    launchd job whose main process this is (macOS).
    """

    process: ProcessNode
    parent: ProcessNode | None
    ancestors: tuple[int, ...] = ()
    session_leader_alive: bool | None = None
    group_leader_alive: bool | None = None
    launchd_job: str | None = None


class ChainVerdict(NamedTuple):
    """``detached``: True (its launcher is gone), False (attached, or owned by the service manager), None (unknown).
    ``managed_by``: the service manager's unit or job that owns it; such a process is never an orphan."""

    detached: bool | None
    evidence: str
    managed_by: str | None = None


_UNIT = re.compile(r"[^/]+\.(service|scope)")
_USER_MANAGER = re.compile(r"user@\d+\.service")


def unit_from_cgroup(text: str) -> str | None:
    """The deepest systemd ``.service``/``.scope`` named by ``/proc/<pid>/cgroup`` (the ``name=systemd`` hierarchy on
    cgroup v1, else the unified ``0::`` one); None when the path names none (``0::/`` in a container)."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths[parts[1]] = parts[2]
    path = paths.get("name=systemd", paths.get("", ""))
    units = [c for c in path.split("/") if _UNIT.fullmatch(c)]
    return units[-1] if units else None


def service_unit(unit: str | None) -> str | None:
    """The unit that owns the process as a service: a ``*.service`` other than a user's manager (``user@N.service``,
    whose own processes live in ``init.scope``). Session and app scopes (``session-3.scope``) are not services."""
    if unit is None or not unit.endswith(".service") or _USER_MANAGER.fullmatch(unit):
        return None
    return unit


# Programs that exist to adopt orphans (PR_SET_CHILD_SUBREAPER) outside a service manager: container inits run as a
# subreaper. A leader gone with the parent outside its group proves adoption only under one of these: a job-control
# shell's pipeline (`a | server &`) looks the same while its launcher, the shell, still runs.
KNOWN_SUBREAPERS = frozenset({"tini", "dumb-init", "catatonit", "docker-init", "s6-svscan", "runsvdir"})


def is_service_manager(node: ProcessNode) -> bool:
    """systemd (the system's or a user's ``systemd --user``) runs in ``init.scope``; both are subreapers."""
    return node.unit == "init.scope"


def parent_chain(facts: ChainFacts | None, *, lease_owner: int | None = None) -> ChainVerdict:
    """Whether the process's launcher is gone (see the module docstring). ``lease_owner``: the live owner process of
    its session's lease, if any; a process still below it is attached to its session."""
    if facts is None:
        return ChainVerdict(None, "parent chain could not be read")
    proc = facts.process
    unit = service_unit(proc.unit)
    if unit is not None:
        return ChainVerdict(False, f"owned by the service manager (systemd unit {unit}): never an orphan",
                            managed_by=f"systemd:{unit}")
    if facts.launchd_job is not None:
        return ChainVerdict(False, f"owned by the service manager (launchd job {facts.launchd_job}): never an orphan",
                            managed_by=f"launchd:{facts.launchd_job}")
    if lease_owner is not None and lease_owner in facts.ancestors:
        return ChainVerdict(False, f"its session's owner PID {lease_owner} is among its ancestors")
    if proc.ppid is None:
        return ChainVerdict(None, "parent PID could not be read")
    if proc.ppid == 1:
        return ChainVerdict(True, "parent chain detached: re-parented to PID 1 (the process that launched it is gone)")
    if proc.ppid == 0:
        return ChainVerdict(None, "parent is outside this PID namespace (PPid 0)")
    parent = facts.parent
    if parent is None:
        return ChainVerdict(None, f"parent PID {proc.ppid} could not be read")
    who = f"PID {parent.pid} ({parent.name})"
    if is_service_manager(parent):
        return ChainVerdict(True, f"parent chain detached: adopted by the service manager {who}, a subreaper "
                                  "(the process that launched it is gone)")
    for label, leader, alive, parent_value in (
        ("session", proc.sid, facts.session_leader_alive, parent.sid),
        ("process group", proc.pgid, facts.group_leader_alive, parent.pgid),
    ):
        if parent.name not in KNOWN_SUBREAPERS:
            break
        if leader is not None and leader != proc.pid and alive is False and parent_value != leader:
            return ChainVerdict(True, f"parent chain detached: the leader of its {label} (PID {leader}) is gone and "
                                      f"its parent {who} is outside that {label}: adopted by a subreaper")
    return ChainVerdict(False, f"parent chain attached: parent {who} still runs")


# -- the session lease ------------------------------------------------------------------------------------------------
class LeaseFacts(NamedTuple):
    """A session lease as the classifier needs it. ``owner_death``: why its owner process is gone (None: it lives, or
    the lease named no owner)."""

    session_id: str
    closed: bool
    owner_pid: int | None = None
    owner_death: str | None = None

    @property
    def status(self) -> str:
        if self.closed:
            return CLOSED
        return OWNER_GONE if self.owner_death is not None else ACTIVE


def lease_status(pid: int, session_id: str, lease: LeaseFacts | None) -> str:
    if own_session(pid, session_id):
        return NONE
    return MISSING if lease is None else lease.status


def _owner_evidence(status: str, session_id: str, lease: LeaseFacts | None, *, fresh: bool) -> str:
    if status == NONE:
        if fresh:
            return "registered without a session: its own registration owns it while heartbeats come"
        return "registered without a session: no session lease owns it"
    if status == MISSING or lease is None:
        return f"session lease {session_id!r} is missing"
    if status == CLOSED:
        return f"session lease {session_id!r} is closed"
    if status == OWNER_GONE:
        return f"session {session_id!r}'s owner PID {lease.owner_pid} is gone ({lease.owner_death})"
    if lease.owner_pid is None:
        return f"session lease {session_id!r} is open"
    return f"session lease {session_id!r} is open and its owner PID {lease.owner_pid} is alive"


# -- the classification -----------------------------------------------------------------------------------------------
class Verdict(NamedTuple):
    """A process's class, the evidence in the order it was weighed, and the facts behind it."""

    classification: OwnershipClass
    evidence: tuple[str, ...]
    heartbeat_age_s: float | None  # None: the stored heartbeat is unreadable
    lease_status: str
    chain: ChainVerdict | None  # None: not inspected (the class did not depend on it)

    @property
    def stale(self) -> bool:
        return self.heartbeat_age_s is not None and self.heartbeat_age_s > STALE_AFTER_S

    @property
    def safe_to_reap(self) -> bool:
        return self.classification == ORPHAN_CONFIRMED


_DEATH_EVIDENCE = {
    liveness.DEAD_PID: "registered PID {pid} is no longer running",
    liveness.ZOMBIE: "PID {pid} has exited (a zombie its parent has not reaped yet)",
    liveness.PID_REUSED: "PID {pid} now belongs to another process (its start time differs from the registered one)",
}


def needs_chain(*, death: str | None, last_heartbeat: float | None, now: float, pid: int, session_id: str,
                lease: LeaseFacts | None, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the class depends on the parent chain: only a live process whose heartbeat expired and that no session
    owns can be an orphan. The views ask the chain only then (it costs a few ``/proc`` reads per process)."""
    if death is not None or last_heartbeat is None or now - last_heartbeat <= stale_after_s:
        return False
    return lease_status(pid, session_id, lease) != ACTIVE


def classify(*, pid: int, session_id: str, death: str | None, last_heartbeat: float | None, now: float,
             lease: LeaseFacts | None, chain: ChainVerdict | None,
             stale_after_s: float = STALE_AFTER_S) -> Verdict:
    """The first rule that matches:

    1. ``exited``: the registered identity is gone (dead, a zombie, or its PID reused);
    2. ``live``: heartbeat fresh, and an owner holds it: its open session lease (whose owner, if named, lives), or its
       own registration when it has no session;
    3. ``disconnected``: heartbeat fresh, but its named session's lease is missing, closed or its owner is gone;
    4. ``orphan_confirmed``: heartbeat expired, no session owns it, parent chain detached, no service manager owns it;
    5. ``stale_candidate``: heartbeat expired (or unreadable) otherwise.
    """
    status = lease_status(pid, session_id, lease)
    fresh = last_heartbeat is not None and now - last_heartbeat <= stale_after_s
    owner = _owner_evidence(status, session_id, lease, fresh=fresh)
    if death is not None:
        reason = _DEATH_EVIDENCE.get(death, "registered process is no longer running ({death})")
        return Verdict(classification=EXITED, evidence=(reason.format(pid=pid, death=death),),
                       heartbeat_age_s=None if last_heartbeat is None else max(0.0, now - last_heartbeat),
                       lease_status=status, chain=chain)
    if last_heartbeat is None:
        return Verdict(classification=STALE_CANDIDATE, evidence=("process heartbeat is unreadable", owner),
                       heartbeat_age_s=None, lease_status=status, chain=chain)
    age = max(0.0, now - last_heartbeat)
    owned = status in (ACTIVE, NONE)
    if age <= stale_after_s:
        beat = f"heartbeat {age:.0f}s ago"
        return Verdict(classification=LIVE if owned else DISCONNECTED, evidence=(beat, owner), heartbeat_age_s=age,
                       lease_status=status, chain=chain)
    expired = f"process heartbeat expired ({age:.0f}s ago, over {stale_after_s:.0f}s)"
    if status == ACTIVE:
        return Verdict(classification=STALE_CANDIDATE, evidence=(expired, owner), heartbeat_age_s=age,
                       lease_status=status, chain=chain)
    if chain is None:
        return Verdict(classification=STALE_CANDIDATE, evidence=(expired, owner, "parent chain not inspected"),
                       heartbeat_age_s=age, lease_status=status, chain=None)
    klass: OwnershipClass = ORPHAN_CONFIRMED if chain.detached is True and chain.managed_by is None else STALE_CANDIDATE
    return Verdict(classification=klass, evidence=(expired, owner, chain.evidence), heartbeat_age_s=age,
                   lease_status=status, chain=chain)


def counts(classes: Sequence[str]) -> dict[str, int]:
    """{class: n} in the seed's order, every class present."""
    out: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for c in classes:
        if c in out:
            out[c] += 1
    return out


# -- agent sessions (reap-sessions) -----------------------------------------------------------------------------------
DETACHED_HOT = "detached_hot"
SESSION_HOT_CPU_PCT = 20.0  # the reference's threshold for a detached session that needs a human


def session_class(chain: ChainVerdict, cpu_pct: float | None) -> tuple[str, list[str]]:
    """An agent session's class by its leader's parent chain (the same rule as processes: a terminal is not asked)
    and its CPU over the sample: ``detached_hot`` is the one ``reap-sessions`` acts on."""
    evidence = [chain.evidence]
    if chain.detached is not True or chain.managed_by is not None:
        return ("attached" if chain.detached is False else "unknown"), evidence
    if cpu_pct is not None and cpu_pct >= SESSION_HOT_CPU_PCT:
        return DETACHED_HOT, [*evidence, f"cpu {cpu_pct}% over the sample (at least {SESSION_HOT_CPU_PCT:g}%)"]
    return "detached", [*evidence, "cpu unknown" if cpu_pct is None else f"cpu {cpu_pct}% over the sample"]
