"""``state_changelog.jsonl``: one JSON line per change between successive states, bounded by rotation.

The file is rotated when the next line would take it past ``changelog_max_bytes`` (config, default 1 MiB): it
becomes ``state_changelog.jsonl.1`` (replacing the older generation) and a new file starts. So the changelog never
holds more than two generations, and reading the last N entries reads at most both files. Appends happen under
the report lock (``service.report``), one ``write`` per line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_watch import jsonio
from fleet_watch.config import Settings
from fleet_watch.errors import DatabaseError

CHANGELOG_FILE = "state_changelog.jsonl"


def max_bytes(settings: Settings) -> int:
    """``changelog_max_bytes`` (validated in ``config``): one generation's size; two are kept."""
    return settings.changelog_max_bytes


def paths(home: Path) -> tuple[Path, Path]:
    """(current, previous generation)."""
    current = home / CHANGELOG_FILE
    return current, current.with_name(CHANGELOG_FILE + ".1")


def append(home: Path, item: Mapping[str, Any], limit: int) -> None:
    """One compact JSON line; rotate first if it would not fit (a file always holds at least one line)."""
    line = (json.dumps(item, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    current, older = paths(home)
    try:
        try:
            size = current.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > limit:
            os.replace(current, older)
        fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise DatabaseError(f"cannot append to {current}: {err.strerror}") from err


@dataclass(slots=True)
class Read:
    entries: list[dict[str, Any]] = field(default_factory=list)
    damaged: int = 0  # lines that were not a JSON object (skipped)
    exists: bool = False


def read_last(home: Path, lines: int) -> Read:
    """The newest ``lines`` entries, oldest first, across both generations."""
    out = Read()
    raw: list[bytes] = []
    for path in reversed(paths(home)):  # older generation first
        try:
            raw.extend(path.read_bytes().splitlines())
            out.exists = True
        except FileNotFoundError:
            continue
        except OSError as err:
            raise DatabaseError(f"cannot read {path}: {err.strerror}") from err
    for line in raw[-lines:] if lines else []:
        if not line.strip():
            continue
        try:
            doc = jsonio.loads(line)
        except jsonio.BadJson:
            out.damaged += 1
            continue
        if isinstance(doc, dict):
            out.entries.append(doc)
        else:
            out.damaged += 1
    return out
