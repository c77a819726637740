"""Session leases and reservations: rows in, models out. All their SQL is here; callers hold the transaction."""

from __future__ import annotations

import sqlite3
from typing import Any

from fleet_watch.models import Lease, Reservation
from fleet_watch.store import registry

_LEASE_COLUMNS = "id, session_id, owner_pid, owner_start_time, owner_uid, started_at, last_heartbeat, closed_at"


def _lease(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Lease:
    repo = conn.execute("SELECT key FROM claims WHERE lease_id = ? AND kind = 'repo' ORDER BY id LIMIT 1",
                        (row[0],)).fetchone()
    return Lease(lease_id=row[0], session_id=row[1], owner_pid=row[2], owner_start_time=row[3], owner_uid=row[4],
                 repo=None if repo is None else repo[0], started_at=row[5], last_heartbeat=row[6], closed_at=row[7])


def get(conn: sqlite3.Connection, session_id: str) -> Lease | None:
    row = conn.execute(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE session_id = ?", (session_id,)).fetchone()
    return None if row is None else _lease(conn, row)


def list_all(conn: sqlite3.Connection) -> list[Lease]:
    rows = conn.execute(f"SELECT {_LEASE_COLUMNS} FROM leases ORDER BY id").fetchall()
    return [_lease(conn, row) for row in rows]


def insert(conn: sqlite3.Connection, *, session_id: str, owner_pid: int | None, owner_start_time: float | None,
           owner_uid: int | None, at: str) -> int:
    cur = conn.execute(
        "INSERT INTO leases (session_id, owner_pid, owner_start_time, owner_uid, started_at, last_heartbeat) "
        "VALUES (?, ?, ?, ?, ?, ?)", (session_id, owner_pid, owner_start_time, owner_uid, at, at))
    assert cur.lastrowid is not None
    return cur.lastrowid


def reopen(conn: sqlite3.Connection, lease_id: int, *, owner_pid: int | None, owner_start_time: float | None,
           owner_uid: int | None, at: str) -> None:
    conn.execute("UPDATE leases SET owner_pid = ?, owner_start_time = ?, owner_uid = ?, last_heartbeat = ?, "
                 "closed_at = NULL WHERE id = ?", (owner_pid, owner_start_time, owner_uid, at, lease_id))


def touch(conn: sqlite3.Connection, lease_id: int, at: str) -> None:
    conn.execute("UPDATE leases SET last_heartbeat = ? WHERE id = ?", (at, lease_id))


def close(conn: sqlite3.Connection, lease_id: int, at: str) -> None:
    """Closed: it holds nothing from now on (its claims go), but the row stays as evidence for classification."""
    conn.execute("UPDATE leases SET closed_at = ?, last_heartbeat = ? WHERE id = ?", (at, at, lease_id))
    conn.execute("DELETE FROM claims WHERE lease_id = ?", (lease_id,))


def set_repo(conn: sqlite3.Connection, lease_id: int, repo: str | None, at: str) -> None:
    conn.execute("DELETE FROM claims WHERE lease_id = ? AND kind = 'repo'", (lease_id,))
    if repo is not None:
        registry.add_claim(conn, lease_id, "repo", repo, 0, at, holder_kind="lease")


# -- reservations -------------------------------------------------------------------------------------------------
_RES_COLUMNS = "id, session_id, uid, created_at, expires_at"


def _reservation(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Reservation:
    claims = conn.execute("SELECT kind, key, amount_mb FROM claims WHERE reservation_id = ? ORDER BY id",
                          (row[0],)).fetchall()
    return Reservation(reservation_id=row[0], session_id=row[1], uid=row[2], created_at=row[3], expires_at=row[4],
                       ports=tuple(int(k) for kind, k, _ in claims if kind == "port"),
                       repos=tuple(k for kind, k, _ in claims if kind == "repo"),
                       gpu=tuple((k, a) for kind, k, a in claims if kind == "gpu"))


def insert_reservation(conn: sqlite3.Connection, *, session_id: str, uid: int | None, at: str,
                       expires_at: float) -> int:
    cur = conn.execute("INSERT INTO reservations (session_id, uid, created_at, expires_at) VALUES (?, ?, ?, ?)",
                       (session_id, uid, at, expires_at))
    assert cur.lastrowid is not None
    return cur.lastrowid


def reservation(conn: sqlite3.Connection, reservation_id: int) -> Reservation | None:
    row = conn.execute(f"SELECT {_RES_COLUMNS} FROM reservations WHERE id = ?", (reservation_id,)).fetchone()
    return None if row is None else _reservation(conn, row)


def reservations(conn: sqlite3.Connection, session_id: str | None = None) -> list[Reservation]:
    if session_id is None:
        rows = conn.execute(f"SELECT {_RES_COLUMNS} FROM reservations ORDER BY id").fetchall()
    else:
        rows = conn.execute(f"SELECT {_RES_COLUMNS} FROM reservations WHERE session_id = ? ORDER BY id",
                            (session_id,)).fetchall()
    return [_reservation(conn, row) for row in rows]


def delete_reservation(conn: sqlite3.Connection, reservation_id: int) -> None:
    """Its claims go with it (ON DELETE CASCADE)."""
    conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))


def expired_reservations(conn: sqlite3.Connection, now: float) -> list[Reservation]:
    rows = conn.execute(f"SELECT {_RES_COLUMNS} FROM reservations WHERE expires_at <= ? ORDER BY id",
                        (now,)).fetchall()
    return [_reservation(conn, row) for row in rows]


def move_claims_to_process(conn: sqlite3.Connection, claim_ids: list[int], record_id: int) -> None:
    """A reservation's claims become a process's in place: no window in which the resource is free."""
    conn.executemany("UPDATE claims SET reservation_id = NULL, process_id = ? WHERE id = ?",
                     [(record_id, cid) for cid in claim_ids])
