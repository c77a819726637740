"""The fleet as Prometheus metric families: data in, families out (no registry globals, no I/O).

Naming follows prometheus.io's conventions: the ``fleet_`` prefix, base units (bytes and seconds; the registry
counts MB = 2^20 bytes), ``_total`` on counters, and labels only of bounded cardinality: workstream, process name,
GPU device, ownership class, alert type, session kind. Never a PID or a session id. Where several processes share
a label set their values are summed, so that ``sum()`` over any label is meaningful.

Imports ``prometheus_client``: only the metrics paths import this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from fleet_watch.reports import fields as f

MIB = 1 << 20


class MetricsData(NamedTuple):
    state: Mapping[str, Any]  # the state document (``status --json``), classifications included
    budgets: Sequence[Mapping[str, Any]]  # per device: device, total_mb, reserve_mb, allocated_mb, available_mb
    conflicts_total: int  # CONFLICT events ever recorded (a counter: it only grows)
    version: str
    watch_cycles_total: int | None = None  # only a running `fleet watch` knows these
    watch_errors_total: int | None = None


def _sum(into: dict[tuple[str, ...], float], key: tuple[str, ...], value: float) -> None:
    into[key] = into.get(key, 0.0) + value


def _gauge(name: str, doc: str, labels: Sequence[str], values: Mapping[tuple[str, ...], float],
           unit: str = "") -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels), unit=unit)
    for key in sorted(values):
        family.add_metric(list(key), values[key])
    return family


def families(data: MetricsData) -> list[Metric]:
    state = data.state
    out: list[Metric] = [InfoMetricFamily("fleet_build", "Fleet Watch version.", value={"version": data.version})]
    out += _process_families(state)
    out += _budget_families(data.budgets)
    out += _monitor_families(state)
    out += _memory_families(f.obj(state, "system_memory"))

    conflicts = CounterMetricFamily("fleet_conflicts_prevented", "Claims refused because another live holder had "
                                    "the resource (CONFLICT events in the audit trail).")
    conflicts.add_metric([], data.conflicts_total)
    out.append(conflicts)

    sessions: dict[tuple[str, ...], float] = {}
    for s in f.rows(state, "sessions"):
        _sum(sessions, (f.text(s.get("kind"), "unknown"), f.text(s.get("classification"), "unknown")), 1)
    out.append(_gauge("fleet_agent_sessions", "Agent CLI sessions seen by the last discovery cycle.",
                      ["kind", "classification"], sessions))
    leases: dict[tuple[str, ...], float] = {}
    for lease in f.rows(state, "session_leases"):
        _sum(leases, (f.text(lease.get("status"), "unknown"),), 1)
    out.append(_gauge("fleet_session_leases", "Session leases by status.", ["status"], leases))

    idle = f.rows(state, "idle_processes")
    out.append(_gauge("fleet_idle_processes", "Workloads idle in the last discovery cycle.", [], {(): len(idle)}))
    out.append(_gauge("fleet_idle_reclaimable_bytes", "Memory that idle workloads hold (RSS plus measured GPU).", [],
                      {(): sum(f.integer(i.get("reclaimable_mb", i.get("rss_mb"))) for i in idle) * MIB}, "bytes"))
    out.append(_gauge("fleet_ports_claimed", "Ports claimed in the registry.", [],
                      {(): len(f.obj(state, "ports_claimed"))}))
    out.append(_gauge("fleet_repos_locked", "Repositories locked (processes and session leases).", [],
                      {(): len(f.obj(state, "repos_locked"))}))

    if data.watch_cycles_total is not None:
        cycles = CounterMetricFamily("fleet_watch_cycles", "Discovery cycles this `fleet watch` has run.")
        cycles.add_metric([], data.watch_cycles_total)
        errors = CounterMetricFamily("fleet_watch_cycle_errors", "Cycles of this `fleet watch` that reported an "
                                     "error (the watch carries on).")
        errors.add_metric([], data.watch_errors_total or 0)
        out += [cycles, errors]
    return out


def _process_families(state: Mapping[str, Any]) -> list[Metric]:
    classes = {k: f.text(c.get("classification"), "unknown") for k, c in f.classes_by_identity(state).items()}
    counts: dict[tuple[str, ...], float] = {}
    claimed: dict[tuple[str, ...], float] = {}
    for p in f.rows(state, "processes"):
        key = f.identity(p)
        klass = classes.get(key, "unknown") if key else "unknown"
        ws, name = f.text(p.get("workstream"), "unknown"), f.text(p.get("name"), "unknown")
        _sum(counts, (ws, klass), 1)
        devices = f.obj(p, "gpu_devices") or ({"all": p.get("gpu_mb")} if f.integer(p.get("gpu_mb")) else {})
        for device, amount in devices.items():
            _sum(claimed, (ws, name, str(device), klass), f.integer(amount) * MIB)
    return [
        _gauge("fleet_processes", "Registered processes by workstream and ownership class.",
               ["workstream", "class"], counts),
        _gauge("fleet_gpu_claimed_bytes", "GPU memory claimed in the registry, by process name and device.",
               ["workstream", "name", "device", "class"], claimed, "bytes"),
    ]


def _budget_families(budgets: Sequence[Mapping[str, Any]]) -> list[Metric]:
    out: list[Metric] = []
    for key, name, doc in (
        ("total_mb", "fleet_gpu_budget_total_bytes", "The GPU ledger's total (the pool, or one device)."),
        ("reserve_mb", "fleet_gpu_budget_reserve_bytes", "Kept back from claims."),
        ("allocated_mb", "fleet_gpu_allocated_bytes", "Claimed by registered processes."),
        ("available_mb", "fleet_gpu_available_bytes", "Still claimable: total - reserve - allocated."),
    ):
        out.append(_gauge(name, doc, ["device"],
                          {(f.text(b.get("device"), str(b.get("device"))),): f.integer(b.get(key)) * MIB
                           for b in budgets}, "bytes"))
    return out


def _monitor_families(state: Mapping[str, Any]) -> list[Metric]:
    monitor = f.obj(state, "gpu_memory_monitor")
    total: dict[tuple[str, ...], float] = {}
    used: dict[tuple[str, ...], float] = {}
    for d in f.rows(monitor, "devices"):
        device = str(f.integer(d.get("index")))
        total[(device,)] = f.integer(d.get("total_mb")) * MIB
        used[(device,)] = f.integer(d.get("used_mb")) * MIB
    rss: dict[tuple[str, ...], float] = {}
    gpu: dict[tuple[str, ...], float] = {}
    for p in f.rows(monitor, "gpu_process_footprints"):
        ws, name = f.text(p.get("workstream"), "unknown"), f.text(p.get("name"), "unknown")
        _sum(rss, (ws, name), f.integer(p.get("rss_mb")) * MIB)
        _sum(gpu, (ws, name, f.text(p.get("source"), "unknown")), f.integer(p.get("gpu_mb")) * MIB)
    alerts: dict[tuple[str, ...], float] = {}
    for a in f.rows(monitor, "alerts"):
        _sum(alerts, (f.text(a.get("type"), "unknown"), f.text(a.get("severity"), "unknown")), 1)
    out: list[Metric] = [
        _gauge("fleet_gpu_memory_total_bytes", "GPU memory of each device (NVML), last cycle.", ["device"], total,
               "bytes"),
        _gauge("fleet_gpu_memory_used_bytes", "GPU memory in use on each device (NVML), last cycle.", ["device"],
               used, "bytes"),
        _gauge("fleet_workload_resident_memory_bytes", "Resident memory of discovered workloads, last cycle.",
               ["workstream", "name"], rss, "bytes"),
        _gauge("fleet_workload_gpu_memory_bytes", "GPU memory of discovered workloads, last cycle (source: nvml, "
               "apple_footprint, estimate or default).", ["workstream", "name", "source"], gpu, "bytes"),
        _gauge("fleet_alerts", "Alerts active in the last cycle.", ["type", "severity"], alerts),
    ]
    cycle = _gauge("fleet_last_cycle_duration_seconds", "Wall time of the last discovery cycle.", [], {}, "seconds")
    at = _gauge("fleet_last_cycle_timestamp_seconds", "When the last discovery cycle ran (Unix time).", [], {},
                "seconds")
    seconds = f.num(monitor.get("cycle_seconds"))
    if seconds is not None:
        cycle.add_metric([], seconds)
    stamp = f.num(monitor.get("timestamp_s"))
    if stamp is not None:
        at.add_metric([], stamp)
    return [*out, cycle, at]


def _memory_families(mem: Mapping[str, Any]) -> list[Metric]:
    values: dict[str, float] = {}
    if mem.get("available") is True:
        for key, name in (("total_mb", "total"), ("available_mb", "available"), ("swap_used_mb", "swap_used")):
            n = f.num(mem.get(key))
            if n is not None:
                values[name] = n * MIB
        pressure = f.num(mem.get("pressure_pct"))
        if pressure is not None and pressure >= 0:
            values["pressure"] = pressure / 100
    out: list[Metric] = []
    for name, doc in (("total", "Physical memory."), ("available", "Memory available without swapping."),
                      ("swap_used", "Swap in use.")):
        out.append(_gauge(f"fleet_memory_{name}_bytes" if name != "swap_used" else "fleet_swap_used_bytes", doc, [],
                          {(): values[name]} if name in values else {}, "bytes"))
    out.append(_gauge("fleet_memory_pressure_ratio", "Memory pressure, 0 to 1 (what the pressure thresholds compare).",
                      [], {(): values["pressure"]} if "pressure" in values else {}))
    return out


class _Fixed(Collector):
    def __init__(self, items: Sequence[Metric]) -> None:
        self.items = list(items)

    def collect(self) -> Iterator[Metric]:
        return iter(self.items)


def registry_of(data: MetricsData) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families(data)))
    return registry


def render(data: MetricsData) -> str:
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry_of(data)).decode("utf-8")
