"""NVIDIA devices through NVML (nvidia-ml-py), imported lazily, every call through one choke point.

The rest of the package sees only ``GpuDevice`` values; an absent driver is ``None``, never an
exception. The real path is exercised on a GPU host by ``bench/nvml_check.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

MIB = 1024 * 1024


class GpuDevice(NamedTuple):
    index: int  # type: ignore[assignment]  # NVML's name; it hides tuple.index(), which no one calls on a device
    name: str
    total_mb: int
    used_mb: int
    free_mb: int
    utilization_pct: int | None = None
    temperature_c: int | None = None


class GpuProcess(NamedTuple):
    device: int
    pid: int
    used_mb: int | None


class GpuProbe(Protocol):
    def devices(self) -> list[GpuDevice] | None: ...

    def processes(self) -> list[GpuProcess]: ...


# Where an NVIDIA driver shows itself: the kernel module (also inside containers run with the NVIDIA runtime), its
# control device, and WSL2's GPU paravirtualisation device. None of them: importing pynvml (~10 ms) and asking
# NVML would only fail. FLEET_WATCH_NVML=1 asks NVML anyway.
_DRIVER_SIGNS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")


def driver_may_be_present() -> bool:
    if os.environ.get("FLEET_WATCH_NVML") == "1":
        return True
    if sys.platform == "darwin":  # no NVML on macOS
        return False
    return any(os.path.exists(p) for p in _DRIVER_SIGNS)


class NvmlProbe:
    """The real probe. ``devices()`` is ``None`` when there is no NVIDIA driver (or no nvidia-ml-py)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._failed = False

    def _lib(self) -> Any:
        if self._nvml is None and not self._failed:
            if not driver_may_be_present():
                self._failed = True
                return None
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ImportError: no NVIDIA
                self._failed = True
        return self._nvml

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The choke point: "not supported" and "no such function" become ``None``."""
        nvml = self._nvml
        try:
            return fn(*args)
        except nvml.NVMLError:
            return None

    def devices(self) -> list[GpuDevice] | None:
        nvml = self._lib()
        if nvml is None:
            return None
        count = self._call(nvml.nvmlDeviceGetCount) or 0
        out = []
        for i in range(count):
            handle = self._call(nvml.nvmlDeviceGetHandleByIndex, i)
            if handle is None:
                continue
            mem = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
            if mem is None:
                continue
            name = self._call(nvml.nvmlDeviceGetName, handle)
            util = self._call(nvml.nvmlDeviceGetUtilizationRates, handle)
            temp = self._call(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            out.append(GpuDevice(
                index=i,
                name=name.decode() if isinstance(name, bytes) else str(name or f"GPU {i}"),
                total_mb=int(mem.total // MIB), used_mb=int(mem.used // MIB), free_mb=int(mem.free // MIB),
                utilization_pct=None if util is None else int(util.gpu),
                temperature_c=None if temp is None else int(temp),
            ))
        return out

    def processes(self) -> list[GpuProcess]:
        nvml = self._lib()
        if nvml is None:
            return []
        # A process can be on both the compute and the graphics list of a device: one entry per
        # (device, pid), keeping the larger figure (gpustat and nvitop de-duplicate the same way).
        seen: dict[tuple[int, int], GpuProcess] = {}
        count = self._call(nvml.nvmlDeviceGetCount) or 0
        for i in range(count):
            handle = self._call(nvml.nvmlDeviceGetHandleByIndex, i)
            if handle is None:
                continue
            for getter in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
                for p in self._call(getter, handle) or []:
                    used = getattr(p, "usedGpuMemory", None)
                    entry = GpuProcess(device=i, pid=int(p.pid), used_mb=None if used is None else int(used // MIB))
                    prior = seen.get((i, entry.pid))
                    if prior is None or (entry.used_mb or 0) > (prior.used_mb or 0):
                        seen[(i, entry.pid)] = entry
        return list(seen.values())
