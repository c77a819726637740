"""One discovery cycle: scan the machine, decide (core.discovery), apply in one ``BEGIN IMMEDIATE``
transaction with one audit event per change. Observes only: it never signals a process.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fleet_watch import clock as clocks
from fleet_watch.core import discovery as core
from fleet_watch.core.servers import api_for
from fleet_watch.errors import FleetError
from fleet_watch.models import GPU_POOL, ProcessRecord
from fleet_watch.probes.nvml import GpuDevice, GpuProbe
from fleet_watch.probes.processes import death_reason
from fleet_watch.probes.scan import Listener, ProcessScanner, ProcInfo, is_apple_silicon
from fleet_watch.service.fleet import Fleet
from fleet_watch.store import discovery as store
from fleet_watch.store import registry
from fleet_watch.store.connection import savepoint

SOURCE = "discover"


def estimate_for_command(settings: Any, cmdline: str) -> int | None:
    """The estimator's working-set figure for a command line, or ``None`` when it cannot tell.

    Imported lazily (the estimator is heavy); a command line it cannot read gives no figure, and discovery falls
    back to the pattern's default (and says so in ``gpu_source``).
    """
    from fleet_watch.service.estimate import estimate_from_command

    try:
        value = estimate_from_command(settings, cmdline)
    except (FleetError, OSError, ValueError, OverflowError, RecursionError):
        # Another process's command line and files are hostile input: an odd one costs that process its
        # estimate (it falls back to the pattern default, and says so), never the cycle.
        return None
    return int(value) if isinstance(value, int | float) and value > 0 else None


def claim_devices(obs: core.Observed, configured: Mapping[str, object]) -> dict[str, int]:
    """The GPU claim rows for an observed workload: per device where ``gpu_devices`` budgets are configured
    and NVML says which device holds what; the single pool otherwise."""
    if obs.gpu_mb <= 0:
        return {}
    if configured and obs.gpu_devices and all(dev in configured for dev in obs.gpu_devices):
        return {dev: mb for dev, mb in obs.gpu_devices.items() if mb > 0}
    return {GPU_POOL: obs.gpu_mb}


@dataclass(slots=True)
class Snapshot:
    """What one scan saw, kept for health and for the next cycle's CPU rates."""

    taken_at: float  # monotonic seconds
    procs: list[ProcInfo]
    listeners: list[Listener]
    listeners_complete: bool
    gpu_devices: list[GpuDevice] | None
    gpu_used: dict[int, dict[str, int]]  # pid -> {device: MB}
    observed: list[core.Observed]
    foreign_gpu_pids: list[int]  # NVML PIDs with no process here (another PID namespace, a container)
    servers: dict[int, Any] = field(default_factory=dict)  # Ollama workload pid -> what its /api/ps said

    @property
    def index(self) -> dict[int, ProcInfo]:
        return {p.pid: p for p in self.procs}


def death_in_scan(pid: int, start_time: float, index: Mapping[int, ProcInfo]) -> str | None:
    """Why a registered process is gone, from a process table just scanned (None: alive); a PID the scan did not
    see (hidepid, a race) is asked of the kernel directly."""
    reason = core.liveness(start_time, index.get(pid))
    if reason == "absent":
        reason = death_reason(pid, start_time)
    return reason


@dataclass(slots=True)
class CycleResult:
    added: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0
    snapshot: Snapshot | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.skipped)

    def to_dict(self) -> dict[str, Any]:
        snap = self.snapshot
        held = [] if snap is None else [
            {"port": lst.port, "address": lst.address, "uid": lst.uid} for lst in snap.listeners if lst.pid is None
        ]
        return {
            "added": self.added, "updated": self.updated, "removed": self.removed, "skipped": self.skipped,
            "heartbeats": self.heartbeats,
            "workloads": [] if snap is None else [observed_view(o) for o in snap.observed],
            "unattributed_listeners": sorted(held, key=lambda h: (h["port"], h["address"])),
            "listeners_complete": None if snap is None else snap.listeners_complete,
            "processes_scanned": 0 if snap is None else len(snap.procs),
            "unreadable_processes": 0 if snap is None else sum(1 for p in snap.procs if not p.readable),
            "foreign_gpu_pids": [] if snap is None else snap.foreign_gpu_pids,
        }


