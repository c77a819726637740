"""Public entry point kept from the README: ``events.verify_chain(conn) -> (valid, count)``."""

from __future__ import annotations

import sqlite3

from fleet_watch.core.chain import ChainReport, verify_events
from fleet_watch.store import audit
from fleet_watch.store.connection import snapshot


def verify(conn: sqlite3.Connection) -> ChainReport:
    """Verify the whole chain; the report names the first broken event.

    The events and the chain head are read in one snapshot: a write landing between two separate reads would make
    an intact chain look cut ("chain head does not match").
    """
    if conn.in_transaction:  # the caller's own transaction is already one snapshot
        return verify_events(list(audit.iter_all(conn)), audit.head(conn))
    with snapshot(conn):
        events = list(audit.iter_all(conn))
        head = audit.head(conn)
    return verify_events(events, head)


def verify_chain(conn: sqlite3.Connection) -> tuple[bool, int]:
    """(True, n) when all n events verify; (False, k) where k events verified before the first break."""
    report = verify(conn)
    return report.valid, report.event_count
