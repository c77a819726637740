"""Opening ``registry.db``: WAL, a busy timeout, foreign keys, and migrations applied only when needed.

A read-only command on an up-to-date database takes no write lock: the schema check is a read of
``PRAGMA user_version``. SQLite errors are translated into ``DatabaseError`` here, at the edge.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleet_watch.errors import DatabaseError
from fleet_watch.store.migrations import MIGRATIONS, apply_migrations

BUSY_TIMEOUT_MS = 5000


def _writable(path: Path) -> bool:
    """Whether this user may write the database (and its WAL files beside it)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect(path: Path) -> tuple[sqlite3.Connection, bool]:
    """Connect read-write where this user may write; else read-only, so that guard, status and history still
    answer from a registry that another user owns (WAL needs its -shm file writable: ``immutable`` is the fallback
    when even that is denied; such a reader cannot see a write in flight, and it cannot write)."""
    timeout = BUSY_TIMEOUT_MS / 1000
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    if _writable(path):
        return sqlite3.connect(str(path), timeout=timeout, isolation_level=None), True
    uri = path.absolute().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        conn.execute("PRAGMA user_version").fetchone()
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn, False
    except sqlite3.Error:
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout, isolation_level=None), False


def open_db(path: Path) -> sqlite3.Connection:
    """Open (creating if needed, mode 0600) and migrate the registry database."""
    try:
        conn, writable = _connect(path)
    except OSError as err:
        raise DatabaseError(f"cannot open {path}: {err.strerror}") from err
    except sqlite3.Error as err:
        raise DatabaseError(f"cannot open {path}: {err}") from err
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < len(MIGRATIONS) and not writable:
            raise DatabaseError(f"{path} needs a schema upgrade ({version} -> {len(MIGRATIONS)}) that this user "
                                "cannot write: run any fleet command as its owner first")
        if version < len(MIGRATIONS):
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            with immediate(conn):
                apply_migrations(conn)
        elif version > len(MIGRATIONS):
            raise DatabaseError(
                f"{path} has schema version {version}, newer than this fleet-watch knows ({len(MIGRATIONS)}): upgrade"
            )
    except sqlite3.DatabaseError as err:
        conn.close()
        raise translate(err, path) from err
    except DatabaseError:
        conn.close()
        raise
    return conn


def translate(err: sqlite3.Error, path: Path | None = None) -> DatabaseError:
    where = f"{path}: " if path is not None else "registry database: "
    text = str(err)
    if "readonly" in text or "read-only" in text:
        return DatabaseError(f"{where}the registry is read-only for this user: only read commands (guard, check, "
                             "status, history) work")
    if "locked" in text or "busy" in text:
        return DatabaseError(f"{where}database is locked by another writer (waited {BUSY_TIMEOUT_MS} ms)")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return DatabaseError(f"{where}database file is corrupt ({text})")
    return DatabaseError(f"{where}{text}")


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction that holds the write lock from its first statement to COMMIT."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as err:
        raise translate(err) from err
    try:
        yield conn
    except sqlite3.Error as err:  # a write refused inside (read-only file, full disk, corruption): one line
        conn.execute("ROLLBACK")
        raise translate(err) from err
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        conn.execute("ROLLBACK")
        raise translate(err) from err


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: several SELECTs see one consistent state, and no write lock is taken."""
    try:
        conn.execute("BEGIN")
        yield conn
    except sqlite3.Error as err:
        conn.execute("ROLLBACK")
        raise translate(err) from err
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