def observed_view(o: core.Observed) -> dict[str, Any]:
    w = o.workload
    return {
        "pid": w.pid, "start_time": w.start_time, "name": w.name, "workstream": w.pattern.workstream,
        "priority": w.pattern.priority, "model": w.model, "ports": list(w.ports), "gpu_mb": o.gpu_mb,
        "gpu_source": o.gpu_source, "gpu_devices": dict(o.gpu_devices), "member_pids": list(w.member_pids),
        "rss_mb": w.rss_mb, "uid": w.uid, "command": w.cmdline[:500],
    }


class Discovery:
    """Holds the probes (and their warm caches) across cycles; ``watch`` keeps one for its lifetime."""

    def __init__(self, fleet: Fleet, *, scanner: ProcessScanner | None = None, gpu: GpuProbe | None = None) -> None:
        self.fleet = fleet
        self.scanner = scanner or ProcessScanner()
        if gpu is None:
            from fleet_watch.probes.nvml import NvmlProbe

            gpu = NvmlProbe()
        self.gpu = gpu
        self._estimates: dict[str, int | None] = {}
        self.apple = is_apple_silicon()

    # -- observe ------------------------------------------------------------------------------------------
    def scan(self) -> Snapshot:
        settings = self.fleet.settings
        patterns = core.compile_patterns(settings.patterns)
        procs = self.scanner.processes()
        taken = clocks_monotonic()
        candidates = [p.pid for p in procs if core.match_pattern(p, patterns) is not None]
        listeners, complete = self.scanner.listeners(candidates)
        ports_by_pid: dict[int, set[int]] = {}
        for lst in listeners:
            if lst.pid is not None:
                ports_by_pid.setdefault(lst.pid, set()).add(lst.port)
        workloads = core.find_workloads(procs, patterns, ports_by_pid, exclude_pids={os.getpid()})

        devices = self.gpu.devices()
        gpu_used: dict[int, dict[str, int]] = {}
        if devices is not None:
            for gp in self.gpu.processes():
                if gp.used_mb is not None:
                    per = gpu_used.setdefault(gp.pid, {})
                    per[str(gp.device)] = per.get(str(gp.device), 0) + gp.used_mb
        known = {p.pid for p in procs}
        foreign = sorted(pid for pid in gpu_used if pid not in known)
        parent = {p.pid: p.ppid for p in procs}
        by_workload = core.attribute_gpu(workloads, gpu_used, parent)
        servers = self._ollama(workloads, procs, listeners)
        observed = [self._observe(w, devices, by_workload.get(w.pid), bool(foreign), servers.get(w.pid))
                    for w in workloads]
        return Snapshot(taken_at=taken, procs=procs, listeners=listeners, listeners_complete=complete,
                        gpu_devices=devices, gpu_used=gpu_used, observed=observed, foreign_gpu_pids=foreign,
                        servers=servers)

    def _ollama(self, workloads: list[core.Workload], procs: list[ProcInfo], listeners: list[Listener]
                ) -> dict[int, Any]:
        """Ollama's own report of its loaded models (one parallel round, only for Ollama-pattern workloads)."""
        if not any(api_for(w.cmdline) == "ollama" for w in workloads):
            return {}
        from fleet_watch.service.servers import ollama_reports

        return ollama_reports(self.fleet.settings, workloads, procs, listeners)

    def _observe(self, w: core.Workload, devices: list[GpuDevice] | None, nvml: Mapping[str, int] | None,
                 has_foreign: bool, server: Any = None) -> core.Observed:
        server_mb: int | None = None
        if server is not None:
            from fleet_watch.service.servers import resident_vram_mb

            server_mb = resident_vram_mb(server)
        nvml_mb: int | None = None
        if devices is not None and (nvml or not has_foreign):
            # With a driver present, a workload absent from NVML's lists uses no GPU memory, unless some
            # GPU PIDs are unknown here (a container without --pid=host): then NVML cannot speak for it.
            nvml_mb = sum((nvml or {}).values())
        footprint: int | None = None
        if nvml_mb is None and server_mb is None and self.apple:
            parts = [self.scanner.footprint_mb(pid) for pid in w.member_pids]
            footprint = sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None
        reserved = w.pattern.gpu_mb_reserved
        unmeasured = nvml_mb is None and server_mb is None and footprint is None
        estimate = self.estimate(w.cmdline) if unmeasured and reserved is None else None
        mb, source = core.resolve_gpu(nvml_mb=nvml_mb, footprint_mb=footprint, estimate_mb=estimate,
                                      default_mb=w.pattern.gpu_mb_default, server_mb=server_mb, reserved_mb=reserved)
        return core.Observed(workload=w, gpu_mb=mb, gpu_source=source, gpu_devices=dict(nvml or {}))

    def estimate(self, cmdline: str) -> int | None:
        """The estimator's figure for a command line, cached for the life of this object (watch)."""
        key = core.estimate_key(cmdline)
        if key not in self._estimates:
            self._estimates[key] = estimate_for_command(self.fleet.settings, cmdline)
        return self._estimates[key]

    # -- decide and apply ---------------------------------------------------------------------------------
    def cycle(self, snap: Snapshot | None = None) -> CycleResult:
        snap = snap or self.scan()
        fleet = self.fleet
        now_iso = clocks.iso_utc(fleet.clock.now())
        index = snap.index
        result = CycleResult(snapshot=snap)
        with fleet.writing() as conn:
            records = registry.list_records(conn)
            death = {rec.record_id: death_in_scan(rec.pid, rec.start_time, index) for rec in records}
            plan = core.plan_changes(snap.observed, records, death, SOURCE)
            live = {r.record_id: r for r in records if death[r.record_id] is None}
            for rm in plan.removals:
                self._remove(conn, rm, result)
                live.pop(rm.record.record_id, None)
            store.touch_heartbeats(conn, [rid for rid in plan.heartbeats if rid in live], now_iso)
            result.heartbeats = sum(1 for rid in plan.heartbeats if rid in live)
            for up in plan.updates:
                self._one(conn, up.observed, result, partial(self._update, conn, up, live, now_iso, result))
            for obs in plan.adds:
                self._one(conn, obs, result, partial(self._add, conn, obs, live, now_iso, result))
        return result

    @staticmethod
    def _one(conn: sqlite3.Connection, obs: core.Observed, result: CycleResult, apply: Callable[[], None]) -> None:
        """One workload's change, undone alone if something about it cannot be stored (an absurd figure, text that
        is not UTF-8): it costs that item a reason in ``skipped``, never the cycle."""
        try:
            with savepoint(conn):
                apply()
        except (sqlite3.Error, ValueError, OverflowError) as err:  # UnicodeError is a ValueError
            w = obs.workload
            result.skipped.append({"pid": w.pid, "name": w.name, "port": None,
                                   "reason": f"not stored: {type(err).__name__}: {err}"[:300]})

    def _event(self, conn: sqlite3.Connection, event_type: str, pid: int, workstream: str,
               detail: dict[str, Any]) -> None:
        self.fleet.event(conn, event_type, pid, workstream, {"source": SOURCE, **detail})

    def _remove(self, conn: sqlite3.Connection, rm: core.Removal, result: CycleResult) -> None:
        rec = rm.record
        registry.delete_process(conn, rec.record_id)
        event = "RELEASE" if rm.reason == "no_longer_matches" else "CLEAN"
        self._event(conn, event, rec.pid, rec.workstream, {
            "name": rec.name, "reason": rm.reason, "ports": list(rec.ports), "gpu_mb": rec.gpu_mb,
        })
        result.removed.append({"pid": rec.pid, "name": rec.name, "reason": rm.reason, "ports": list(rec.ports),
                               "registered_by": rec.source})

    @staticmethod
    def _blocked_ports(conn: sqlite3.Connection, pid: int, ports: tuple[int, ...], live: Mapping[int, ProcessRecord]
                       ) -> dict[int, ProcessRecord]:
        """Ports of ``ports`` that another live registered process claims: {port: holder}."""
        out: dict[int, ProcessRecord] = {}
        for port, rid in store.port_holders(conn, ports).items():
            holder = live.get(rid)
            if holder is not None and holder.pid != pid:
                out[port] = holder
        return out

    def _conflict(self, conn: sqlite3.Connection, obs: core.Observed, blocked: Mapping[int, ProcessRecord],
                  result: CycleResult) -> None:
        w = obs.workload
        for port, holder in sorted(blocked.items()):
            reason = f"port {port} claimed by PID {holder.pid} ({holder.name})"
            result.skipped.append({"pid": w.pid, "name": w.name, "port": port, "reason": reason})
            if not store.conflict_logged(conn, pid=w.pid, start_time=w.start_time, port=port):
                self._event(conn, "CONFLICT", w.pid, w.pattern.workstream, {
                    "name": w.name, "resource": "port", "port": port, "reason": reason, "holder_pid": holder.pid,
                    "start_time": w.start_time,
                })

    def _add(self, conn: sqlite3.Connection, obs: core.Observed, live: dict[int, ProcessRecord], now_iso: str,
             result: CycleResult) -> None:
        w = obs.workload
        blocked = self._blocked_ports(conn, w.pid, w.ports, live)
        if blocked:
            self._conflict(conn, obs, blocked, result)
            return
        gpu = claim_devices(obs, self.fleet.settings.gpu_devices)
        # A port that a reservation holds stays the reservation's: its session's `register` takes it over.
        reserved = store.held_without_process(conn, w.ports)
        record_id = store.insert_discovered(
            conn, pid=w.pid, start_time=w.start_time, uid=w.uid, name=w.name,
            workstream=w.pattern.workstream, priority=w.pattern.priority, model=w.model, start_cmd=w.cmdline,
            ports=[p for p in w.ports if p not in reserved], gpu=gpu, basis=core.gpu_basis(obs.gpu_source), at=now_iso,
        )
        self._event(conn, "REGISTER", w.pid, w.pattern.workstream, {
            "name": w.name, "start_time": w.start_time, "port": w.ports[0] if w.ports else None,
            "ports": list(w.ports), "gpu_mb": obs.gpu_mb, "gpu_source": obs.gpu_source,
            "gpu_devices": dict(obs.gpu_devices), "model": w.model, "member_pids": list(w.member_pids),
        })
        record = registry.record_by_id(conn, record_id)
        if record is not None:
            live[record_id] = record
        result.added.append({"pid": w.pid, "name": w.name, "ports": list(w.ports), "gpu_mb": obs.gpu_mb,
                             "gpu_source": obs.gpu_source})

    def _update(self, conn: sqlite3.Connection, up: core.Update, live: dict[int, ProcessRecord], now_iso: str,
                result: CycleResult) -> None:
        rec, obs = up.record, up.observed
        blocked = self._blocked_ports(conn, rec.pid, up.ports_added, live)
        if blocked:
            self._conflict(conn, obs, blocked, result)
        reserved = store.held_without_process(conn, up.ports_added)
        added = tuple(p for p in up.ports_added if p not in blocked and p not in reserved)
        if not (added or up.ports_removed or up.gpu_changed):
            return
        store.remove_ports(conn, rec.record_id, up.ports_removed)
        store.add_ports(conn, rec.record_id, added, now_iso)
        if up.gpu_changed:
            store.set_gpu(conn, rec.record_id, claim_devices(obs, self.fleet.settings.gpu_devices),
                          core.gpu_basis(obs.gpu_source), now_iso)
        ports = sorted((set(rec.ports) - set(up.ports_removed)) | set(added))
        detail: dict[str, Any] = {"name": rec.name, "ports": ports, "ports_added": list(added),
                  "ports_removed": list(up.ports_removed)}
        if up.gpu_changed:
            detail.update(gpu_mb=obs.gpu_mb, previous_gpu_mb=rec.gpu_mb, gpu_source=obs.gpu_source,
                          gpu_devices=dict(obs.gpu_devices))
        self._event(conn, "UPDATE", rec.pid, rec.workstream, detail)
        result.updated.append({"pid": rec.pid, **detail})


def clocks_monotonic() -> float:
    from fleet_watch.probes.scan import monotonic

    return monotonic()
