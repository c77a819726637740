"""A state with every ownership class, two leases and a hostile process name, built through the real
``build_state`` (so the views are tested on the document the service really produces)."""

from __future__ import annotations

from typing import Any

from fleet_watch.models import GpuBudget, ProcessRecord
from fleet_watch.reports.ownership import CLASSES, Classification, Lease, Ownership
from fleet_watch.reports.state import build_state
from tests.helpers.ports import free_port

__all__ = ["free_port"]  # the views tests take it from here with the sample data

NOW = 1_800_000_000.0
HOSTILE = "evil|name\n## Injected [bold]x[/bold] <b>"


def record(i: int, name: str, workstream: str, *, ports: tuple[int, ...] = (), gpu: tuple[tuple[str, int], ...] = (),
           repos: tuple[str, ...] = (), session: str | None = None) -> ProcessRecord:
    return ProcessRecord(
        record_id=i, pid=4000 + i, start_time=NOW - 3600 - i, uid=1000, name=name, workstream=workstream,
        session_id=session or f"cli-{4000 + i}", priority=3, model=None, start_cmd=None, source="manual",
        registered_at="2027-01-15T07:00:00.000000+00:00", last_heartbeat="2027-01-15T07:00:00.000000+00:00",
        ports=ports, repos=repos, gpu=gpu)


RECORDS = [
    record(1, "vllm-main", "research", ports=(8000,), gpu=(("0", 40960),), session="sess-a"),
    record(2, HOSTILE, "research", ports=(8001, 8002), gpu=(("1", 8192),), session="sess-a"),
    record(3, "old-runner", "experiments", gpu=(("0", 4096),), repos=("/srv/repo",), session="sess-b"),
    record(4, "orphan-server", "experiments", ports=(8100,), gpu=(("1", 2048),), session="sess-gone"),
    record(5, "dead-one", "ollama", session="cli-4005"),
]
EVIDENCE = {
    "live": ("active session lease owner PID 77 is alive",),
    "disconnected": ("session lease missing",),
    "stale_candidate": ("process heartbeat expired", "session owner alive"),
    "orphan_confirmed": ("process heartbeat expired", "session lease is closed", "parent chain is detached"),
    "exited": ("registered process is no longer running",),
}
OWNERSHIP = Ownership(
    classes={r.record_id: Classification(classification=c, evidence=EVIDENCE[c]) for r, c in zip(RECORDS, CLASSES,
                                                                                                 strict=True)},
    leases=(Lease(session_id="sess-a", status="ACTIVE", owner_pid=77, repo_dir="/srv/app",
                  started_at="2027-01-15T06:00:00+00:00", last_heartbeat_at="2027-01-15T07:59:00+00:00"),
            Lease(session_id="sess-gone", status="CLOSED", owner_pid=78, closed_at="2027-01-15T07:30:00+00:00")),
)
BUDGETS = [
    {"device": "all", "total_mb": 163840, "reserve_mb": 8192, "allocated_mb": 55296, "available_mb": 100352},
    {"device": "0", "total_mb": 81920, "reserve_mb": 4096, "allocated_mb": 45056, "available_mb": 32768},
    {"device": "1", "total_mb": 81920, "reserve_mb": 4096, "allocated_mb": 10240, "available_mb": 67584},
]
MONITOR: dict[str, Any] = {
    "generated_utc": "2027-01-15T08:00:00.000000+00:00", "timestamp_s": NOW, "cycle_seconds": 0.125,
    "devices": [{"index": 0, "name": "NVIDIA H100", "total_mb": 81559, "used_mb": 50000, "free_mb": 31559},
                {"index": 1, "name": "NVIDIA H100", "total_mb": 81559, "used_mb": 12000, "free_mb": 69559}],
    "gpu_process_footprints": [
        {"pid": 4001, "name": "vLLM", "workstream": "research", "gpu_mb": 39000, "source": "nvml", "rss_mb": 3000},
        {"pid": 4009, "name": "vLLM", "workstream": "research", "gpu_mb": 1000, "source": "nvml", "rss_mb": 500}],
    "alerts": [{"type": "gpu_memory_full", "severity": "warning", "key": "gpu:0"},
               {"type": "process_over_claim", "severity": "warning", "key": "claim:4001", "pid": 4001}],
}
MEMORY = {"available": True, "total_mb": 65536, "available_mb": 30000, "used_mb": 35536, "swap_total_mb": 8192,
          "swap_used_mb": 1024, "pressure_pct": 54, "pressure_label": "OK", "pageouts_per_sec": 0.0}
SESSIONS = [{"pid": 900, "kind": "claude-code", "classification": "detached_hot", "attention": True, "rss_mb": 700,
             "cpu_pct": 55.0, "tty": None, "member_count": 2, "started": "2027-01-15T07:00:00+00:00"},
            {"pid": 901, "kind": "codex", "classification": "attached", "attention": False, "rss_mb": 300,
             "cpu_pct": 1.0, "tty": "pts/1", "member_count": 1, "started": "2027-01-15T07:10:00+00:00"}]
IDLE = [{"pid": 4001, "name": "vLLM", "cpu_pct": 0.0, "rss_mb": 3000, "gpu_mb": 39000, "reclaimable_mb": 42000}]


def state(ownership: Ownership = OWNERSHIP, records: list[ProcessRecord] = RECORDS) -> dict[str, Any]:
    return build_state(
        now=NOW, records=records, alive={r.record_id: r.record_id != 5 for r in records},
        budget=GpuBudget(total_mb=163840, reserve_mb=8192, allocated_mb=55296), preferred_ports=[8000, 8080],
        safe_ports=[8080], recent_events=[], conflicts_24h=3, system_memory=MEMORY, sessions=SESSIONS, idle=IDLE,
        gpu_memory_monitor=MONITOR, ownership=ownership)


