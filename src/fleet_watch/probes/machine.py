"""How much memory this machine has for models: NVIDIA VRAM, Apple's GPU working-set limit, or RAM."""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

from fleet_watch.core.estimator.fit import apple_wired_limit_mb
from fleet_watch.probes.nvml import GpuDevice, GpuProbe, NvmlProbe


class MachineMemory(NamedTuple):
    physical_ram_mb: int
    gpu_devices: tuple[GpuDevice, ...]
    apple_wired_limit_mb: int | None  # the Metal working-set limit on Apple Silicon
    apple_limit_estimated: bool = False

    @property
    def pool_mb(self) -> int:
        """The default GPU pool: NVIDIA VRAM, else the Apple working-set limit, else physical RAM."""
        if self.gpu_devices:
            return sum(d.total_mb for d in self.gpu_devices)
        if self.apple_wired_limit_mb:
            return self.apple_wired_limit_mb
        return self.physical_ram_mb


def physical_ram_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError):
        import psutil

        return int(psutil.virtual_memory().total // (1024 * 1024))


def _sysctl_int(name: str) -> int | None:
    import subprocess  # macOS only: Linux reads /proc, and the hooks' estimate path stays without it

    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return int(out.stdout.strip())
    except ValueError:
        return None


def detect_memory(gpu: GpuProbe | None = None) -> MachineMemory:
    ram = physical_ram_mb()
    devices = (gpu or NvmlProbe()).devices() or []
    limit: int | None = None
    estimated = False
    if not devices and sys.platform == "darwin" and os.uname().machine == "arm64":
        limit, estimated = apple_wired_limit_mb(ram, _sysctl_int("iogpu.wired_limit_mb"))
    return MachineMemory(physical_ram_mb=ram, gpu_devices=tuple(devices), apple_wired_limit_mb=limit,
                         apple_limit_estimated=estimated)


def detect_pool_mb() -> tuple[int, dict[str, int]]:
    """The default pool, and each NVIDIA device's VRAM by index (for per-device budgets)."""
    memory = detect_memory()
    return memory.pool_mb, {str(d.index): d.total_mb for d in memory.gpu_devices}
