"""The audit trail's storage: append (inside the caller's write transaction) and read back.

Hashing and verification rules live in ``core.chain``; this module only moves rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

from fleet_watch.core.chain import EVENT_TYPES, GENESIS, canonical_json, event_hash
from fleet_watch.models import Event


def append(
    conn: sqlite3.Connection, *, timestamp: str, event_type: str, pid: int | None, workstream: str | None,
    detail: dict[str, object] | None = None,
) -> Event:
    """Append one event. Must run inside ``BEGIN IMMEDIATE``: reading the head and writing are one step."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    assert conn.in_transaction, "audit.append must run inside the state change's transaction"
    body = json.loads(canonical_json(detail or {}))  # normalise: what is hashed is what is stored
    head = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    digest = event_hash(
        seq=seq, timestamp=timestamp, event_type=event_type, pid=pid, workstream=workstream, detail=body,
        prev_hash=prev,
    )
    conn.execute(
        "INSERT INTO events (seq, timestamp, event_type, pid, workstream, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, timestamp, event_type, pid, workstream, canonical_json(body), prev, digest),
    )
    conn.execute(
        "INSERT INTO chain_head (id, seq, hash) VALUES (1, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (seq, digest),
    )
    return Event(seq=seq, timestamp=timestamp, event_type=event_type, pid=pid, workstream=workstream,
                 detail=body, prev_hash=prev, hash=digest)


def _event(row: tuple[object, ...]) -> Event:
    seq, timestamp, event_type, pid, workstream, detail, prev_hash, digest = row
    try:
        body = json.loads(str(detail))
    except json.JSONDecodeError:
        body = {"__unparseable__": str(detail)}  # verification will flag it: the hash cannot match
    if not isinstance(body, dict):
        body = {"__not_an_object__": body}
    return Event(
        seq=int(seq), timestamp=str(timestamp), event_type=str(event_type),  # type: ignore[call-overload]
        pid=pid if pid is None else int(pid),  # type: ignore[call-overload]
        workstream=None if workstream is None else str(workstream),
        detail=body, prev_hash=str(prev_hash), hash=str(digest),
    )


_COLUMNS = "seq, timestamp, event_type, pid, workstream, detail, prev_hash, hash"


def iter_all(conn: sqlite3.Connection) -> Iterator[Event]:
    for row in conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq"):
        yield _event(row)


def head(conn: sqlite3.Connection) -> tuple[int, str] | None:
    row = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
    return (int(row[0]), str(row[1])) if row else None


def query(
    conn: sqlite3.Connection, *, event_type: str | None = None, since: str | None = None, limit: int = 50,
) -> list[Event]:
    """Newest first. ``since`` is a timestamp in the stored fixed-width form, so string order is time order."""
    clauses, params = [], []
    if event_type is not None:
        clauses.append("event_type = ?")
        params.append(event_type)
    if since is not None:
        clauses.append("timestamp >= ?")
        params.append(since)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM events {where} ORDER BY seq DESC LIMIT ?", (*params, limit))
    return [_event(r) for r in rows]


def count(conn: sqlite3.Connection, *, event_type: str, since: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM events WHERE event_type = ? AND timestamp >= ?", (event_type, since)
    ).fetchone()
    return int(row[0])
