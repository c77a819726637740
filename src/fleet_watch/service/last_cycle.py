"""The last discovery cycle, persisted: the GPU memory monitor plus the sessions and idle workloads it saw.

``discover`` and every ``watch`` tick write ``gpu_memory_monitor.json`` atomically (one file, so the three parts
always come from the same cycle). ``status --json`` reads it instead of scanning, so it stays fast and read-only;
its memory figures are read fresh, with page-out rates measured since that cycle. Nothing here imports psutil.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleet_watch import jsonio
from fleet_watch.config import Settings, write_json_atomic
from fleet_watch.core import health as core
from fleet_watch.errors import StateFileError
from fleet_watch.probes.memory import MemoryProbe

MONITOR_FILE = "gpu_memory_monitor.json"
_CYCLE_KEYS = ("sessions", "idle")


def load_monitor(home: Path) -> dict[str, Any] | None:
    """The whole persisted document, or None when there is none (or it is unreadable: it is only a cache)."""
    try:
        doc = jsonio.loads((home / MONITOR_FILE).read_bytes())
    except (OSError, jsonio.BadJson):
        return None
    return doc if isinstance(doc, dict) and _well_formed(doc) else None


_LISTS = ("alerts", "gpu_process_footprints", "devices", "foreign_gpu_pids", "target_pids", "sessions", "idle")


def _well_formed(doc: Mapping[str, Any]) -> bool:
    """The shape this program writes; anything else is a damaged cache, ignored whole (the next cycle rewrites it)."""
    if any(k in doc and not isinstance(doc[k], list) for k in _LISTS):
        return False
    if any(not isinstance(e, dict) for k in ("alerts", "gpu_process_footprints", "devices", "sessions", "idle")
           for e in doc.get(k, [])):
        return False
    if any(not isinstance(e.get("pid"), int) for k in ("gpu_process_footprints", "sessions", "idle")
           for e in doc.get(k, [])):
        return False
    return all(k not in doc or doc[k] is None or isinstance(doc[k], dict)
               for k in ("pageout_rate", "memory", "memory_counters"))


def write_state_file(path: Path, document: Mapping[str, Any]) -> None:
    """Atomically, mode 0600. The registry is already written when this runs: a failure is reported (a watch tick
    carries it, the next tick retries) but loses nothing."""
    try:
        write_json_atomic(path, dict(document))
    except OSError as err:
        raise StateFileError(f"cannot write {path}: {err.strerror}") from err


def save_cycle(home: Path, monitor: Mapping[str, Any], *, sessions: Sequence[Mapping[str, Any]],
               idle: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Persist the cycle; returns the document written."""
    doc = {**monitor, "sessions": list(sessions), "idle": list(idle)}
    write_state_file(home / MONITOR_FILE, doc)
    return doc


def monitor_of(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``gpu_memory_monitor`` part of a persisted document."""
    return None if doc is None else {k: v for k, v in doc.items() if k not in _CYCLE_KEYS}


def listed(doc: Mapping[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """``sessions`` or ``idle`` of the last cycle; entries that are not objects are dropped."""
    value = (doc or {}).get(key)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def previous_memory(doc: Mapping[str, Any] | None) -> tuple[core.MemoryCounters | None, float | None]:
    """The counters and wall time of a persisted snapshot, enough for page-out rates across runs."""
    if not doc or not isinstance(doc.get("memory_counters"), dict) or not doc.get("timestamp_s"):
        return None, None
    c = doc["memory_counters"]
    try:
        at = float(doc["timestamp_s"])
    except (TypeError, ValueError):
        return None, None
    counts = {k: c.get(k) if isinstance(c.get(k), int) else None for k in ("pageouts", "swapins")}
    mem = core.MemoryCounters(
        source="previous", total_mb=0, available_mb=0, free_mb=0, active_mb=None, inactive_mb=None,
        compressed_mb=None, wired_mb=None, swap_total_mb=None, swap_used_mb=None, pageouts=counts["pageouts"],
        swapins=counts["swapins"], pressure_basis_mb=0,
    )
    return mem, at


def current_memory(settings: Settings, stored: Mapping[str, Any] | None, now: float,
                   probe: MemoryProbe | None = None) -> dict[str, Any]:
    """Memory now (one read of /proc or vm_stat), with rates since the persisted cycle when there is one."""
    counters = (probe or MemoryProbe()).read()
    prev, at = previous_memory(stored)
    interval = None if at is None or now <= at else now - at
    return core.memory_view(counters, prev if interval else None, interval, settings.pressure_thresholds)
