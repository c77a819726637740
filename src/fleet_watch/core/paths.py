"""Repository path relations, compared on path components (``/a/repo`` never covers ``/a/repo2``)."""

from __future__ import annotations

from pathlib import PurePosixPath


def covers(lock: str, path: str) -> bool:
    """True when a lock on ``lock`` protects ``path`` (the same directory or anything inside it)."""
    lock_parts = PurePosixPath(lock).parts
    path_parts = PurePosixPath(path).parts
    return path_parts[: len(lock_parts)] == lock_parts


def overlaps(a: str, b: str) -> bool:
    """Two locks collide when either path contains the other."""
    return covers(a, b) or covers(b, a)
