"""``fleet reap`` (orphan-confirmed registered processes) and ``fleet reap-sessions`` (detached agent sessions that burn
CPU). Both are dry runs unless confirmed; every process acted on is re-checked just before its signal, stopped through
``service.acting.stop_owned``, and recorded as one audit event with its evidence and outcome.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_watch.core import discovery as dcore
from fleet_watch.core import liveness, safety
from fleet_watch.core import ownership as core
from fleet_watch.probes import signals
from fleet_watch.probes.ancestry import AncestryProbe
from fleet_watch.probes.scan import ProcessScanner, ProcInfo
from fleet_watch.service.acting import GRACE_S, Rights, agent_members, stop_owned
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.ownership import Classified, classify_records, reconcile
from fleet_watch.store import leases, registry

SESSION_SAMPLE_S = 2.0  # reap-sessions: the CPU window over which a session is "hot"


# -- reap -----------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class ReapResult:
    confirmed: bool
    candidates: list[Classified]
    released: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # no longer orphan-confirmed when re-checked

    def to_dict(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "candidate_count": len(self.candidates),
                "candidates": [c.to_dict() for c in self.candidates], "released": self.released,
                "failed": self.failed, "skipped": self.skipped}


def _recheck(fleet: Fleet, c: Classified) -> Classified | None:
    """The same row, classified again now (a heartbeat may have come, the row may be gone or replaced)."""
    with fleet.reading() as conn:
        row = registry.record_by_id(conn, c.record.record_id)
        all_leases = leases.list_all(conn)
    if row is None or row.pid != c.record.pid or not liveness.same_start(row.start_time, c.record.start_time):
        return None
    return classify_records([row], all_leases, fleet.clock.now())[0]


def reap(fleet: Fleet, *, confirm: bool, who: Rights, grace_s: float = GRACE_S) -> ReapResult:
    """Only ``orphan_confirmed`` processes; with ``confirm``, stop each and release its row."""
    candidates = reconcile(fleet, every_chain=False).orphans()
    result = ReapResult(confirm, candidates)
    if not confirm:
        return result
    for c in candidates:
        rec = c.record
        now = _recheck(fleet, c)
        if now is None or not now.verdict.safe_to_reap:
            result.skipped.append({"pid": rec.pid, "name": rec.name, "reason": "no longer orphan_confirmed: " + (
                "its row changed" if now is None else now.classification)})
            continue
        proof = safety.ownership_proof(rec.pid, rec.start_time, registered_start=now.record.start_time,
                                       agent_session=None)
        stopped = stop_owned(rec.pid, rec.start_time, proof, who, grace_s=grace_s)
        released = False
        with fleet.writing() as conn:
            row = registry.record_by_id(conn, rec.record_id)
            if stopped.gone and row is not None and liveness.same_start(row.start_time, rec.start_time):
                registry.delete_process(conn, rec.record_id)
                released = True
            fleet.event(conn, "REAP", rec.pid, rec.workstream, {
                "reason": core.ORPHAN_CONFIRMED, "name": rec.name, "session_id": rec.session_id,
                "start_time": rec.start_time, "classification": now.classification,
                "evidence": list(now.verdict.evidence), "signals": list(stopped.signals),
                "outcome": stopped.outcome, "detail": stopped.reason, "released": released,
            })
        entry = {"pid": rec.pid, "name": rec.name, "workstream": rec.workstream, "gpu_mb": rec.gpu_mb,
                 **{k: v for k, v in stopped.to_dict().items() if k not in ("pid", "start_time")}}
        if stopped.gone:  # stopped; its row went with it, or was already released (by itself, or another reap)
            result.released.append(entry if released else {**entry, "note": "its row was already released"})
        else:
            result.failed.append({**entry, "reason": stopped.reason})
    return result


# -- reap-sessions ----------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class SessionCandidate:
    pid: int
    kind: str
    name: str
    uid: int | None
    members: list[tuple[int, float]]  # (pid, start_time) of every member, the agent itself first
    cpu_pct: float | None
    rss_mb: int
    classification: str
    evidence: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "kind": self.kind, "name": self.name, "uid": self.uid,
                "member_pids": [p for p, _ in self.members], "cpu_pct": self.cpu_pct, "rss_mb": self.rss_mb,
                "classification": self.classification, "evidence": self.evidence}


def cpu_window(scanner: ProcessScanner, window_s: float, sleep: Callable[[float], None] = time.sleep,
               ) -> tuple[list[ProcInfo], dict[int, float], float]:
    """Every process, and each one's CPU % over ``window_s`` (two samples of its CPU time, not a lifetime average):
    (processes, {pid: percent}, the window measured)."""
    from fleet_watch.service.health import cpu_rates

    procs = scanner.processes()
    began = time.monotonic()
    sleep(window_s)
    again = scanner.cpu_seconds([p.pid for p in procs if p.cpu_s is not None and not p.is_zombie])
    measured = max(1e-6, time.monotonic() - began)
    return procs, cpu_rates({p.pid: (p.start_time, p.cpu_s) for p in procs}, again, measured), measured


def session_candidates(fleet: Fleet, who: Rights, *, sample_s: float = SESSION_SAMPLE_S,
                       scanner: ProcessScanner | None = None, chains: AncestryProbe | None = None,
                       sleep: Callable[[float], None] = time.sleep) -> list[SessionCandidate]:
    """The invoking user's agent sessions (every user's, for root with ``--allow-other-users``) that are detached and
    burn CPU over the sample."""
    procs, rates, _ = cpu_window(scanner or ProcessScanner(), sample_s, sleep)
    probe = chains or AncestryProbe()
    index = {p.pid: p for p in procs}
    patterns = dcore.compile_session_patterns(fleet.settings.session_patterns)
    out: list[SessionCandidate] = []
    for m in dcore.find_sessions(procs, patterns, exclude_pids={os.getpid()}):
        leader = index[m.pid]
        if leader.start_time is None or not (leader.uid == who.euid or who.allow_other_users):
            continue
        rates_of = [rates[p] for p in m.member_pids if p in rates]
        cpu = round(sum(rates_of), 1) if rates_of else None
        chain = core.parent_chain(probe.facts(m.pid, leader.start_time))
        klass, evidence = core.session_class(chain, cpu)
        if klass != core.DETACHED_HOT:
            continue
        if len(m.member_pids) > 1:
            evidence.append(f"{len(m.member_pids)} matched processes collapsed")
        members = [(p, index[p].start_time) for p in m.member_pids if p in index and index[p].start_time is not None]
        out.append(SessionCandidate(pid=m.pid, kind=m.kind, name=m.name, uid=leader.uid,
                                    members=[(p, float(s)) for p, s in members if s is not None], cpu_pct=cpu,
                                    rss_mb=sum(index[p].rss_mb or 0 for p in m.member_pids if p in index),
                                    classification=klass, evidence=evidence))
    return out


@dataclass(slots=True)
class SessionReapResult:
    confirmed: bool
    candidates: list[SessionCandidate]
    killed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "candidate_count": len(self.candidates),
                "candidates": [c.to_dict() for c in self.candidates], "killed": self.killed, "failed": self.failed}


def reap_sessions(fleet: Fleet, *, confirm: bool, who: Rights, grace_s: float = GRACE_S,
                  sample_s: float = SESSION_SAMPLE_S, scanner: ProcessScanner | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> SessionReapResult:
    """With ``confirm``, stop every member of each detached hot session (the agent first, so it restarts nothing)."""
    scanner = scanner or ProcessScanner()
    candidates = session_candidates(fleet, who, sample_s=sample_s, scanner=scanner, sleep=sleep)
    result = SessionReapResult(confirm, candidates)
    if not confirm:
        return result
    for cand in candidates:
        procs_now = scanner.processes()  # the proof, read again just before acting
        starts = {p.pid: p.start_time for p in procs_now}
        # The proof is built for the session's own user: root with --allow-other-users acts on other users'
        # sessions, which the dry run listed (built for root's uid, the proof never held and every stop was refused).
        owner_uid = cand.uid if who.allow_other_users and cand.uid is not None else who.euid
        members_now = agent_members(fleet, procs_now, owner_uid)
        stops: list[signals.StopResult] = []
        for pid, start in cand.members:
            proof = members_now.get(pid) if liveness.same_start(starts.get(pid), start) else None
            stops.append(stop_owned(pid, start, proof, who, grace_s=grace_s))
        success = all(s.gone for s in stops)
        with fleet.writing() as conn:
            fleet.event(conn, "REAP_SESSION", cand.pid, None, {
                "kind": cand.kind, "name": cand.name, "member_pids": [p for p, _ in cand.members],
                "cpu_pct": cand.cpu_pct, "classification": cand.classification, "evidence": cand.evidence,
                "members": [s.to_dict() for s in stops], "success": success,
            })
        entry = {**cand.to_dict(), "members": [s.to_dict() for s in stops]}
        if success:
            result.killed.append(entry)
        else:
            result.failed.append({**entry, "reason": "; ".join(s.reason for s in stops if not s.gone)})
    return result

