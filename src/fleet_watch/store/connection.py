"""Opening ``registry.db``: WAL, a busy timeout, foreign keys, and migrations applied only when needed.

A read-only command on an up-to-date database takes no write lock: the schema check is a read of
``PRAGMA user_version``. SQLite errors are translated into ``DatabaseError`` here, at the edge.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleet_watch.errors import DatabaseError
from fleet_watch.store.migrations import MIGRATIONS, apply_migrations

# How long a writer waits for the write lock. Claim-changing transactions are short (milliseconds), but 40 agents
# registering at once on a loaded 2-core machine queue for seconds: 5 s was seen to fail a racer with "locked"
# (exit 5) there. Readers never wait in WAL mode, so only writers can ever take this long.
BUSY_TIMEOUT_MS = 30000


def _writable(path: Path) -> bool:
    """Whether this user may write the database (and its WAL files beside it)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect(path: Path, busy_timeout_ms: int) -> tuple[sqlite3.Connection, bool]:
    """Connect read-write where this user may write; else read-only, so that guard, status and history still
    answer from a registry that another user owns (WAL needs its -shm file writable: ``immutable`` is the fallback
    when even that is denied; such a reader cannot see a write in flight, and it cannot write)."""
    timeout = busy_timeout_ms / 1000
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


def open_db(path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open (creating if needed, mode 0600) and migrate the registry database. ``busy_timeout_ms`` bounds every
    wait for the write lock on this connection (an agent's hook, which must answer first, waits less)."""
    try:
        conn, writable = _connect(path, busy_timeout_ms)
    except OSError as err:
        raise DatabaseError(f"cannot open {path}: {err.strerror}") from err
    except sqlite3.Error as err:
        raise DatabaseError(f"cannot open {path}: {err}") from err
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < len(MIGRATIONS) and not writable:
            raise DatabaseError(f"{path} needs a schema upgrade ({version} -> {len(MIGRATIONS)}) that this user "
                                "cannot write: run any fleet command as its owner first")
        if version < len(MIGRATIONS):
            _initialise(conn, busy_timeout_ms)
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


def _jitter() -> float:
    """0 to 1, different for every racer (``random`` is not worth its import on every command)."""
    return (time.perf_counter_ns() ^ os.getpid() * 2654435761) % 1000 / 1000


def _is_busy(err: BaseException) -> bool:
    cause = err.__cause__ if isinstance(err, DatabaseError) else err
    return isinstance(cause, sqlite3.OperationalError) and ("locked" in str(cause) or "busy" in str(cause))


def _busy_ms(conn: sqlite3.Connection) -> int:
    """This connection's wait for the write lock, as ``open_db`` set it."""
    return int(conn.execute("PRAGMA busy_timeout").fetchone()[0])


def _initialise(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """WAL mode and the migrations, for a database that lacks them: on a fresh machine, 40 agents may all arrive
    here at once. Switching to WAL needs the database to itself and SQLite answers "locked" at once, without its
    busy handler, while others hold it open; so retry, with jitter, within the busy timeout."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            with immediate(conn):
                apply_migrations(conn)  # idempotent: a racer that finds the work done does nothing
            return
        except (sqlite3.OperationalError, DatabaseError) as err:
            if not _is_busy(err) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay * (0.5 + _jitter()))
            delay = min(delay * 2, 0.25)


def translate(err: sqlite3.Error, path: Path | None = None, waited_ms: int = BUSY_TIMEOUT_MS) -> DatabaseError:
    where = f"{path}: " if path is not None else "registry database: "
    text = str(err)
    if "readonly" in text or "read-only" in text:
        return DatabaseError(f"{where}the registry is read-only for this user: only read commands (guard, check, "
                             "status, history) work")
    if "locked" in text or "busy" in text:
        return DatabaseError(f"{where}database is locked by another writer (waited {waited_ms} ms)")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return DatabaseError(f"{where}database file is corrupt ({text})")
    return DatabaseError(f"{where}{text}")


@contextmanager
def savepoint(conn: sqlite3.Connection, name: str = "item") -> Iterator[None]:
    """Inside a write transaction: the block's changes are kept whole or undone whole, and the transaction goes on
    either way (the exception still propagates, for the caller to record)."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction that holds the write lock from its first statement to COMMIT.

    SQLite's busy handler waits for the lock, but some "locked" answers bypass it (a connection that meets the
    switch to WAL, or WAL recovery in progress): those are retried here, with jitter, within the same timeout.
    """
    waited_ms = _busy_ms(conn)
    deadline = time.monotonic() + waited_ms / 1000
    delay = 0.005
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.Error as err:
            if not _is_busy(err) or time.monotonic() + delay > deadline:
                raise translate(err, waited_ms=waited_ms) from err
            time.sleep(delay * (0.5 + _jitter()))
            delay = min(delay * 2, 0.25)
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
