"""Health decisions, pure: memory figures and their pressure label, rates over an interval, session and
idle classification, and the GPU-memory alerts. Parsed values and ``now``/intervals in, plain data out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from fleet_watch.config import PressureThresholds
from fleet_watch.core.discovery import MEASURED_GPU_SOURCES

MIB = 1024 * 1024
GPU_FULL_WARN_PCT = 95.0
GPU_FULL_CRITICAL_PCT = 99.0
ESTIMATE_SLACK = 1.10  # a server may exceed its estimate by 10 % before that is an alert
PSI_ELEVATED_SOME_AVG10 = 20.0  # % of the last 10 s in which some task stalled on memory
PSI_CRITICAL_FULL_AVG10 = 10.0  # % of the last 10 s in which *every* task stalled on memory
LABELS = ("OK", "ELEVATED", "CRITICAL")


class MemoryCounters(NamedTuple):
    """One memory reading, platform-neutral. MB are 2^20 bytes; pageouts/swapins are raw page counters."""

    source: str  # "linux-proc", "linux-cgroup-v2", "linux-cgroup-v1", "darwin"
    total_mb: int
    available_mb: int
    free_mb: int
    active_mb: int | None
    inactive_mb: int | None
    compressed_mb: int | None
    wired_mb: int | None
    swap_total_mb: int | None
    swap_used_mb: int | None
    pageouts: int | None
    swapins: int | None
    pressure_basis_mb: int  # what counts as "in use" for pressure_pct
    psi: Mapping[str, float | None] | None = None
    cgroup: Mapping[str, Any] | None = None
    os_pressure_level: int | None = None  # macOS kern.memorystatus_vm_pressure_level (1, 2, 4)

    @property
    def used_mb(self) -> int:
        return max(0, self.total_mb - self.available_mb)

    @property
    def pressure_pct(self) -> int:
        return round(100 * self.pressure_basis_mb / self.total_mb) if self.total_mb > 0 else -1


def _mb(value: int | None) -> int | None:
    return None if value is None else int(value // MIB)


def linux_counters(
    meminfo: Mapping[str, int] | None, vmstat: Mapping[str, int] | None, psi: Mapping[str, float | None] | None,
    cgroup: Mapping[str, Any] | None,
) -> MemoryCounters | None:
    """From ``/proc/meminfo`` (bytes), ``/proc/vmstat`` and PSI; a cgroup limit below RAM replaces the totals."""
    if not meminfo or "MemTotal" not in meminfo:
        return None
    total = meminfo["MemTotal"]
    available = meminfo.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = meminfo.get("MemFree", 0) + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
    free = meminfo.get("MemFree", 0)
    source = "linux-proc"
    cg_view: dict[str, Any] | None = None
    if cgroup and cgroup.get("limit_bytes") and cgroup["limit_bytes"] < total:
        limit = int(cgroup["limit_bytes"])
        usage = int(cgroup.get("usage_bytes") or 0)
        reclaimable = int(cgroup.get("inactive_file_bytes") or 0)
        used = max(0, usage - reclaimable)
        total, available = limit, max(0, min(limit - used, available))
        free = max(0, min(free, limit - usage))
        source = f"linux-cgroup-v{cgroup.get('version', 2)}"
        cg_view = {"version": cgroup.get("version"), "path": cgroup.get("path"), "limit_mb": limit // MIB,
                   "usage_mb": usage // MIB}
    swap_total = meminfo.get("SwapTotal")
    swap_free = meminfo.get("SwapFree")
    vm = vmstat or {}
    return MemoryCounters(
        source=source, total_mb=total // MIB, available_mb=available // MIB, free_mb=free // MIB,
        active_mb=_mb(meminfo.get("Active")), inactive_mb=_mb(meminfo.get("Inactive")),
        compressed_mb=_mb(meminfo.get("Zswap")), wired_mb=_mb(meminfo.get("Unevictable")),
        swap_total_mb=_mb(swap_total),
        swap_used_mb=None if swap_total is None or swap_free is None else (swap_total - swap_free) // MIB,
        pageouts=vm.get("pswpout"), swapins=vm.get("pswpin"),
        pressure_basis_mb=(total - available) // MIB, psi=psi, cgroup=cg_view,
    )


def darwin_counters(
    page_size: int, pages: Mapping[str, int], memsize_bytes: int | None, *, swap_total_mb: float | None = None,
    swap_used_mb: float | None = None, pressure_level: int | None = None,
) -> MemoryCounters | None:
    """From ``vm_stat`` page counts and ``sysctl`` values. Pressure = (active + wired + compressed) / RAM,
    with the compressor's *physical* pages ("occupied by compressor"), not the logical ones it stores."""
    if not memsize_bytes or "Pages free" not in pages:
        return None

    def mb(label: str) -> int:
        return pages.get(label, 0) * page_size // MIB

    total = memsize_bytes // MIB
    compressed = mb("Pages occupied by compressor")
    available = mb("Pages free") + mb("Pages inactive") + mb("Pages speculative")
    return MemoryCounters(
        source="darwin", total_mb=total, available_mb=min(available, total), free_mb=mb("Pages free"),
        active_mb=mb("Pages active"), inactive_mb=mb("Pages inactive"), compressed_mb=compressed,
        wired_mb=mb("Pages wired down"),
        swap_total_mb=None if swap_total_mb is None else int(swap_total_mb),
        swap_used_mb=None if swap_used_mb is None else int(swap_used_mb),
        pageouts=pages.get("Pageouts"), swapins=pages.get("Swapins"),
        pressure_basis_mb=mb("Pages active") + mb("Pages wired down") + compressed, os_pressure_level=pressure_level,
    )


