"""Is a TCP port in use, and by whom. The yes/no answer is a ``bind()`` (microseconds); naming the owner
is the expensive part and happens only when a port is denied.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Any

_IN_USE = {errno.EADDRINUSE}


def _try_bind(family: int, address: str, port: int, *, v6only: bool | None = None) -> bool | None:
    """True: bound (free). False: in use. None: this probe cannot tell (no IPv6, no permission)."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        if sys.platform.startswith("linux"):
            # TIME_WAIT leftovers are not holders; Linux still refuses the bind while anything listens.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        sock.bind((address, port))
        return True
    except OSError as err:
        if err.errno in _IN_USE:
            return False
        return None  # EACCES below 1024, EADDRNOTAVAIL without IPv6: unknown, not "free"
    finally:
        sock.close()


def port_in_use(port: int) -> bool | None:
    """Whether anything listens on ``port`` on any local address family we can probe.

    A dual-stack ``::`` probe catches IPv4 and IPv6 listeners alike on Linux; the IPv4 wildcard and
    loopback probes cover hosts without IPv6 and the BSD bind rules of macOS.
    """
    answers = [
        _try_bind(socket.AF_INET6, "::", port, v6only=False),
        _try_bind(socket.AF_INET, "0.0.0.0", port),
        _try_bind(socket.AF_INET, "127.0.0.1", port),
    ]
    if False in answers:
        return True
    if True in answers:
        return False
    return None


def _proc_net_uid(port: int, proc_root: Path) -> int | None:
    """The owner uid of a listener from /proc/net/tcp{,6}: readable without root, unlike the socket's PID."""
    found = _proc_net_listeners(port, proc_root)
    return found[0][1] if found else None


def _proc_net_listeners(port: int, proc_root: Path) -> list[tuple[int, int]]:
    """(socket inode, owner uid) of each listener on ``port`` in /proc/net/tcp{,6}."""
    out: list[tuple[int, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_root / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                out.append((int(fields[9]), int(fields[7])))
    return out


def _linux_listener(port: int, proc_root: Path) -> dict[str, Any] | None:
    """The listener's PID from /proc alone: its socket inode in /proc/net/tcp, then the process (of that socket's
    uid) whose fd links to it. No psutil import on the guard's denial path (≈20 ms). None: not found this way."""
    from fleet_watch.probes.processes import process_facts

    sockets = _proc_net_listeners(port, proc_root)
    if not sockets:
        return None
    wanted = {f"socket:[{inode}]" for inode, _ in sockets if inode}
    uids = {uid for _, uid in sockets}
    pid = None
    with os.scandir(proc_root) as entries:
        for entry in entries:
            if entry.name.isdigit() and _holds_socket(entry, uids, wanted):
                pid = int(entry.name)
                break
    facts = process_facts(pid, proc_root) if pid is not None else None
    if pid is None or facts is None:
        return None
    return {"pid": pid, "name": facts.name, "start_time": facts.start_time, "uid": facts.uid}


def _holds_socket(entry: os.DirEntry[str], uids: set[int], wanted: set[str]) -> bool:
    """Whether the process of ``/proc/<pid>`` (of one of ``uids``) has one of the ``wanted`` sockets open."""
    try:
        if entry.stat().st_uid not in uids:
            return False
        with os.scandir(f"{entry.path}/fd") as fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in wanted:
                        return True
                except OSError:
                    continue
    except OSError:
        return False
    return False


def find_listener(port: int, proc_root: Path | None = None) -> dict[str, Any] | None:
    """Who listens on ``port``: pid, name, start time and uid as far as the OS will say."""
    if sys.platform.startswith("linux"):
        found_here = _linux_listener(port, proc_root or Path("/proc"))
        if found_here is not None:
            return found_here
    import psutil

    found: dict[str, Any] | None = None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                found = {"pid": conn.pid}
                if conn.pid is not None:
                    break
    except (psutil.AccessDenied, OSError):
        found = None
    if found is not None and found.get("pid") is not None:
        try:
            proc = psutil.Process(found["pid"])
            found.update(name=proc.name(), start_time=proc.create_time(), uid=proc.uids().real)
        except psutil.Error:
            pass
        return found
    if sys.platform.startswith("linux"):
        uid = _proc_net_uid(port, proc_root or Path("/proc"))
        if uid is not None:
            return {"pid": None, "uid": uid}
    return found
