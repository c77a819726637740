"""The audit trail as a test reads it: straight from the registry file, as another process would."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def events(home: Path, event_type: str) -> list[dict[str, Any]]:
    """The ``detail`` of every ``event_type`` event, oldest first."""
    conn = sqlite3.connect(home / "registry.db")
    try:
        rows = conn.execute("SELECT detail FROM events WHERE event_type = ? ORDER BY seq", (event_type,))
        return [json.loads(d) for (d,) in rows]
    finally:
        conn.close()
