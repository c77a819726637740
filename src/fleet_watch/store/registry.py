"""Registered processes and the claims they hold: rows in, models out. All SQL for them is here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from fleet_watch.models import Claim, Holder, ProcessRecord

_PROCESS_COLUMNS = (
    "id, pid, start_time, uid, name, workstream, session_id, priority, model, start_cmd, source, "
    "registered_at, last_heartbeat"
)


def insert_process(conn: sqlite3.Connection, **row: Any) -> int:
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cur = conn.execute(f"INSERT INTO processes ({columns}) VALUES ({marks})", tuple(row.values()))
    assert cur.lastrowid is not None
    return cur.lastrowid


def add_claim(conn: sqlite3.Connection, record_id: int, kind: str, key: str, amount_mb: int, created_at: str) -> None:
    conn.execute(
        "INSERT INTO claims (kind, key, amount_mb, process_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (kind, key, amount_mb, record_id, created_at),
    )


def delete_process(conn: sqlite3.Connection, record_id: int) -> None:
    """Drop a row; its claims go with it (ON DELETE CASCADE)."""
    conn.execute("DELETE FROM processes WHERE id = ?", (record_id,))


def delete_port_claim(conn: sqlite3.Connection, port: int) -> None:
    conn.execute("DELETE FROM claims WHERE kind = 'port' AND key = ?", (str(port),))


def touch_heartbeat(conn: sqlite3.Connection, record_id: int, at: str) -> None:
    conn.execute("UPDATE processes SET last_heartbeat = ?, stale_logged_at = NULL WHERE id = ?", (at, record_id))


def mark_stale_logged(conn: sqlite3.Connection, record_id: int, at: str) -> None:
    conn.execute("UPDATE processes SET stale_logged_at = ? WHERE id = ?", (at, record_id))


def _records(conn: sqlite3.Connection, where: str = "", params: Iterable[Any] = ()) -> list[ProcessRecord]:
    rows = conn.execute(f"SELECT {_PROCESS_COLUMNS}, stale_logged_at FROM processes {where} ORDER BY id", tuple(params))
    records = list(rows)
    if not records:
        return []
    ids = [r[0] for r in records]
    claims: dict[int, list[tuple[str, str, int]]] = {i: [] for i in ids}
    if len(ids) == 1:
        claim_rows = conn.execute(
            "SELECT process_id, kind, key, amount_mb FROM claims WHERE process_id = ? ORDER BY id", (ids[0],)
        )
    else:
        claim_rows = conn.execute("SELECT process_id, kind, key, amount_mb FROM claims ORDER BY id")
    for process_id, kind, key, amount in claim_rows:
        if process_id in claims:
            claims[process_id].append((kind, key, amount))
    return [_record(r, claims[r[0]]) for r in records]


def _record(row: tuple[Any, ...], claims: list[tuple[str, str, int]]) -> ProcessRecord:
    return ProcessRecord(
        record_id=row[0], pid=row[1], start_time=row[2], uid=row[3], name=row[4], workstream=row[5],
        session_id=row[6], priority=row[7], model=row[8], start_cmd=row[9], source=row[10],
        registered_at=row[11], last_heartbeat=row[12],
        ports=tuple(int(k) for kind, k, _ in claims if kind == "port"),
        repos=tuple(k for kind, k, _ in claims if kind == "repo"),
        gpu=tuple((k, a) for kind, k, a in claims if kind == "gpu"),
    )


def list_records(conn: sqlite3.Connection) -> list[ProcessRecord]:
    return _records(conn)


def stale_logged(conn: sqlite3.Connection) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM processes WHERE stale_logged_at IS NOT NULL")}


def record_by_pid(conn: sqlite3.Connection, pid: int) -> ProcessRecord | None:
    found = _records(conn, "WHERE pid = ?", (pid,))
    return found[0] if found else None


def record_by_id(conn: sqlite3.Connection, record_id: int) -> ProcessRecord | None:
    found = _records(conn, "WHERE id = ?", (record_id,))
    return found[0] if found else None


def _holder(row: tuple[Any, ...]) -> Holder:
    return Holder(
        record_id=row[0], pid=row[1], start_time=row[2], name=row[3], workstream=row[4],
        session_id=row[5], priority=row[6],
    )


_CLAIM_JOIN = (
    "SELECT p.id, p.pid, p.start_time, p.name, p.workstream, p.session_id, p.priority, c.kind, c.key, c.amount_mb "
    "FROM claims c JOIN processes p ON p.id = c.process_id "
)


def _claims(conn: sqlite3.Connection, where: str, params: Iterable[Any]) -> list[Claim]:
    return [
        Claim(kind=row[7], key=row[8], amount_mb=row[9], holder=_holder(row))
        for row in conn.execute(_CLAIM_JOIN + where, tuple(params))
    ]


def port_claim(conn: sqlite3.Connection, port: int) -> Claim | None:
    found = _claims(conn, "WHERE c.kind = 'port' AND c.key = ?", (str(port),))
    return found[0] if found else None


def repo_claims_overlapping(conn: sqlite3.Connection, path: str, ancestors: list[str]) -> list[Claim]:
    """Locks on ``path``, on any parent of it, or on anything inside it (index range, not a LIKE scan)."""
    marks = ", ".join("?" for _ in ancestors)
    inside_lo = path.rstrip("/") + "/"
    inside_hi = path.rstrip("/") + "0"  # '0' sorts right after '/'
    return _claims(
        conn,
        f"WHERE c.kind = 'repo' AND (c.key IN ({marks}) OR (c.key >= ? AND c.key < ?))",
        (*ancestors, inside_lo, inside_hi),
    )


def gpu_claims(conn: sqlite3.Connection, device: str | None = None) -> list[Claim]:
    """GPU claims on one device key, or on every device and the pool when ``device`` is None."""
    if device is None:
        return _claims(conn, "WHERE c.kind = 'gpu' AND c.amount_mb > 0", ())
    return _claims(conn, "WHERE c.kind = 'gpu' AND c.key = ? AND c.amount_mb > 0", (device,))


def gpu_allocated_mb(conn: sqlite3.Connection, device: str | None = None) -> int:
    """The budget in use is a sum over the claims, never a counter that could drift from them."""
    if device is None:
        row = conn.execute("SELECT COALESCE(SUM(amount_mb), 0) FROM claims WHERE kind = 'gpu'").fetchone()
    else:
        row = conn.execute(
            "SELECT COALESCE(SUM(amount_mb), 0) FROM claims WHERE kind = 'gpu' AND key = ?", (device,)
        ).fetchone()
    return int(row[0])


def process_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM processes").fetchone()[0])


def claimed_ports(conn: sqlite3.Connection) -> dict[int, int]:
    """{port: pid} for every port claim."""
    rows = conn.execute(
        "SELECT c.key, p.pid FROM claims c JOIN processes p ON p.id = c.process_id WHERE c.kind = 'port'"
    )
    return {int(key): pid for key, pid in rows}


def locked_repos(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.key, p.pid FROM claims c JOIN processes p ON p.id = c.process_id WHERE c.kind = 'repo'"
    )
    return dict(rows)
