"""External resources as the rest of Fleet Watch sees them: the live ones for ``state.external_resources`` and the
repo locks their claims hold, for the guard's repo decision and ``locked_repos``. Both read inside the caller's
transaction (the guard's snapshot, status's read) and take ``now``; neither writes.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fleet_watch.core import external as core
from fleet_watch.store import external as store


def live_external_resources(conn: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
    """Every resource its provider still reports, as ``state.external_resources`` holds it (``resource_view``)."""
    return [core.resource_view(row, now) for row in store.present_rows(conn)]


def external_repo_locks(conn: sqlite3.Connection, now: float) -> list[core.ExternalLock]:
    """Repo locks held by live external claims: ``repo_dir``, ``holder`` (a description), ``expires_at``, plus the
    claiming ``session_id`` (the same session passes) and the resource's ``provider``/``external_id``."""
    return core.repo_locks(store.present_rows(conn), now)
