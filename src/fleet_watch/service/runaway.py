"""``fleet runaway``: processes whose CPU over a window stays at or above a threshold; with ``--kill``, only the ones
Fleet Watch owns (registered with the same start time, or in the invoking user's agent sessions) are stopped, each
as one audit event. Everything else on the machine is listed, never touched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_watch.core import inputs, liveness, safety
from fleet_watch.core.discovery import redact
from fleet_watch.errors import UsageError
from fleet_watch.probes.ancestry import own_ancestors
from fleet_watch.probes.scan import ProcessScanner
from fleet_watch.service.acting import GRACE_S, Rights, agent_members, registered_starts, stop_owned
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.reap import cpu_window
from fleet_watch.store import registry

MIN_WINDOW_S = 1.0  # CPU needs a window: with --sustained-seconds 0 (dry run only) it is measured over this
MAX_SUSTAINED_S = 3600.0
MAX_THRESHOLD_PCT = 100_000.0  # percent of one core: a process may use many


@dataclass(slots=True)
class RunawayResult:
    confirmed: bool
    threshold_pct: float
    sustained_s: float
    window_s: float
    flagged: list[dict[str, Any]]
    killed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # flagged, not Fleet Watch's: left alone

    def to_dict(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "cpu_threshold": self.threshold_pct,
                "sustained_seconds": self.sustained_s, "window_seconds": round(self.window_s, 3),
                "flagged_count": len(self.flagged), "flagged": self.flagged, "killed": self.killed,
                "failed": self.failed, "skipped": self.skipped}


def validate(threshold_pct: float, sustained_s: float, kill: bool) -> None:
    inputs.finite(threshold_pct, "--cpu-threshold", high=MAX_THRESHOLD_PCT)
    inputs.finite(sustained_s, "--sustained-seconds", high=MAX_SUSTAINED_S)
    if kill and threshold_pct <= 0:
        raise UsageError("--kill with --cpu-threshold 0 would stop every process Fleet Watch owns; give a threshold")
    if kill and sustained_s <= 0:
        raise UsageError("--kill needs --sustained-seconds above 0 (the window CPU is measured over)")


def runaway(fleet: Fleet, *, threshold_pct: float, sustained_s: float, kill: bool, who: Rights,
            grace_s: float = GRACE_S, scanner: ProcessScanner | None = None,
            sleep: Callable[[float], None] = time.sleep) -> RunawayResult:
    validate(threshold_pct, sustained_s, kill)
    scanner = scanner or ProcessScanner()
    window = max(sustained_s, MIN_WINDOW_S)
    procs, rates, measured = cpu_window(scanner, window, sleep)
    now = fleet.clock.now()
    exclude = {os.getpid(), *own_ancestors()}
    samples = [
        safety.CpuSample(pid=p.pid, start_time=p.start_time, name=p.name[:40], command=redact(p.cmdline)[:200],
                         uid=p.uid, cpu_pct=rates[p.pid], runtime_s=max(0.0, now - p.start_time))
        for p in procs if p.pid in rates and p.start_time is not None and p.pid not in exclude
    ]
    flagged = safety.runaway_flags(samples, threshold_pct=threshold_pct, sustained_s=sustained_s)
    registered = registered_starts(fleet)
    members = agent_members(fleet, procs, who.euid)
    rows: list[dict[str, Any]] = []
    proofs: dict[int, str | None] = {}
    for s in flagged:
        proofs[s.pid] = safety.ownership_proof(s.pid, s.start_time, registered_start=registered.get(s.pid),
                                               agent_session=members.get(s.pid))
        rows.append({"pid": s.pid, "start_time": s.start_time, "name": s.name, "uid": s.uid, "cpu_pct": s.cpu_pct,
                     "runtime_seconds": round(s.runtime_s, 1), "command": s.command,
                     "owned": proofs[s.pid] is not None, "ownership": proofs[s.pid]})
    result = RunawayResult(kill, threshold_pct, sustained_s, measured, rows)
    if not kill:
        return result
    for s, row in zip(flagged, rows, strict=True):
        proof = proofs[s.pid]
        if proof is None:
            result.skipped.append({**row, "reason": "not registered with Fleet Watch nor part of your agent "
                                                    "sessions: left alone"})
            continue
        stopped = stop_owned(s.pid, s.start_time, proof, who, grace_s=grace_s)
        event = "RUNAWAY_KILL" if stopped.gone else "RUNAWAY_KILL_FAILED"
        released = False
        with fleet.writing() as conn:
            record = registry.record_by_pid(conn, s.pid) if stopped.gone else None
            if record is not None and liveness.same_start(record.start_time, s.start_time):
                registry.delete_process(conn, record.record_id)  # its claims go with the process, as reap does
                released = True
            fleet.event(conn, event, s.pid, None, {
                "name": s.name, "start_time": s.start_time, "cpu_pct": s.cpu_pct, "window_seconds": round(measured, 3),
                "cpu_threshold": threshold_pct, "runtime_seconds": round(s.runtime_s, 1), "command": s.command,
                "ownership": proof, "signals": list(stopped.signals), "outcome": stopped.outcome,
                "detail": stopped.reason, "released": released,
            })
        entry = {**row, "signals": list(stopped.signals), "outcome": stopped.outcome, "detail": stopped.reason,
                 "released": released}
        (result.killed if stopped.gone else result.failed).append(
            entry if stopped.gone else {**entry, "reason": stopped.reason})
    return result
