"""The SQL that discovery needs, over the same ``processes`` and ``claims`` tables as manual registration:
insert a discovered process with several port claims and a GPU claim, move its ports and GPU figure,
refresh heartbeats in bulk, and ask whether a conflict was already logged. Callers hold the transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from fleet_watch.core import liveness
from fleet_watch.store import registry


def insert_discovered(
    conn: sqlite3.Connection, *, pid: int, start_time: float, uid: int | None, name: str, workstream: str,
    priority: int, model: str | None, start_cmd: str, ports: Iterable[int], gpu: Mapping[str, int], basis: str,
    at: str,
) -> int:
    record_id = registry.insert_process(
        conn, pid=pid, start_time=start_time, uid=uid, name=name, workstream=workstream, session_id=f"cli-{pid}",
        priority=priority, model=model, start_cmd=start_cmd, source="discover", registered_at=at,
        last_heartbeat=at,
    )
    for port in ports:
        registry.add_claim(conn, record_id, "port", str(port), 0, at)
    set_gpu(conn, record_id, gpu, basis, at)
    return record_id


def add_ports(conn: sqlite3.Connection, record_id: int, ports: Iterable[int], at: str) -> None:
    conn.executemany(
        "INSERT INTO claims (kind, key, amount_mb, process_id, created_at) VALUES ('port', ?, 0, ?, ?)",
        [(str(p), record_id, at) for p in ports],
    )


def remove_ports(conn: sqlite3.Connection, record_id: int, ports: Iterable[int]) -> None:
    conn.executemany(
        "DELETE FROM claims WHERE kind = 'port' AND key = ? AND process_id = ?",
        [(str(p), record_id) for p in ports],
    )


def set_gpu(conn: sqlite3.Connection, record_id: int, gpu: Mapping[str, int], basis: str, at: str) -> None:
    """Replace the row's GPU claims with ``{device: MB}`` (zero amounts are not stored), of the given basis."""
    conn.execute("DELETE FROM claims WHERE kind = 'gpu' AND process_id = ?", (record_id,))
    conn.executemany(
        "INSERT INTO claims (kind, key, amount_mb, process_id, created_at, basis) VALUES ('gpu', ?, ?, ?, ?, ?)",
        [(device, mb, record_id, at, basis) for device, mb in sorted(gpu.items()) if mb > 0],
    )


def touch_heartbeats(conn: sqlite3.Connection, record_ids: Iterable[int], at: str) -> None:
    conn.executemany(
        "UPDATE processes SET last_heartbeat = ?, stale_logged_at = NULL WHERE id = ?",
        [(at, rid) for rid in record_ids],
    )


def port_holders(conn: sqlite3.Connection, ports: Iterable[int]) -> dict[int, int]:
    """{port: record id} for the given ports that some row claims."""
    keys = [str(p) for p in ports]
    if not keys:
        return {}
    marks = ", ".join("?" for _ in keys)
    rows = conn.execute(f"SELECT key, process_id FROM claims WHERE kind = 'port' AND key IN ({marks}) "
                        "AND process_id IS NOT NULL", keys)
    return {int(k): int(rid) for k, rid in rows}


def held_without_process(conn: sqlite3.Connection, ports: Iterable[int]) -> set[int]:
    """Ports of ``ports`` that a reservation or a session lease holds (no process registered on them yet)."""
    keys = [str(p) for p in ports]
    if not keys:
        return set()
    marks = ", ".join("?" for _ in keys)
    rows = conn.execute(f"SELECT key FROM claims WHERE kind = 'port' AND key IN ({marks}) AND process_id IS NULL",
                        keys)
    return {int(k) for (k,) in rows}


def conflict_logged(conn: sqlite3.Connection, *, pid: int, start_time: float, port: int) -> bool:
    """Whether discovery already logged this (process, port) conflict: one event per change, not per cycle."""
    for (detail,) in conn.execute(
        "SELECT detail FROM events WHERE event_type = 'CONFLICT' AND pid = ? ORDER BY seq DESC LIMIT 20", (pid,),
    ):
        try:
            body = json.loads(detail)
        except json.JSONDecodeError:
            continue
        if (body.get("source") == "discover" and body.get("port") == port
                and liveness.same_start(start_time, _float(body.get("start_time")))):
            return True
    return False


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