def pressure_label(mem: MemoryCounters | None, thresholds: PressureThresholds) -> str:
    """``pressure_thresholds`` on pressure_pct, raised (never lowered) by what the kernel itself reports:
    macOS pressure level 2/4, or Linux PSI stalls."""
    if mem is None or mem.total_mb <= 0:
        return "UNAVAILABLE"
    pct = mem.pressure_pct
    level = 2 if pct >= thresholds.critical else 1 if pct >= thresholds.elevated else 0
    if mem.os_pressure_level is not None:
        level = max(level, 2 if mem.os_pressure_level >= 4 else 1 if mem.os_pressure_level >= 2 else 0)
    if mem.psi:
        full = mem.psi.get("full_avg10")
        some = mem.psi.get("some_avg10")
        if full is not None and full >= PSI_CRITICAL_FULL_AVG10:
            level = 2
        elif some is not None and some >= PSI_ELEVATED_SOME_AVG10:
            level = max(level, 1)
    return LABELS[level]


def rate(cur: int | None, prev: int | None, interval_s: float | None) -> float | None:
    if cur is None or prev is None or not interval_s or interval_s <= 0:
        return None
    return round(max(0, cur - prev) / interval_s, 1)


def pageout_rate(
    cur: MemoryCounters | None, prev: MemoryCounters | None, interval_s: float | None, thrash_per_s: float,
) -> dict[str, Any] | None:
    """Page-out and swap-in rates over the interval; ``thrashing`` above the configured page-outs/s."""
    if cur is None or prev is None or not interval_s or interval_s <= 0:
        return None
    if cur.pageouts is None or prev.pageouts is None:
        return None
    per_s = rate(cur.pageouts, prev.pageouts, interval_s) or 0.0
    swapins = rate(cur.swapins, prev.swapins, interval_s)
    return {
        "pageout_delta": max(0, cur.pageouts - prev.pageouts),
        "swapin_delta": None if cur.swapins is None or prev.swapins is None else max(0, cur.swapins - prev.swapins),
        "interval_seconds": round(interval_s, 1), "pageouts_per_sec": per_s, "swapins_per_sec": swapins,
        "thrashing": per_s > thrash_per_s,
    }


def memory_view(
    cur: MemoryCounters | None, prev: MemoryCounters | None, interval_s: float | None,
    thresholds: PressureThresholds,
) -> dict[str, Any]:
    label = pressure_label(cur, thresholds)
    if cur is None:
        return {"available": False, "source": None, "total_mb": 0, "available_mb": None, "used_mb": None,
                "pressure_pct": -1, "pressure_label": label, "pageouts": None, "swapins": None,
                "pageouts_per_sec": None, "swapins_per_sec": None, "interval_seconds": None}
    return {
        "available": True, "source": cur.source, "total_mb": cur.total_mb, "available_mb": cur.available_mb,
        "used_mb": cur.used_mb, "free_mb": cur.free_mb, "active_mb": cur.active_mb, "inactive_mb": cur.inactive_mb,
        "compressed_mb": cur.compressed_mb, "wired_mb": cur.wired_mb, "swap_total_mb": cur.swap_total_mb,
        "swap_used_mb": cur.swap_used_mb, "pressure_pct": cur.pressure_pct, "pressure_label": label,
        "pageouts": cur.pageouts, "swapins": cur.swapins,
        "pageouts_per_sec": rate(cur.pageouts, prev.pageouts if prev else None, interval_s),
        "swapins_per_sec": rate(cur.swapins, prev.swapins if prev else None, interval_s),
        "interval_seconds": None if not interval_s else round(interval_s, 1),
        "psi": None if cur.psi is None else dict(cur.psi), "cgroup": None if cur.cgroup is None else dict(cur.cgroup),
        "os_pressure_level": cur.os_pressure_level,
    }


