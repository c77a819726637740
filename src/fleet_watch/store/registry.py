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
    return _claims(conn, f"WHERE {_HOLDER_ID_COLUMN[holder_kind]} = ?", (record_id,))


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


def _process_holder(row: tuple[Any, ...]) -> Holder:
    return Holder(record_id=row[0], pid=row[1], start_time=row[2], name=row[3], workstream=row[4],
                  session_id=row[5], priority=row[6])


def _lease_holder(row: tuple[Any, ...]) -> Holder:
    return Holder(record_id=row[0], kind="lease", pid=row[2], start_time=row[3], name=f"session {row[1]}",
                  workstream=row[1], session_id=row[1], priority=3, closed=row[4] is not None)


def _reservation_holder(row: tuple[Any, ...]) -> Holder:
    return Holder(record_id=row[0], kind="reservation", pid=None, start_time=None, name=f"reservation {row[0]}",
                  workstream=row[1], session_id=row[1], priority=3, expires_at=row[2])


# Each holder table read on its own, by the claims' column that points into it (exactly one of the three is set).
_HOLDER_TABLES = {
    "process_id": ("SELECT id, pid, start_time, name, workstream, session_id, priority FROM processes",
                   _process_holder),
    "lease_id": ("SELECT id, session_id, owner_pid, owner_start_time, closed_at FROM leases", _lease_holder),
    "reservation_id": ("SELECT id, session_id, expires_at FROM reservations", _reservation_holder),
}
_CLAIM_COLUMNS = "kind, key, amount_mb, basis, id, process_id, lease_id, reservation_id"


def _holders_of(conn: sqlite3.Connection, column: str, where: str, params: tuple[Any, ...]) -> dict[int, Holder]:
    """The holders of one kind that the claims selected by ``where`` point to, one object each."""
    sql, build = _HOLDER_TABLES[column]
    return {row[0]: build(row) for row in conn.execute(
        f"{sql} WHERE id IN (SELECT {column} FROM claims {where})", params)}


def _claims(conn: sqlite3.Connection, where: str, params: tuple[Any, ...],
            processes: dict[int, Holder] | None = None) -> list[Claim]:
    """The claims selected by ``where``, each with its holder. The holder tables are read once each and joined
    here: a three-way LEFT JOIN repeats the holder's columns on every claim row and cost three times as much at
    3,000 claims. The caller's transaction makes the reads one snapshot."""
    rows = conn.execute(f"SELECT {_CLAIM_COLUMNS} FROM claims {where} ORDER BY id", params).fetchall()
    if not rows:
        return []
    if processes is None:
        processes = _holders_of(conn, "process_id", where, params)
    leases = _holders_of(conn, "lease_id", where, params) if any(r[6] is not None for r in rows) else {}
    reservations = _holders_of(conn, "reservation_id", where, params) if any(r[7] is not None for r in rows) else {}
    out = []
    for kind, key, amount_mb, basis, claim_id, pid, lid, rid in rows:
        holder = processes.get(pid) if pid is not None else leases.get(lid) if lid is not None else \
            reservations.get(rid)
        if holder is not None:  # a row whose holder is gone (foreign keys off in some other writer) holds nothing
            out.append(Claim(kind=kind, key=key, amount_mb=amount_mb, basis=basis, claim_id=claim_id, holder=holder))
    return out


def ledger_rows(conn: sqlite3.Connection) -> tuple[list[Claim], list[Holder]]:
    """Every claim with its holder, in the order they were made, and every registered process as a holder (claims
    or not): what one ledger read needs."""
    sql, build = _HOLDER_TABLES["process_id"]
    processes = {row[0]: build(row) for row in conn.execute(f"{sql} ORDER BY id")}
    return _claims(conn, "", (), processes), list(processes.values())


def has_external_resources(conn: sqlite3.Connection) -> bool:
    """Whether any external resource is recorded (their own SQL lives in ``store/external.py``)."""
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM external_resources)").fetchone()[0])
