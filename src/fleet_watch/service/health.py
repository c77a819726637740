"""Health: memory (with rates over an interval), agent sessions, idle workloads and the GPU memory monitor.

``fleet health`` samples twice, ``sample_s`` apart, re-reading only the few processes it reports on;
``watch`` uses the previous tick as the first sample. Each discovery cycle's monitor is persisted by
``service.last_cycle`` (``gpu_memory_monitor.json``), so that one-shot ``discover`` runs can also compute rates and
alert transitions.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet_watch import clock as clocks
from fleet_watch.core import discovery as dcore
from fleet_watch.core import health as core
from fleet_watch.core import liveness
from fleet_watch.models import ProcessRecord
from fleet_watch.probes.memory import MemoryProbe
from fleet_watch.service.discovery import Discovery, Snapshot
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.last_cycle import load_monitor, previous_memory


@dataclass(slots=True)
class Sample:
    """One observation: the scan plus memory counters, at a monotonic and a wall-clock time."""

    snap: Snapshot
    memory: core.MemoryCounters | None
    wall: float
    cpu: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)  # pid -> (start, cpu_s)

    @classmethod
    def of(cls, snap: Snapshot, memory: core.MemoryCounters | None, wall: float) -> Sample:
        return cls(snap, memory, wall, {p.pid: (p.start_time, p.cpu_s) for p in snap.procs})


def cpu_rates(before: Mapping[int, tuple[float | None, float | None]],
              after: Mapping[int, tuple[float | None, float | None]], interval_s: float) -> dict[int, float]:
    """{pid: CPU % over the interval} for processes present (as the same process) in both samples."""
    out: dict[int, float] = {}
    for pid, (start, cpu_s) in after.items():
        prior = before.get(pid)
        if prior is None or not liveness.same_start(prior[0], start):
            continue
        pct = core.cpu_percent(prior[1], cpu_s, interval_s)
        if pct is not None:
            out[pid] = pct
    return out


def _started(ts: float | None) -> str | None:
    return None if ts is None else clocks.iso_utc(ts)


def sessions_view(disc: Discovery, snap: Snapshot, cpu: Mapping[int, float]) -> list[dict[str, Any]]:
    """Agent sessions, classified by the same rule as ``reap-sessions`` (``core.ownership.session_class``: the
    leader's parent chain, never its terminal, and CPU over the sample): ``detached_hot`` needs attention."""
    from fleet_watch.core import ownership
    from fleet_watch.probes.ancestry import AncestryProbe

    patterns = dcore.compile_session_patterns(disc.fleet.settings.session_patterns)
    index = snap.index
    chains = AncestryProbe()
    out: list[dict[str, Any]] = []
    for m in dcore.find_sessions(snap.procs, patterns):
        proc = index[m.pid]
        details = disc.scanner.details(m.pid, proc.start_time)
        parent = index.get(proc.ppid) if proc.ppid else None
        member_cpu = [cpu[p] for p in m.member_pids if p in cpu]
        cpu_pct = round(sum(member_cpu), 1) if member_cpu else None
        tty = details.tty if details else None
        chain = ownership.parent_chain(chains.facts(m.pid, proc.start_time) if proc.start_time else None)
        klass, evidence = ownership.session_class(chain, cpu_pct)
        attention = klass == ownership.DETACHED_HOT
        if len(m.member_pids) > 1:
            evidence.append(f"{len(m.member_pids)} matched processes collapsed")
        out.append({
            "pid": m.pid, "name": m.name, "kind": m.kind, "start_time": proc.start_time,
            "started": _started(proc.start_time), "uid": proc.uid,
            "rss_mb": sum(index[p].rss_mb or 0 for p in m.member_pids if p in index),
            "cpu_pct": cpu_pct, "tty": tty, "cwd": details.cwd if details else None, "ppid": proc.ppid,
            "parent_name": parent.name if parent else None, "member_pids": sorted(m.member_pids),
            "member_count": len(m.member_pids), "classification": klass, "attention": attention,
            "evidence": evidence,
        })
    out.sort(key=lambda s: (not s["attention"], -(s["cpu_pct"] or 0), -s["rss_mb"], s["pid"]))
    return out


def idle_view(disc: Discovery, snap: Snapshot, cpu: Mapping[int, float],
              servers: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Workloads (discovered, or matching ``idle_patterns``) whose CPU over the sample is near zero, and resident
    models that no request is using on servers that can unload them (``kind: "model"``; ``servers`` are what the
    model servers said, else the scan's Ollama reports). A server's own entry then counts only the memory its listed
    models do not, so the entries' ``reclaimable_mb`` add up without counting anything twice."""
    from fleet_watch.service.servers import idle_model_entries

    models = idle_model_entries(servers if servers is not None else snap.servers.values())
    in_models: dict[int, int] = {}
    for m in models:
        in_models[m["pid"]] = in_models.get(m["pid"], 0) + m["reclaimable_mb"]
    settings = disc.fleet.settings
    idle_res = [re.compile(p, re.I) for p in settings.idle_patterns]
    threshold = settings.idle_cpu_threshold
    workloads = {o.workload.pid: o for o in snap.observed}
    members = {m for o in snap.observed for m in o.workload.member_pids if m != o.workload.pid}
    out: list[dict[str, Any]] = []
    for p in snap.procs:
        if p.pid in members or not p.readable or p.is_zombie or not p.argv:
            continue
        obs = workloads.get(p.pid)
        if obs is None and (dcore.is_observer(p.argv) or not any(r.search(p.cmdline) for r in idle_res)):
            continue
        pids = obs.workload.member_pids if obs else (p.pid,)
        rates = [cpu[m] for m in pids if m in cpu]
        cpu_pct = round(sum(rates), 1) if rates else None
        if not core.is_idle(cpu_pct, threshold):
            continue
        rss = obs.workload.rss_mb if obs else (p.rss_mb or 0)
        gpu = obs.gpu_mb if obs and obs.gpu_source in dcore.MEASURED_GPU_SOURCES else 0
        out.append({
            "kind": "process", "pid": p.pid, "name": obs.workload.name if obs else p.name,
            "command": dcore.redact(p.cmdline)[:200], "cpu_pct": cpu_pct, "rss_mb": rss, "gpu_mb": gpu,
            "reclaimable_mb": rss + max(0, gpu - in_models.get(p.pid, 0)), "started": _started(p.start_time),
            "workload": obs is not None,
        })
    out.extend(models)
    return sorted(out, key=lambda e: (-e["reclaimable_mb"], e["pid"], e["kind"]))


def footprints_view(disc: Discovery, snap: Snapshot, records: Sequence[ProcessRecord]) -> list[dict[str, Any]]:
    claims = {r.pid: r.gpu_mb for r in records}
    out: list[dict[str, Any]] = []
    for o in snap.observed:
        w = o.workload
        measured = o.gpu_source in dcore.MEASURED_GPU_SOURCES
        out.append({
            "pid": w.pid, "name": w.name, "workstream": w.pattern.workstream, "gpu_mb": o.gpu_mb,
            "source": o.gpu_source, "devices": dict(o.gpu_devices), "rss_mb": w.rss_mb,
            "claim_mb": claims.get(w.pid), "estimate_mb": disc.estimate(w.cmdline) if measured else None,
        })
    return out


def devices_view(snap: Snapshot) -> list[dict[str, Any]]:
    return [{"index": d.index, "name": d.name, "total_mb": d.total_mb, "used_mb": d.used_mb, "free_mb": d.free_mb,
             "utilization_pct": d.utilization_pct, "temperature_c": d.temperature_c}
            for d in snap.gpu_devices or []]


def monitor_view(disc: Discovery, cur: Sample, prev_memory: core.MemoryCounters | None, interval_s: float | None,
                 memory_doc: Mapping[str, Any], records: Sequence[ProcessRecord]) -> dict[str, Any]:
    thrash = disc.fleet.settings.gpu_pageout_thrash_threshold
    rate_view = core.pageout_rate(cur.memory, prev_memory, interval_s, thrash)
    devices = devices_view(cur.snap)
    footprints = footprints_view(disc, cur.snap, records)
    fleet = disc.fleet
    budget, _ = fleet.budgets(fleet.ledger(), None)
    alerts = core.build_alerts(memory_label=memory_doc["pressure_label"], memory_pct=memory_doc["pressure_pct"],
                               rate_view=rate_view, devices=devices, footprints=footprints, budget=budget.to_dict())
    return {
        "timestamp_s": cur.wall, "generated_utc": clocks.iso_utc(cur.wall), "pageout_rate": rate_view,
        "thrashing": bool(rate_view and rate_view["thrashing"]), "devices": devices,
        "gpu_process_footprints": footprints, "foreign_gpu_pids": cur.snap.foreign_gpu_pids,
        "target_pids": [f["pid"] for f in footprints if f["gpu_mb"] > 0], "alerts": alerts,
        "memory_counters": None if cur.memory is None else {"pageouts": cur.memory.pageouts,
                                                            "swapins": cur.memory.swapins},
    }


@dataclass(slots=True)
class HealthReport:
    document: dict[str, Any]

    @property
    def critical(self) -> bool:
        return core.is_critical(self.document["gpu_memory_monitor"]["alerts"])


def build_health(disc: Discovery, before: Sample, after: Sample,
                 servers: Sequence[Any] | None = None) -> HealthReport:
    """The README's four keys from two samples (``before`` may be the same scan with fewer PIDs re-read)."""
    interval = max(1e-6, after.snap.taken_at - before.snap.taken_at)
    cpu = cpu_rates(before.cpu, after.cpu, interval)
    thresholds = disc.fleet.settings.pressure_thresholds
    memory = core.memory_view(after.memory, before.memory, interval, thresholds)
    records = disc.fleet.records()
    return HealthReport({
        "memory": memory,
        "sessions": sessions_view(disc, after.snap, cpu),
        "idle": idle_view(disc, after.snap, cpu, servers),
        "gpu_memory_monitor": monitor_view(disc, after, before.memory, interval, memory, records),
    })


def gather_health(fleet: Fleet, *, sample_s: float = 1.0, discovery: Discovery | None = None,
                  memory_probe: MemoryProbe | None = None, sleep: Callable[[float], None] = time.sleep,
                  ) -> HealthReport:
    """Scan once, wait ``sample_s``, re-read CPU time and memory for what the report covers."""
    disc = discovery or Discovery(fleet)
    probe = memory_probe or MemoryProbe()
    mem0 = probe.read()
    snap = disc.scan()
    first = Sample.of(snap, mem0, fleet.clock.now())
    asking = _Asking(fleet, snap)  # the model servers are asked while the sample window runs
    sleep(sample_s)
    watched = _reported_pids(disc, snap)
    again = disc.scanner.cpu_seconds(watched)
    from fleet_watch.probes.scan import monotonic

    later = Snapshot(taken_at=monotonic(), procs=snap.procs, listeners=snap.listeners,
                     listeners_complete=snap.listeners_complete, gpu_devices=snap.gpu_devices,
                     gpu_used=snap.gpu_used, observed=snap.observed, foreign_gpu_pids=snap.foreign_gpu_pids,
                     servers=snap.servers)
    second = Sample(later, probe.read(), fleet.clock.now(), {pid: (s, c) for pid, (s, c) in again.items()})
    return build_health(disc, first, second, asking.result())


class _Asking:
    """The model servers' answers, gathered on a thread (a round is bounded by its deadline)."""

    def __init__(self, fleet: Fleet, snap: Snapshot) -> None:
        from fleet_watch.service.servers import ask, targets_of

        self.servers: list[Any] = []
        self.error: BaseException | None = None
        targets = targets_of([o.workload for o in snap.observed], snap.procs, snap.listeners)

        def run() -> None:
            try:
                self.servers = ask(targets, fleet.settings)
            except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
                self.error = err

        self.thread = threading.Thread(target=run, name="fleet-health-servers", daemon=True)
        self.thread.start()

    def result(self) -> list[Any]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.servers


def _reported_pids(disc: Discovery, snap: Snapshot) -> list[int]:
    """Sessions, workloads and idle-pattern candidates: the only PIDs whose CPU rate the report needs."""
    settings = disc.fleet.settings
    session_res = [re.compile(p.process_match, re.I) for p in settings.session_patterns]
    idle_res = [re.compile(p, re.I) for p in settings.idle_patterns]
    pids = {m for o in snap.observed for m in o.workload.member_pids}
    for p in snap.procs:
        if p.readable and p.argv and (any(r.search(w) for w in dcore.program_words(p.argv) for r in session_res)
                                      or any(r.search(p.cmdline) for r in idle_res)):
            pids.add(p.pid)
    return sorted(pids)


def log_new_alerts(fleet: Fleet, monitor: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[str]:
    """Log one event per *new* alert (a transition, not every cycle); the caller persists the snapshot."""
    before = [str(a.get("key")) for a in (previous or {}).get("alerts", []) if isinstance(a, dict)]
    fresh = core.new_alerts(monitor["alerts"], before)
    if fresh:
        with fleet.writing() as conn:
            for a in fresh:
                event = {"memory_pressure": "MEMORY_PRESSURE", "gpu_budget_overcommitted": "GPU_OVERCOMMIT"}.get(
                    str(a["type"]), "GPU_MEMORY_PRESSURE")
                fleet.event(conn, event, a.get("pid"), None, {"reason": a["type"], **dict(a)})
    return [str(a["key"]) for a in fresh]


def monitor_after_cycle(disc: Discovery, snap: Snapshot, memory: core.MemoryCounters | None,
                        prev: Sample | None) -> dict[str, Any]:
    """The monitor for a discovery cycle: rates against the previous tick, or the persisted snapshot."""
    fleet = disc.fleet
    now = fleet.clock.now()
    stored = load_monitor(fleet.settings.home)
    interval: float | None
    if prev is not None:
        prev_mem, interval = prev.memory, snap.taken_at - prev.snap.taken_at
    else:
        prev_mem, at = previous_memory(stored)
        interval = None if at is None else now - at
    thresholds = fleet.settings.pressure_thresholds
    memory_doc = core.memory_view(memory, prev_mem, interval, thresholds)
    records = fleet.records()
    monitor = monitor_view(disc, Sample.of(snap, memory, now), prev_mem, interval, memory_doc, records)
    monitor["memory"] = memory_doc
    log_new_alerts(fleet, monitor, stored)
    return monitor