def cpu_percent(prev_cpu_s: float | None, cur_cpu_s: float | None, interval_s: float) -> float | None:
    """CPU use over the interval (100 = one core busy), not psutil's lifetime average."""
    if prev_cpu_s is None or cur_cpu_s is None or interval_s <= 0:
        return None
    return round(max(0.0, cur_cpu_s - prev_cpu_s) / interval_s * 100, 1)



def is_idle(cpu_pct: float | None, threshold: float) -> bool:
    return cpu_pct is not None and cpu_pct <= threshold


def build_alerts(
    *, memory_label: str, memory_pct: int, rate_view: Mapping[str, Any] | None,
    devices: Sequence[Mapping[str, Any]], footprints: Sequence[Mapping[str, Any]],
    budget: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Swap thrash, a GPU above 95 %, a process above its claim, a model server above its estimate, memory
    pressure, and a ledger whose measured claims exceed its budget (discovery records what it measures, even past
    the budget, and says so here rather than silently). ``severity`` is ``critical`` or ``warning``; critical makes
    ``health`` exit 8."""
    alerts: list[dict[str, Any]] = []
    if budget is not None and budget["available_mb"] < 0:
        alerts.append({"type": "gpu_budget_overcommitted", "severity": "warning", "key": "budget",
                       "allocated_mb": budget["allocated_mb"], "over_mb": -budget["available_mb"],
                       "allocatable_mb": budget["total_mb"] - budget["reserve_mb"]})
    if memory_label in ("ELEVATED", "CRITICAL"):
        alerts.append({"type": "memory_pressure", "severity": "critical" if memory_label == "CRITICAL" else "warning",
                       "key": "memory", "label": memory_label, "pressure_pct": memory_pct})
    if rate_view and rate_view.get("thrashing"):
        alerts.append({"type": "swap_thrashing", "severity": "critical", "key": "swap",
                       "pageouts_per_sec": rate_view.get("pageouts_per_sec"), "pageout_rate": dict(rate_view)})
    for d in devices:
        total, used = d.get("total_mb") or 0, d.get("used_mb") or 0
        pct = 100.0 * used / total if total else 0.0
        if pct > GPU_FULL_WARN_PCT:
            alerts.append({"type": "gpu_memory_full", "key": f"gpu:{d.get('index')}",
                           "severity": "critical" if pct >= GPU_FULL_CRITICAL_PCT else "warning",
                           "device": d.get("index"), "name": d.get("name"), "used_mb": used, "total_mb": total,
                           "used_pct": round(pct, 1)})
    for f in footprints:
        measured = f.get("source") in MEASURED_GPU_SOURCES
        used, claim, estimate = f.get("gpu_mb") or 0, f.get("claim_mb"), f.get("estimate_mb")
        if measured and claim and used > claim and used - claim > 64:
            alerts.append({"type": "process_over_claim", "severity": "warning", "key": f"claim:{f['pid']}",
                           "pid": f["pid"], "name": f.get("name"), "used_mb": used, "claim_mb": claim})
        if measured and estimate and used > estimate * ESTIMATE_SLACK:
            alerts.append({"type": "process_over_estimate", "severity": "warning", "key": f"estimate:{f['pid']}",
                           "pid": f["pid"], "name": f.get("name"), "used_mb": used, "estimate_mb": estimate})
    return alerts


def is_critical(alerts: Sequence[Mapping[str, Any]]) -> bool:
    return any(a.get("severity") == "critical" for a in alerts)


def new_alerts(alerts: Sequence[Mapping[str, Any]], previous_keys: Sequence[str]) -> list[Mapping[str, Any]]:
    """Alerts that were not raised in the previous snapshot: each logs one event, on the transition."""
    before = set(previous_keys)
    return [a for a in alerts if a.get("key") not in before]
