"""Identity and liveness of single processes: the guard's cheap per-holder check.

On Linux this reads ``/proc/<pid>/stat`` directly (what psutil's ``create_time()`` is computed from,
with the same arithmetic, so both agree); elsewhere it asks psutil, imported only then.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import NamedTuple

from fleet_watch.core import liveness


class ProcessFacts(NamedTuple):
    pid: int
    start_time: float
    is_zombie: bool
    uid: int | None
    name: str | None


@cache
def _boot_time(proc: str) -> float:
    with open(f"{proc}/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


@cache
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int, proc: str) -> bytes | None:
    """``/proc/<pid>/stat`` in one read (≈15 µs), or None when there is no such process."""
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    try:
        return os.read(fd, 4096)
    except ProcessLookupError:  # the process went away between open and read
        return None
    finally:
        os.close(fd)


def _linux_facts(pid: int, proc: str) -> ProcessFacts | None:
    data = _read_stat(pid, proc)
    if data is None:
        return None
    # comm may hold spaces and parentheses: the fields after it start at the *last* ')'.
    close = data.rfind(b")")
    name = data[data.find(b"(") + 1 : close].decode("utf-8", "replace")
    fields = data[close + 2 :].split()
    state = fields[0]
    start_ticks = int(fields[19])
    start_time = start_ticks / _clock_ticks() + _boot_time(proc)
    try:
        uid: int | None = os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        uid = None
    return ProcessFacts(pid=pid, start_time=start_time, is_zombie=state in (b"Z", b"X"), uid=uid, name=name)


def _psutil_facts(pid: int) -> ProcessFacts | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            status = proc.status()
            start = proc.create_time()
            try:
                uid: int | None = proc.uids().real
            except psutil.AccessDenied:
                uid = None
            name = proc.name()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None
    return ProcessFacts(pid=pid, start_time=start, is_zombie=status == psutil.STATUS_ZOMBIE, uid=uid, name=name)


def process_facts(pid: int, proc_root: Path | None = None) -> ProcessFacts | None:
    """What identifies ``pid`` now, or ``None`` when no such process exists."""
    if pid <= 0:
        return None
    if sys.platform.startswith("linux"):
        proc = str(proc_root or "/proc")
        try:
            return _linux_facts(pid, proc)
        except (OSError, ValueError, IndexError):
            pass  # an odd /proc (hidepid, a container): let psutil try
    return _psutil_facts(pid)


def _linux_start_and_state(pid: int, proc: str = "/proc") -> tuple[float, bool] | None:
    """(start time, is zombie) from one read of ``/proc/<pid>/stat``: the guard asks this of every holder, so no
    uid lookup and no object. None: no such process. Raises on an odd /proc (the caller falls back)."""
    data = _read_stat(pid, proc)
    if data is None:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[19]) / _clock_ticks() + _boot_time(proc), fields[0] in (b"Z", b"X")


def death_reason(pid: int, start_time: float) -> str | None:
    """The liveness rule (``core.liveness``) for one recorded identity, asked of the kernel now."""
    if pid > 0 and sys.platform.startswith("linux"):
        try:
            seen = _linux_start_and_state(pid)
        except (OSError, ValueError, IndexError):
            seen = None
            facts = process_facts(pid)
            if facts is not None:
                seen = (facts.start_time, facts.is_zombie)
        if seen is None:
            return liveness.death_reason(start_time, exists=False, start_time=None, is_zombie=False)
        return liveness.death_reason(start_time, exists=True, start_time=seen[0], is_zombie=seen[1])
    facts = process_facts(pid)
    if facts is None:
        return liveness.death_reason(start_time, exists=False, start_time=None, is_zombie=False)
    return liveness.death_reason(start_time, exists=True, start_time=facts.start_time, is_zombie=facts.is_zombie)


def is_descendant(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is on ``pid``'s parent chain now (a launcher and the server it started)."""
    import psutil

    try:
        return any(p.pid == ancestor for p in psutil.Process(pid).parents())
    except psutil.Error:
        return False
