"""Public entry point kept from the README: ``registry.connect()`` opens the registry database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from fleet_watch.config import DB_NAME, ensure_home, resolve_home
from fleet_watch.store.connection import open_db


def connect(home: str | os.PathLike[str] | None = None) -> sqlite3.Connection:
    """Open ``registry.db`` under ``home`` (default: $FLEET_WATCH_HOME or ~/.fleet-watch), migrated."""
    path = Path(home) if home is not None else resolve_home(os.environ)
    ensure_home(path)
    return open_db(path / DB_NAME)
