"""Gathering the state document: one consistent read of the registry, plus liveness of each row.

``sessions``, ``idle_processes`` and ``gpu_memory_monitor`` come from the last discovery cycle (``discover`` or a
``watch`` tick; see ``gpu_memory_monitor.generated_utc``), so ``status`` never scans the process table;
``system_memory`` is read now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleet_watch.clock import iso_utc
from fleet_watch.models import ProcessRecord
from fleet_watch.reports.state import build_state
from fleet_watch.service import last_cycle
from fleet_watch.service.external import external_repo_locks, live_external_resources
from fleet_watch.service.fleet import Fleet
from fleet_watch.store import audit, registry
from fleet_watch.store.connection import snapshot

STATE_FILE = "state.json"


def write_state(fleet: Fleet, *, is_alive: Callable[[ProcessRecord], bool | None] | None = None,
                cycle: Mapping[str, Any] | None = None) -> None:
    """``state.json``, the fallback artifact for agents without the CLI: rewritten (atomically) every cycle.
    A discovery cycle passes what it already knows (its process table, its snapshot) instead of reading it again.
    """
    last_cycle.write_state_file(fleet.settings.home / STATE_FILE, gather_state(fleet, is_alive=is_alive, cycle=cycle))


def gather_state(fleet: Fleet, *, is_alive: Callable[[ProcessRecord], bool | None] | None = None,
                 cycle: Mapping[str, Any] | None = None) -> dict[str, Any]:
    now = fleet.clock.now()
    with snapshot(fleet.conn):
        records = registry.list_records(fleet.conn)
        budget = fleet._budget(None)
        recent = audit.query(fleet.conn, since=iso_utc(now - 3600), limit=20)
        conflicts = audit.count(fleet.conn, event_type="CONFLICT", since=iso_utc(now - 86400))
        external = live_external_resources(fleet.conn, now)
        external_locks = [lock.repo_dir for lock in external_repo_locks(fleet.conn, now)]
    alive: dict[int, bool | None] = {
        r.record_id: fleet.death_reason(r.pid, r.start_time) is None if is_alive is None else is_alive(r)
        for r in records}
    occupied = {p for r in records for p in r.ports}
    if cycle is None:
        cycle = last_cycle.load_monitor(fleet.settings.home)
        memory = last_cycle.current_memory(fleet.settings, cycle, now)
    else:
        memory = cycle.get("memory") or last_cycle.current_memory(fleet.settings, None, now)
    return build_state(
        now=now, records=records, alive=alive, budget=budget, preferred_ports=fleet.settings.preferred_ports,
        safe_ports=fleet.free_ports(None, occupied), recent_events=recent, conflicts_24h=conflicts,
        system_memory=memory,
        sessions=last_cycle.listed(cycle, "sessions"), idle=last_cycle.listed(cycle, "idle"),
        gpu_memory_monitor=last_cycle.monitor_of(cycle), external_resources=external,
        external_repo_locks=external_locks,
    )
