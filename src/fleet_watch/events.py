"""Public entry point kept from the README: ``events.verify_chain(conn) -> (valid, count)``."""

from __future__ import annotations

import sqlite3

from fleet_watch.core.chain import ChainReport, verify_events
from fleet_watch.store import audit


def verify(conn: sqlite3.Connection) -> ChainReport:
    """Verify the whole chain; the report names the first broken event."""
    return verify_events(audit.iter_all(conn), audit.head(conn))


def verify_chain(conn: sqlite3.Connection) -> tuple[bool, int]:
    """(True, n) when all n events verify; (False, k) where k events verified before the first break."""
    report = verify(conn)
    return report.valid, report.count
