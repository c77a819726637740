"""External resources (Thunder instances): their table and every SQL statement over it. Callers hold the transaction.

The claim of an instance (session, workstream, repo, expiry) lives on its row: one instance has at most one owner.
The ``claims`` table (local processes' ports, repos and GPU memory) is not touched.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fleet_watch.core.external import GONE, ExternalRow

if TYPE_CHECKING:
    from fleet_watch.core.thunder import Instance


def migrate(conn: sqlite3.Connection) -> None:
    """Migration ``m003_external_resources``."""
    conn.execute("""CREATE TABLE external_resources (
        id INTEGER PRIMARY KEY,
        provider TEXT NOT NULL,
        external_id TEXT NOT NULL,
        short_id TEXT,
        resource_type TEXT NOT NULL DEFAULT 'instance',
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        gpu_type TEXT,
        gpu_count INTEGER,
        endpoint TEXT,
        cleanup_cmd TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        gone_at TEXT,
        session_id TEXT,
        workstream TEXT,
        repo_dir TEXT,
        claimed_at TEXT,
        heartbeat_at TEXT,
        claim_expires_at TEXT,
        UNIQUE (provider, external_id),
        CHECK ((session_id IS NULL) = (claim_expires_at IS NULL)),
        CHECK (repo_dir IS NULL OR session_id IS NOT NULL)
    )""")
    conn.execute("CREATE INDEX external_resources_repo ON external_resources(repo_dir) WHERE repo_dir IS NOT NULL")


_COLUMNS = ("id, provider, external_id, short_id, resource_type, name, status, gpu_type, gpu_count, endpoint, "
            "cleanup_cmd, metadata, first_seen, last_seen, gone_at, session_id, workstream, repo_dir, claimed_at, "
            "heartbeat_at, claim_expires_at")


def _row(r: tuple[Any, ...]) -> ExternalRow:
    try:
        meta = json.loads(r[11]) if r[11] else {}
    except json.JSONDecodeError:
        meta = {}
    return ExternalRow(
        row_id=r[0], provider=r[1], external_id=r[2], short_id=r[3], resource_type=r[4], name=r[5], status=r[6],
        gpu_type=r[7], gpu_count=r[8], endpoint=r[9], cleanup_cmd=r[10],
        metadata=meta if isinstance(meta, dict) else {}, first_seen=r[12], last_seen=r[13], gone_at=r[14],
        session_id=r[15], workstream=r[16], repo_dir=r[17], claimed_at=r[18], heartbeat_at=r[19],
        claim_expires_at=r[20],
    )


def list_rows(conn: sqlite3.Connection, provider: str | None = None) -> list[ExternalRow]:
    if provider is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM external_resources ORDER BY provider, external_id")
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM external_resources WHERE provider = ? ORDER BY external_id",
                            (provider,))
    return [_row(r) for r in rows]


def present_rows(conn: sqlite3.Connection) -> list[ExternalRow]:
    """Rows of instances their provider still reports (gone ones hold nothing)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM external_resources WHERE gone_at IS NULL "
                        "ORDER BY provider, external_id")
    return [_row(r) for r in rows]


def claimed_by(conn: sqlite3.Connection, session_id: str) -> list[ExternalRow]:
    """Rows whose claim names ``session_id`` (live or expired: the caller asks ``core.external.claim_live``)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM external_resources WHERE session_id = ? "
                        "ORDER BY provider, external_id", (session_id,))
    return [_row(r) for r in rows]


def find(conn: sqlite3.Connection, provider: str, ident: str) -> ExternalRow | None:
    """By external id (uuid), else by the provider's short id; a present instance before a gone one."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM external_resources WHERE provider = ? AND (external_id = ? OR short_id = ?) "
        "ORDER BY external_id = ? DESC, gone_at IS NULL DESC, id DESC LIMIT 1",
        (provider, ident, ident, ident)).fetchone()
    return None if row is None else _row(row)


def _meta(inst: Instance) -> str:
    return json.dumps(inst.metadata, sort_keys=True, separators=(",", ":"))


def insert(conn: sqlite3.Connection, provider: str, inst: Instance, at: str) -> None:
    conn.execute(
        "INSERT INTO external_resources (provider, external_id, short_id, name, status, gpu_type, gpu_count, "
        "endpoint, cleanup_cmd, metadata, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (provider, inst.external_id, inst.short_id, inst.name, inst.status, inst.gpu_type, inst.gpu_count,
         inst.endpoint, inst.cleanup_cmd, _meta(inst), at, at))


def refresh(conn: sqlite3.Connection, row_id: int, inst: Instance, at: str) -> None:
    """What the provider says now; the claim is the owner's and stays (a returning instance comes back unclaimed)."""
    conn.execute(
        "UPDATE external_resources SET short_id = ?, name = ?, status = ?, gpu_type = ?, gpu_count = ?, "
        "endpoint = ?, cleanup_cmd = ?, metadata = ?, last_seen = ?, gone_at = NULL WHERE id = ?",
        (inst.short_id, inst.name, inst.status, inst.gpu_type, inst.gpu_count, inst.endpoint, inst.cleanup_cmd,
         _meta(inst), at, row_id))


def mark_gone(conn: sqlite3.Connection, row_ids: Iterable[int], at: str) -> None:
    """Gone instances hold nothing: status GONE, their claim cleared."""
    conn.executemany(
        "UPDATE external_resources SET status = ?, gone_at = ?, session_id = NULL, workstream = NULL, "
        "repo_dir = NULL, claimed_at = NULL, heartbeat_at = NULL, claim_expires_at = NULL WHERE id = ?",
        [(GONE, at, rid) for rid in row_ids])


def delete(conn: sqlite3.Connection, row_ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM external_resources WHERE id = ?", [(rid,) for rid in row_ids])


def set_claim(conn: sqlite3.Connection, row_id: int, *, session_id: str, workstream: str | None,
              repo_dir: str | None, claimed_at: str, heartbeat_at: str, expires_at: str) -> None:
    conn.execute(
        "UPDATE external_resources SET session_id = ?, workstream = ?, repo_dir = ?, claimed_at = ?, "
        "heartbeat_at = ?, claim_expires_at = ? WHERE id = ?",
        (session_id, workstream, repo_dir, claimed_at, heartbeat_at, expires_at, row_id))


def touch_claim(conn: sqlite3.Connection, row_id: int, *, heartbeat_at: str, expires_at: str) -> None:
    conn.execute("UPDATE external_resources SET heartbeat_at = ?, claim_expires_at = ? WHERE id = ?",
                 (heartbeat_at, expires_at, row_id))


def clear_claim(conn: sqlite3.Connection, row_id: int) -> None:
    conn.execute(
        "UPDATE external_resources SET session_id = NULL, workstream = NULL, repo_dir = NULL, claimed_at = NULL, "
        "heartbeat_at = NULL, claim_expires_at = NULL WHERE id = ?", (row_id,))
