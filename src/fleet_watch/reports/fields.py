"""Reading fields of a state document defensively, and formatting them for people.

Parts of the state come from files that other processes may have written or damaged (the last cycle's snapshot,
the previous ``state.json``); a view shows what it can and never fails on one odd value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fleet_watch.clock import parse_iso
from fleet_watch.core.inputs import is_control

MIB = 1 << 20


def num(value: object) -> float | None:
    """A JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def integer(value: object, default: int = 0) -> int:
    n = num(value)
    return default if n is None else int(n)


def text(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def oneline(value: object, default: str = "") -> str:
    """Outside text for a line of a screen or table: what ``core.inputs.is_control`` names (line breaks, terminal
    escapes, C1 controls, bidi overrides, bytes that were not UTF-8) becomes a space."""
    return "".join(" " if not c.isprintable() and is_control(c) else c for c in text(value, default))


def rows(doc: Mapping[str, Any] | None, key: str) -> list[Mapping[str, Any]]:
    """``doc[key]`` as a list of objects; anything else in it is dropped."""
    value = (doc or {}).get(key)
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []


def obj(doc: Mapping[str, Any] | None, key: str) -> Mapping[str, Any]:
    value = (doc or {}).get(key)
    return value if isinstance(value, Mapping) else {}


def ints(value: object) -> list[int]:
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)] if isinstance(value, list) else []


def strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def mb(value: object) -> str:
    """``12,288 MB``."""
    return f"{integer(value):,} MB"


def pct(part: float, whole: float) -> int:
    return round(100 * part / whole) if whole > 0 else 0


def parse_utc(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def short_time(value: object) -> str:
    """``2026-11-29 13:05:09`` from an ISO timestamp (UTC), or ``?``."""
    ts = parse_utc(value)
    return "?" if ts is None else datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``, ``12s``."""
    if seconds is None or seconds < 0:
        return "?"
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def identity(row: Mapping[str, Any]) -> tuple[int, float] | None:
    """(pid, start_time) of a process row, the key that joins processes, classifications and changelog states."""
    pid, start = row.get("pid"), num(row.get("start_time"))
    if not isinstance(pid, int) or isinstance(pid, bool) or start is None:
        return None
    return pid, start


def classes_by_identity(state: Mapping[str, Any]) -> dict[tuple[int, float], Mapping[str, Any]]:
    out: dict[tuple[int, float], Mapping[str, Any]] = {}
    for c in rows(state, "process_classifications"):
        key = identity(c)
        if key is not None:
            out[key] = c
    return out


def join(items: Sequence[object], sep: str = ", ", empty: str = "none") -> str:
    return sep.join(str(i) for i in items) if items else empty
