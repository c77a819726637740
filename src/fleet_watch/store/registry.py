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


_HOLDER_ID_COLUMN = {"process": "process_id", "lease": "lease_id", "reservation": "reservation_id"}


def add_claim(conn: sqlite3.Connection, record_id: int, kind: str, key: str, amount_mb: int, created_at: str,
              basis: str = "declared", holder_kind: str = "process") -> None:
    column = _HOLDER_ID_COLUMN[holder_kind]
    conn.execute(
        f"INSERT INTO claims (kind, key, amount_mb, {column}, created_at, basis) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, key, amount_mb, record_id, created_at, basis),
    )


def holder_claims(conn: sqlite3.Connection, holder_kind: str, record_id: int) -> list[Claim]:
    return _claims(conn, f"WHERE c.{_HOLDER_ID_COLUMN[holder_kind]} = ?", (record_id,))


def delete_claims(conn: sqlite3.Connection, claim_ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM claims WHERE id = ?", [(i,) for i in claim_ids])


def delete_process(conn: sqlite3.Connection, record_id: int) -> None:
    """Drop a row; its claims go with it (ON DELETE CASCADE)."""
    conn.execute("DELETE FROM processes WHERE id = ?", (record_id,))


def delete_gpu_claims(conn: sqlite3.Connection, record_id: int) -> None:
    conn.execute("DELETE FROM claims WHERE kind = 'gpu' AND process_id = ?", (record_id,))


def delete_port_claim(conn: sqlite3.Connection, record_id: int, port: int) -> None:
    conn.execute("DELETE FROM claims WHERE kind = 'port' AND key = ? AND process_id = ?", (str(port), record_id))


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
    claims: dict[int, list[tuple[str, str, int, str]]] = {i: [] for i in ids}
    if len(ids) == 1:
        claim_rows = conn.execute(
            "SELECT process_id, kind, key, amount_mb, basis FROM claims WHERE process_id = ? ORDER BY id", (ids[0],)
        )
    else:
        claim_rows = conn.execute("SELECT process_id, kind, key, amount_mb, basis FROM claims "
                                  "WHERE process_id IS NOT NULL ORDER BY id")
    for process_id, kind, key, amount, basis in claim_rows:
        if process_id in claims:
            claims[process_id].append((kind, key, amount, basis))
    return [_record(r, claims[r[0]]) for r in records]


def _record(row: tuple[Any, ...], claims: list[tuple[str, str, int, str]]) -> ProcessRecord:
    gpu_bases = [b for kind, _, _, b in claims if kind == "gpu"]
    return ProcessRecord(
        record_id=row[0], pid=row[1], start_time=row[2], uid=row[3], name=row[4], workstream=row[5],
        session_id=row[6], priority=row[7], model=row[8], start_cmd=row[9], source=row[10],
        registered_at=row[11], last_heartbeat=row[12],
        ports=tuple(int(k) for kind, k, _, _ in claims if kind == "port"),
        repos=tuple(k for kind, k, _, _ in claims if kind == "repo"),
        gpu=tuple((k, a) for kind, k, a, _ in claims if kind == "gpu"),
        gpu_basis=gpu_bases[0] if gpu_bases else None,  # type: ignore[arg-type]  # the CHECK constraint
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


_HOLDER_COLUMNS = "p.id, p.pid, p.start_time, p.name, p.workstream, p.session_id, p.priority"
# Every claim with its holder, whichever of the three kinds it is (exactly one of the three ids is set).
_CLAIM_JOIN = (
    f"SELECT {_HOLDER_COLUMNS}, c.kind, c.key, c.amount_mb, c.basis, "
    "l.id, l.session_id, l.owner_pid, l.owner_start_time, l.closed_at, "
    "r.id, r.session_id, r.expires_at, c.id "
    "FROM claims c LEFT JOIN processes p ON p.id = c.process_id LEFT JOIN leases l ON l.id = c.lease_id "
    "LEFT JOIN reservations r ON r.id = c.reservation_id "
)


def _claim_holder(row: tuple[Any, ...]) -> Holder:
    if row[0] is not None:
        return _holder(row)
    if row[11] is not None:
        return Holder(record_id=row[11], kind="lease", pid=row[13], start_time=row[14], name=f"session {row[12]}",
                      workstream=row[12], session_id=row[12], priority=3, closed=row[15] is not None)
    return Holder(record_id=row[16], kind="reservation", pid=None, start_time=None, name=f"reservation {row[16]}",
                  workstream=row[17], session_id=row[17], priority=3, expires_at=row[18])


def _claims(conn: sqlite3.Connection, where: str, params: Iterable[Any]) -> list[Claim]:
    return [
        Claim(kind=row[7], key=row[8], amount_mb=row[9], basis=row[10], holder=_claim_holder(row), claim_id=row[19])
        for row in conn.execute(_CLAIM_JOIN + where + " ORDER BY c.id", tuple(params))
    ]


def all_claims(conn: sqlite3.Connection) -> list[Claim]:
    """Every claim with its holder, in the order they were made: what one ledger read needs."""
    return _claims(conn, "", ())


def all_holders(conn: sqlite3.Connection) -> list[Holder]:
    """Every registered process as a holder, claims or not."""
    return [_holder(row) for row in conn.execute(f"SELECT {_HOLDER_COLUMNS} FROM processes p ORDER BY p.id")]
