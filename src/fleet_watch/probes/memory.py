"""Memory counters for this platform: ``/proc`` (and cgroup, PSI) on Linux, ``vm_stat``/``sysctl`` on macOS.

``root`` relocates procfs/cgroupfs to a fixture tree and ``runner`` replaces the macOS tools with captured output,
so both parsers are tested on any machine; the real paths run wherever the suite runs (Linux in CI).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fleet_watch.core import health as core
from fleet_watch.probes import _darwin, _linux


class MemoryProbe:
    """Reads memory counters for this platform. ``root`` relocates procfs/cgroupfs (fixture trees);
    ``runner`` replaces the macOS tools (captured output)."""

    def __init__(self, *, platform: str | None = None, root: Path | None = None,
                 runner: _darwin.Runner | None = None) -> None:
        self.platform = platform or sys.platform
        self.root = root or Path("/")
        self.runner = runner or _darwin.run_tool

    def read(self) -> core.MemoryCounters | None:
        if self.platform.startswith("linux"):
            s = _linux.sample_memory(self.root)
            psi = None if s.psi is None else {
                "some_avg10": s.psi.some_avg10, "some_avg60": s.psi.some_avg60, "some_avg300": s.psi.some_avg300,
                "full_avg10": s.psi.full_avg10, "full_avg60": s.psi.full_avg60, "full_avg300": s.psi.full_avg300,
            }
            cg = None if s.cgroup is None else {
                "version": s.cgroup.version, "path": s.cgroup.path, "limit_bytes": s.cgroup.limit_bytes,
                "usage_bytes": s.cgroup.usage_bytes, "inactive_file_bytes": s.cgroup.inactive_file_bytes,
            }
            return core.linux_counters(s.meminfo, s.vmstat, psi, cg)
        if self.platform == "darwin":
            d = _darwin.sample_memory(self.runner)
            if d.vm is None:
                return None
            return core.darwin_counters(
                d.vm.page_size, d.vm.counters, d.sysctl.memsize_bytes, swap_total_mb=d.sysctl.swap_total_mb,
                swap_used_mb=d.sysctl.swap_used_mb, pressure_level=d.sysctl.pressure_level,
            )
        return None
