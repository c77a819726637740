"""Linux memory telemetry read straight from procfs and cgroupfs: meminfo, vmstat, PSI, cgroup limits.

Every reader takes ``root`` (the filesystem root, ``/`` in production, a fixture folder in tests) and
returns plain values; a missing or unreadable file is ``None``, never an exception. No decisions here.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

KIB = 1024
MIB = 1024 * 1024
# cgroup v1 reports "no limit" as a huge page-aligned number (LONG_MAX rounded down to a page).
_V1_UNLIMITED = 1 << 62


class Psi(NamedTuple):
    """``/proc/pressure/memory``: share of time (percent) some / all tasks stalled on memory."""

    some_avg10: float
    some_avg60: float
    some_avg300: float
    full_avg10: float | None
    full_avg60: float | None
    full_avg300: float | None


class CgroupMemory(NamedTuple):
    """The tightest memory limit that confines this process, and what that cgroup uses now."""

    version: int
    path: str
    limit_bytes: int
    usage_bytes: int | None
    inactive_file_bytes: int | None  # page cache the kernel can drop: not "used" for pressure


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_meminfo(root: Path) -> dict[str, int] | None:
    """``/proc/meminfo`` in bytes, keyed by the field name (``MemTotal``, ``MemAvailable``, ...)."""
    text = _read(root / "proc" / "meminfo")
    if text is None:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = value * KIB if len(parts) > 1 and parts[1] == "kB" else value
    return out or None


def read_vmstat(root: Path) -> dict[str, int] | None:
    """``/proc/vmstat`` counters (``pswpin``, ``pswpout``, ``pgmajfault``, ...), in pages or events."""
    text = _read(root / "proc" / "vmstat")
    if text is None:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out or None


def _psi_line(line: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in line.split()[1:]:
        key, _, raw = item.partition("=")
        try:
            values[key] = float(raw)
        except ValueError:
            continue
    return values


def read_psi(root: Path) -> Psi | None:
    """Pressure stall information (kernel >= 4.20 with CONFIG_PSI); ``None`` where the kernel lacks it."""
    text = _read(root / "proc" / "pressure" / "memory")
    if text is None:
        return None
    some: dict[str, float] = {}
    full: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("some "):
            some = _psi_line(line)
        elif line.startswith("full "):
            full = _psi_line(line)
    if "avg10" not in some:
        return None
    return Psi(
        some_avg10=some["avg10"], some_avg60=some.get("avg60", 0.0), some_avg300=some.get("avg300", 0.0),
        full_avg10=full.get("avg10"), full_avg60=full.get("avg60"), full_avg300=full.get("avg300"),
    )


def _int_file(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def _own_cgroups(root: Path, pid: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory-controller path) from ``/proc/<pid>/cgroup``."""
    text = _read(root / "proc" / pid / "cgroup")
    v2: str | None = None
    v1: str | None = None
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _ancestors(cgroup_path: str) -> list[str]:
    """``/a/b/c`` -> ``['/a/b/c', '/a/b', '/a', '/']``: a limit anywhere above confines us too."""
    parts = [p for p in cgroup_path.split("/") if p]
    return ["/" + "/".join(parts[:i]) if i else "/" for i in range(len(parts), -1, -1)]


def read_cgroup_memory(root: Path, pid: str = "self") -> CgroupMemory | None:
    """The tightest cgroup memory limit over this process's cgroup and its ancestors, if any is set.

    In a container the cgroup namespace makes our own cgroup appear as ``/``, so the mount root is also
    tried. ``None`` means "not confined" (or no cgroupfs): the machine's totals apply.
    """
    v2, v1 = _own_cgroups(root, pid)
    best: CgroupMemory | None = None
    base = root / "sys" / "fs" / "cgroup"
    if v2 is not None:
        for rel in _ancestors(v2):
            folder = base / rel.lstrip("/")
            limit = _int_file(folder / "memory.max")
            if limit is not None and (best is None or limit < best.limit_bytes):
                best = CgroupMemory(
                    version=2, path=rel, limit_bytes=limit, usage_bytes=_int_file(folder / "memory.current"),
                    inactive_file_bytes=_stat_value(folder / "memory.stat", "inactive_file"),
                )
    if best is None and v1 is not None:
        mem = base / "memory"
        for rel in dict.fromkeys([*_ancestors(v1), "/"]):
            folder = mem / rel.lstrip("/")
            limit = _int_file(folder / "memory.limit_in_bytes")
            if limit is not None and limit < _V1_UNLIMITED and (best is None or limit < best.limit_bytes):
                best = CgroupMemory(
                    version=1, path=rel, limit_bytes=limit, usage_bytes=_int_file(folder / "memory.usage_in_bytes"),
                    inactive_file_bytes=_stat_value(folder / "memory.stat", "total_inactive_file"),
                )
    return best


class LinuxMemorySample(NamedTuple):
    meminfo: dict[str, int] | None
    vmstat: dict[str, int] | None
    psi: Psi | None
    cgroup: CgroupMemory | None


def sample_memory(root: Path) -> LinuxMemorySample:
    return LinuxMemorySample(
        meminfo=read_meminfo(root), vmstat=read_vmstat(root), psi=read_psi(root), cgroup=read_cgroup_memory(root),
    )


class ProcListener(NamedTuple):
    """A listening TCP socket as ``/proc/net/tcp{,6}`` shows it: readable by anyone, owner uid included."""

    port: int
    address: str
    family: int  # 4 or 6
    uid: int
    inode: int


def _hex_address(raw: str, family: int) -> str:
    import socket

    data = bytes.fromhex(raw)
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, data[::-1])
    # /proc/net/tcp6 prints the address as four host-order 32-bit words.
    words = b"".join(data[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def read_tcp_listeners(root: Path) -> list[ProcListener]:
    """Every socket in state LISTEN (``0A``) from ``/proc/net/tcp`` and ``/proc/net/tcp6``."""
    out: list[ProcListener] = []
    for name, family in (("tcp", 4), ("tcp6", 6)):
        text = _read(root / "proc" / "net" / name)
        if text is None:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":
                continue
            try:
                addr, port = fields[1].rsplit(":", 1)
                out.append(ProcListener(port=int(port, 16), address=_hex_address(addr, family), family=family,
                                        uid=int(fields[7]), inode=int(fields[9])))
            except (ValueError, OSError):
                continue
    return out
