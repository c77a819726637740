"""Is a TCP port in use, and by whom. The yes/no answer is a ``bind()`` (microseconds); naming the owner
is the expensive part and happens only when a port is denied.
"""

from __future__ import annotations

import errno
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
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_root / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[7])
    return None


def find_listener(port: int, proc_root: Path | None = None) -> dict[str, Any] | None:
    """Who listens on ``port``: pid, name, start time and uid as far as the OS will say."""
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
