"""macOS memory telemetry: parsers for ``vm_stat`` and ``sysctl`` output, the runner that calls them,
and a process's physical footprint (what Activity Monitor and ``footprint`` report) through libproc.

The parsers are pure text -> values and are tested against captured output; the runner and the ctypes
call only run on a Mac. Health is not a hot path, so two short subprocesses per sample are acceptable.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from typing import NamedTuple

SYSCTL_KEYS = ("hw.memsize", "hw.pagesize", "vm.swapusage", "kern.memorystatus_vm_pressure_level")
DEFAULT_PAGE_SIZE = 16384  # Apple Silicon; Intel Macs print 4096 in vm_stat's header

_PAGE_SIZE = re.compile(r"page size of (\d+) bytes")
_COUNTER = re.compile(r'^"?([^":]+)"?:\s+(\d+)\.?\s*$')
_SWAP = re.compile(r"(total|used|free)\s*=\s*([\d.]+)([KMGT]?)")
_UNIT = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}


class VmStat(NamedTuple):
    page_size: int
    counters: dict[str, int]  # label -> pages (or events: "Pageouts", "Swapins", "Compressions", ...)

    def pages(self, label: str) -> int:
        return self.counters.get(label, 0)

    def mb(self, label: str) -> int:
        return self.pages(label) * self.page_size // (1024 * 1024)


def parse_vm_stat(text: str) -> VmStat | None:
    """``vm_stat`` output: a header naming the page size, then ``Label:   N.`` lines."""
    counters: dict[str, int] = {}
    page_size = DEFAULT_PAGE_SIZE
    for line in text.splitlines():
        m = _PAGE_SIZE.search(line)
        if m:
            page_size = int(m.group(1))
            continue
        c = _COUNTER.match(line.strip())
        if c:
            counters[c.group(1).strip()] = int(c.group(2))
    if "Pages free" not in counters:
        return None
    return VmStat(page_size=page_size, counters=counters)


class SysctlMemory(NamedTuple):
    memsize_bytes: int | None
    page_size: int | None
    swap_total_mb: float | None
    swap_used_mb: float | None
    pressure_level: int | None  # kern.memorystatus_vm_pressure_level: 1 normal, 2 warn, 4 critical


def parse_sysctl(text: str) -> SysctlMemory:
    """``sysctl hw.memsize hw.pagesize vm.swapusage kern.memorystatus_vm_pressure_level`` (``name: value``)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()

    def as_int(key: str) -> int | None:
        try:
            return int(values[key])
        except (KeyError, ValueError):
            return None

    swap_total = swap_used = None
    for field, number, unit in _SWAP.findall(values.get("vm.swapusage", "")):
        mb = float(number) * _UNIT[unit]
        if field == "total":
            swap_total = mb
        elif field == "used":
            swap_used = mb
    return SysctlMemory(
        memsize_bytes=as_int("hw.memsize"), page_size=as_int("hw.pagesize"), swap_total_mb=swap_total,
        swap_used_mb=swap_used, pressure_level=as_int("kern.memorystatus_vm_pressure_level"),
    )


Runner = Callable[[Sequence[str]], str | None]


def run_tool(argv: Sequence[str]) -> str | None:
    """Run a read-only system tool with a short timeout; any failure is ``None`` (never fail open)."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


class DarwinMemorySample(NamedTuple):
    vm: VmStat | None
    sysctl: SysctlMemory


def sample_memory(run: Runner = run_tool) -> DarwinMemorySample:
    vm_text = run(["vm_stat"])
    # sysctl exits non-zero if one name is unknown (e.g. the pressure level on an old release): ask
    # for the essentials together and the optional key alone.
    sys_text = run(["sysctl", *SYSCTL_KEYS[:3]]) or ""
    level = run(["sysctl", SYSCTL_KEYS[3]]) or ""
    return DarwinMemorySample(vm=parse_vm_stat(vm_text) if vm_text else None,
                              sysctl=parse_sysctl(sys_text + "\n" + level))


def phys_footprint_mb(pid: int) -> int | None:
    """``ri_phys_footprint`` from ``proc_pid_rusage`` (RUSAGE_INFO_V2): memory the process is charged for,
    Metal buffers included. Same-user processes only; ``None`` when it cannot be read."""
    import ctypes
    import ctypes.util

    path = ctypes.util.find_library("proc") or "/usr/lib/libSystem.B.dylib"
    try:
        lib = ctypes.CDLL(path, use_errno=True)
    except OSError:
        return None

    class RusageInfoV2(ctypes.Structure):
        _fields_ = [
            ("ri_uuid", ctypes.c_uint8 * 16),
            *[(name, ctypes.c_uint64) for name in (
                "ri_user_time", "ri_system_time", "ri_pkg_idle_wkups", "ri_interrupt_wkups", "ri_pageins",
                "ri_wired_size", "ri_resident_size", "ri_phys_footprint", "ri_proc_start_abstime",
                "ri_proc_exit_abstime", "ri_child_user_time", "ri_child_system_time", "ri_child_pkg_idle_wkups",
                "ri_child_interrupt_wkups", "ri_child_pageins", "ri_child_elapsed_abstime", "ri_diskio_bytesread",
                "ri_diskio_byteswritten")],
        ]

    info = RusageInfoV2()
    rusage_info_v2 = 2
    try:
        rc = lib.proc_pid_rusage(ctypes.c_int(pid), ctypes.c_int(rusage_info_v2), ctypes.byref(info))
    except AttributeError:
        return None
    if rc != 0:
        return None
    return int(info.ri_phys_footprint // (1024 * 1024))
