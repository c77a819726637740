"""The state document: the README's ``state.json`` key set, built from values the service gathered.

Ownership (each process's class with its evidence, the session leases) arrives as data (``reports.ownership``).
``repos_locked`` maps a repo to its holder's PID, or to ``null`` for a lock held by an external resource's claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fleet_watch.clock import iso_utc
from fleet_watch.models import Event, GpuBudget, ProcessRecord
from fleet_watch.reports.ownership import STALE_CLASSES, Ownership

AGENT_INTERFACE = "fleet guard --json"


def process_view(rec: ProcessRecord, alive: bool | None) -> dict[str, Any]:
    return {
        "pid": rec.pid,
        "start_time": rec.start_time,
        "uid": rec.uid,
        "name": rec.name,
        "workstream": rec.workstream,
        "session_id": rec.session_id,
        "priority": rec.priority,
        "port": rec.ports[0] if rec.ports else None,
        "ports": list(rec.ports),
        "repo_dir": rec.repos[0] if rec.repos else None,
        "repos": list(rec.repos),
        "gpu_mb": rec.gpu_mb,
        "gpu_basis": rec.gpu_basis,
        "gpu_devices": _per_device(rec),
        "model": rec.model,
        "start_cmd": rec.start_cmd,
        "source": rec.source,
        "registered_at": rec.registered_at,
        "last_heartbeat": rec.last_heartbeat,
        "alive": alive,
    }


def _per_device(rec: ProcessRecord) -> dict[str, int]:
    out: dict[str, int] = {}
    for device, mb in rec.gpu:
        out[device] = out.get(device, 0) + mb
    return out


def classification_view(rec: ProcessRecord, ownership: Ownership) -> dict[str, Any]:
    """The identity of the process, its class, the evidence, and whether it is safe to stop."""
    c = ownership.classes[rec.record_id]
    return {"pid": rec.pid, "start_time": rec.start_time, "name": rec.name, "workstream": rec.workstream,
            "session_id": rec.session_id, "classification": c.classification, "evidence": list(c.evidence),
            "safe_to_stop": c.safe_to_stop}


def event_view(ev: Event) -> dict[str, Any]:
    return {"id": ev.seq, "timestamp": ev.timestamp, "event_type": ev.event_type, "pid": ev.pid,
            "workstream": ev.workstream, "detail": ev.detail, "hash": ev.hash}


def build_state(
    *, now: float, records: Sequence[ProcessRecord], alive: Mapping[int, bool | None], budget: GpuBudget,
    preferred_ports: Sequence[int], safe_ports: Sequence[int], recent_events: Sequence[Event],
    conflicts_24h: int, system_memory: Mapping[str, Any] | None = None,
    sessions: Sequence[Mapping[str, Any]] = (), idle: Sequence[Mapping[str, Any]] = (),
    gpu_memory_monitor: Mapping[str, Any] | None = None, ownership: Ownership | None = None,
    external_resources: Sequence[Mapping[str, Any]] = (), external_repo_locks: Sequence[str] = (),
    ports_claimed: Mapping[int, int | None] | None = None, repos_locked: Mapping[str, int | None] | None = None,
) -> dict[str, Any]:
    """``ports_claimed``/``repos_locked``, when given, are the ledger's (every live holder: processes, leases,
    reservations, external claims); otherwise they are derived from the live registered processes."""
    ordered = sorted(records, key=lambda r: (-r.priority, r.registered_at))
    live = [r for r in ordered if alive.get(r.record_id) is not False]
    owned = ownership or Ownership()
    classified = [classification_view(r, owned) for r in ordered if r.record_id in owned.classes]
    locked: dict[str, int | None] = ({repo: r.pid for r in live for repo in r.repos} if repos_locked is None
                                     else dict(repos_locked))
    for lease in owned.leases:
        if lease.is_active and lease.repo_dir is not None:
            locked.setdefault(lease.repo_dir, lease.owner_pid)
    locked.update({repo: None for repo in external_repo_locks if repo not in locked})
    ports = ({str(p): r.pid for r in live for p in r.ports} if ports_claimed is None
             else {str(p): pid for p, pid in sorted(ports_claimed.items())})
    return {
        "agent_interface": AGENT_INTERFACE,
        "generated_utc": iso_utc(now),
        "processes": [process_view(r, alive.get(r.record_id)) for r in ordered],
        "external_resources": [dict(e) for e in external_resources],
        "process_count": len(live),
        "gpu_budget": budget.to_dict(),
        "ports_claimed": ports,
        "preferred_ports": list(preferred_ports),
        "safe_ports": list(safe_ports),
        "repos_locked": locked,
        "session_leases": [lease.to_dict() for lease in owned.leases],
        "process_classifications": classified,
        "stale_processes": [c for c in classified if c["classification"] in STALE_CLASSES],
        "recent_events": [event_view(e) for e in recent_events],
        "conflicts_prevented_24h": conflicts_24h,
        "system_memory": None if system_memory is None else dict(system_memory),
        "sessions": [dict(s) for s in sessions],
        "idle_processes": [dict(i) for i in idle],
        "gpu_memory_monitor": None if gpu_memory_monitor is None else dict(gpu_memory_monitor),
    }
