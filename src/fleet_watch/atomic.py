"""Files that readers must never see half-written: temp file in the same directory, fsync, rename, fsync the folder.

A reader opening the path sees either the whole previous file or the whole new one, and a crash (or power loss)
right after the rename cannot leave an empty file behind: the data is on disk before the name points at it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step; the file gets ``mode`` (0600 unless another user must read it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, *, mode: int = 0o600) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable. Some filesystems refuse fsync on a directory: the rename still happened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
