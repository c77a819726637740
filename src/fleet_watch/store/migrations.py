"""Ordered, recorded schema migrations. Append new ones; never edit one that has shipped.

Each migration is a named function; ``PRAGMA user_version`` counts how many ran (a cheap read for the
fast path) and ``_fleet_migrations`` records which ones and when.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_registry_claims_events(conn: sqlite3.Connection) -> None:
    for statement in (
        """CREATE TABLE processes (
            id INTEGER PRIMARY KEY,
            pid INTEGER NOT NULL UNIQUE,
            start_time REAL NOT NULL,
            uid INTEGER,
            name TEXT NOT NULL,
            workstream TEXT NOT NULL,
            session_id TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
            model TEXT,
            start_cmd TEXT,
            source TEXT NOT NULL DEFAULT 'manual',
            registered_at TEXT NOT NULL,
            last_heartbeat TEXT NOT NULL,
            stale_logged_at TEXT
        )""",
        """CREATE TABLE claims (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('port', 'repo', 'gpu')),
            key TEXT NOT NULL,
            amount_mb INTEGER NOT NULL DEFAULT 0 CHECK (amount_mb >= 0),
            process_id INTEGER NOT NULL REFERENCES processes(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL
        )""",
        # A port has one holder, enforced by the database itself, whatever the Python above it does.
        "CREATE UNIQUE INDEX claims_port_exclusive ON claims(key) WHERE kind = 'port'",
        "CREATE INDEX claims_kind_key ON claims(kind, key)",
        "CREATE INDEX claims_process ON claims(process_id)",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            timestamp TEXT NOT NULL,
            event_type TEXT NOT NULL,
            pid INTEGER,
            workstream TEXT,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""",
        "CREATE INDEX events_timestamp ON events(timestamp)",
        "CREATE INDEX events_type ON events(event_type, timestamp)",
        # Updated in the same transaction as each append: a cut-off tail no longer verifies.
        "CREATE TABLE chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    ):
        conn.execute(statement)


@migration
def m002_claim_basis(conn: sqlite3.Connection) -> None:
    """How a GPU figure was obtained: only declared, measured or reserved claims count against the budget."""
    conn.execute("ALTER TABLE claims ADD COLUMN basis TEXT NOT NULL DEFAULT 'declared' "
                 "CHECK (basis IN ('declared', 'measured', 'reserved', 'estimate'))")


def apply_migrations(conn: sqlite3.Connection) -> None:
    """Run the migrations this database lacks. The caller holds a ``BEGIN IMMEDIATE`` transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS _fleet_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT name FROM _fleet_migrations")}
    for name, fn in MIGRATIONS:
        if name not in done:
            fn(conn)
            conn.execute("INSERT INTO _fleet_migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")


@migration
def m003_external_resources(conn: sqlite3.Connection) -> None:
    from fleet_watch.store.external import migrate

    migrate(conn)


@migration
def m004_leases_and_reservations(conn: sqlite3.Connection) -> None:
    """Session leases and reservations, and claims that any of the three holders can hold.

    A claim's holder is exactly one of: a registered process, a session lease (its repo), or a reservation made
    before a process exists (``fleet claim``). The port index stays one over *all* claims, so a reservation and a
    process can never both hold one port, whatever the Python above does.
    """
    for statement in (
        """CREATE TABLE leases (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL UNIQUE,
            owner_pid INTEGER,
            owner_start_time REAL,
            owner_uid INTEGER,
            started_at TEXT NOT NULL,
            last_heartbeat TEXT NOT NULL,
            closed_at TEXT
        )""",
        """CREATE TABLE reservations (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            uid INTEGER,
            created_at TEXT NOT NULL,
            expires_at REAL NOT NULL
        )""",
        "CREATE INDEX reservations_session ON reservations(session_id)",
        """CREATE TABLE claims_new (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('port', 'repo', 'gpu')),
            key TEXT NOT NULL,
            amount_mb INTEGER NOT NULL DEFAULT 0 CHECK (amount_mb >= 0),
            process_id INTEGER REFERENCES processes(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            basis TEXT NOT NULL DEFAULT 'declared'
                CHECK (basis IN ('declared', 'measured', 'reserved', 'estimate')),
            lease_id INTEGER REFERENCES leases(id) ON DELETE CASCADE,
            reservation_id INTEGER REFERENCES reservations(id) ON DELETE CASCADE,
            CHECK ((process_id IS NOT NULL) + (lease_id IS NOT NULL) + (reservation_id IS NOT NULL) = 1)
        )""",
        "INSERT INTO claims_new (id, kind, key, amount_mb, process_id, created_at, basis) "
        "SELECT id, kind, key, amount_mb, process_id, created_at, basis FROM claims",
        "DROP TABLE claims",
        "ALTER TABLE claims_new RENAME TO claims",
        "CREATE UNIQUE INDEX claims_port_exclusive ON claims(key) WHERE kind = 'port'",
        "CREATE INDEX claims_kind_key ON claims(kind, key)",
        "CREATE INDEX claims_process ON claims(process_id)",
        "CREATE INDEX claims_lease ON claims(lease_id)",
        "CREATE INDEX claims_reservation ON claims(reservation_id)",
    ):
        conn.execute(statement)
