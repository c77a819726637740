"""Gathering the state document: one consistent read of the registry, plus liveness of each row.

``sessions``, ``idle_processes`` and ``gpu_memory_monitor`` come from the last discovery cycle (``discover`` or a
``watch`` tick; see ``gpu_memory_monitor.generated_utc``), so ``status`` never scans the process table;
``system_memory`` is read now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet_watch.clock import iso_utc
from fleet_watch.reports.state import build_state
from fleet_watch.service import last_cycle
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.ledger import DeathProbe, Ledger, kernel_death
from fleet_watch.store import audit, registry

STATE_FILE = "state.json"


def gather_state(fleet: Fleet, *, probe: DeathProbe | None = None,
                 cycle: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every count and claim in the document is over live holders (the ledger's rule); dead rows are listed with
    ``alive: false`` until ``clean`` or the next cycle removes them."""
    now = fleet.clock.now()
    with fleet.reading() as conn:
        records = registry.list_records(conn)
        ledger = Ledger.read(conn, now, probe or kernel_death)
        recent = audit.query(conn, since=iso_utc(now - 3600), limit=20)
        conflicts = audit.count(conn, event_type="CONFLICT", since=iso_utc(now - 86400))
    pool, _ = fleet.budgets(ledger, None)
    alive = {h.record_id: ledger.death(h) is None for h in ledger.holders}
    occupied = ledger.occupied_ports()
    if cycle is None:
        cycle = last_cycle.load_monitor(fleet.settings.home)
        memory = last_cycle.current_memory(fleet.settings, cycle, now)
    else:
        memory = cycle.get("memory") or last_cycle.current_memory(fleet.settings, None, now)
    from fleet_watch.service.report import ownership_inputs  # the views' one source of ownership classes

    return build_state(
        now=now, records=records, alive=alive, budget=pool,
        preferred_ports=fleet.settings.preferred_ports,
        safe_ports=fleet.free_ports(None, set(occupied)), recent_events=recent, conflicts_24h=conflicts,
        system_memory=memory,
        sessions=last_cycle.listed(cycle, "sessions"), idle=last_cycle.listed(cycle, "idle"),
        gpu_memory_monitor=last_cycle.monitor_of(cycle), ownership=ownership_inputs(fleet, now, records, alive),
        ports_claimed=ledger.occupied_ports(), repos_locked=ledger.locked_repos(),
        external_resources=ledger.external_resources, external_repo_locks=[lk.repo_dir for lk in ledger.external_locks],
    )
