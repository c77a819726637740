"""One pass over every process and every listening TCP socket, through psutil. No shelling out.

``process_iter`` with an attrs list reads each process once (psutil keeps its ``Process`` cache warm
between calls, which is what a long-running ``watch`` wants); the socket table is one system-wide
``net_connections`` call on Linux. What the OS will not tell us is *marked* (``readable=False``, a
listener with ``pid=None`` but its owner uid from ``/proc/net/tcp*``), never raised.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from fleet_watch.core import liveness
from fleet_watch.core.inputs import from_outside
from fleet_watch.probes import _linux

MIB = 1024 * 1024
_ATTRS = ["pid", "ppid", "name", "cmdline", "create_time", "uids", "status", "memory_info", "cpu_times"]


class ProcInfo(NamedTuple):
    pid: int
    ppid: int | None
    name: str
    argv: tuple[str, ...]
    start_time: float | None
    uid: int | None
    rss_mb: int | None
    cpu_s: float | None  # user + system seconds since the process started (cumulative)
    status: str | None
    readable: bool = True  # False: the command line or identity could not be read (permissions)

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv) if self.argv else self.name

    @property
    def is_zombie(self) -> bool:
        return self.status in ("zombie", "dead")


class Listener(NamedTuple):
    port: int
    address: str
    pid: int | None  # None: the socket's owner is not ours to see (another user, another PID namespace)
    uid: int | None


class ProcDetails(NamedTuple):
    """What only sessions need, read per process because it is costly (tty) or privileged (cwd)."""

    tty: str | None
    cwd: str | None


def _info(values: dict[str, Any]) -> ProcInfo:
    argv = values.get("cmdline")
    uids = values.get("uids")
    mem = values.get("memory_info")
    cpu = values.get("cpu_times")
    name = values.get("name") or ""
    return ProcInfo(
        pid=int(values["pid"]),
        ppid=values.get("ppid"),
        name=from_outside(str(name)),
        argv=tuple(from_outside(str(a)) for a in argv) if argv else (),  # not UTF-8 must not cost the cycle
        start_time=values.get("create_time"),
        uid=None if uids is None else int(uids.real),
        rss_mb=None if mem is None else int(mem.rss // MIB),
        cpu_s=None if cpu is None else float(cpu.user + cpu.system),
        status=values.get("status"),
        # Kernel threads have an empty command line legitimately; an unreadable one comes back as None.
        readable=argv is not None and values.get("create_time") is not None,
    )


class ProcessScanner:
    """The real process and socket probe. Create one per command; ``watch`` keeps one for its lifetime."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path("/")
        self.is_linux = sys.platform.startswith("linux")

    def processes(self) -> list[ProcInfo]:
        import psutil

        out: list[ProcInfo] = []
        for proc in psutil.process_iter(_ATTRS, ad_value=None):
            try:
                out.append(_info(proc.info))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a process that vanished half-read
        return out

    def listeners(self, candidate_pids: Collection[int] = ()) -> tuple[list[Listener], bool]:
        """Every listening TCP socket, and whether the view is complete.

        Linux: one system-wide call; sockets it cannot attribute keep their owner uid from /proc/net.
        macOS without root: only the candidates' own sockets (the system-wide call raises AccessDenied).
        """
        import psutil

        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.AccessDenied, PermissionError):
            return self._per_process(candidate_pids), False
        except OSError:
            return [], False
        out: list[Listener] = []
        seen: set[tuple[int, str]] = set()
        unattributed = False
        for c in conns:
            if c.status != psutil.CONN_LISTEN or not c.laddr:
                continue
            key = (int(c.laddr.port), str(c.laddr.ip))
            if key in seen:
                continue
            seen.add(key)
            unattributed = unattributed or c.pid is None
            out.append(Listener(port=key[0], address=key[1], pid=c.pid, uid=None))
        if self.is_linux and unattributed:
            owners = {(p.port, p.address): p.uid for p in _linux.read_tcp_listeners(self.root)}
            out = [lst if lst.pid is not None else Listener(port=lst.port, address=lst.address, pid=None,
                                                           uid=owners.get((lst.port, lst.address)))
                   for lst in out]
        return out, True

    @staticmethod
    def _per_process(pids: Iterable[int]) -> list[Listener]:
        import psutil

        out: list[Listener] = []
        for pid in pids:
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            for c in conns:
                if c.status == psutil.CONN_LISTEN and c.laddr:
                    out.append(Listener(port=int(c.laddr.port), address=str(c.laddr.ip), pid=pid, uid=None))
        return out

    @staticmethod
    def details(pid: int, start_time: float | None) -> ProcDetails | None:
        import psutil

        try:
            proc = psutil.Process(pid)
            if start_time is not None and not liveness.same_start(start_time, proc.create_time()):
                return None
            with proc.oneshot():
                try:
                    tty = proc.terminal()
                except psutil.AccessDenied:
                    tty = None
                try:
                    cwd: str | None = proc.cwd()
                except psutil.AccessDenied:
                    cwd = None
        except psutil.Error:
            return None
        return ProcDetails(tty=tty, cwd=None if cwd is None else from_outside(cwd))

    @staticmethod
    def cpu_seconds(pids: Iterable[int]) -> dict[int, tuple[float, float]]:
        """{pid: (start_time, cpu seconds)} for a few PIDs: the second sample of a CPU-rate measurement."""
        import psutil

        out: dict[int, tuple[float, float]] = {}
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    t = proc.cpu_times()
                    out[pid] = (proc.create_time(), float(t.user + t.system))
            except psutil.Error:
                continue
        return out

    @staticmethod
    def footprint_mb(pid: int) -> int | None:
        """The process's memory footprint on a Mac (Metal buffers live in it): what Activity Monitor shows."""
        if sys.platform != "darwin":
            return None
        from fleet_watch.probes._darwin import phys_footprint_mb

        return phys_footprint_mb(pid)


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and os.uname().machine == "arm64"


def monotonic() -> float:
    return time.monotonic()
