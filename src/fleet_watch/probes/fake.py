"""Stand-ins for what this machine may lack: an NVIDIA driver and the macOS memory tools.

Passed in by tests (``Discovery(fleet, gpu=FakeGpuProbe(...))``, ``MemoryProbe(runner=FakeToolRunner(...))``);
production code never selects them. Processes and sockets are never faked: tests start real ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleet_watch.probes.nvml import GpuDevice, GpuProcess


@dataclass
class FakeGpuProbe:
    """A ``GpuProbe`` with scripted answers. ``devices=None`` means "no NVIDIA driver"."""

    devices_: list[GpuDevice] | None = None
    processes_: list[GpuProcess] = field(default_factory=list)

    def devices(self) -> list[GpuDevice] | None:
        return None if self.devices_ is None else list(self.devices_)

    def processes(self) -> list[GpuProcess]:
        return list(self.processes_) if self.devices_ is not None else []

    @classmethod
    def from_json(cls, text: str) -> FakeGpuProbe:
        """``{"devices": [{index, name, total_mb, used_mb, free_mb, ...}], "processes": [{device, pid, used_mb}]}``."""
        doc = json.loads(text)
        devices = [GpuDevice(**d) for d in doc.get("devices", [])]
        procs = [GpuProcess(**p) for p in doc.get("processes", [])]
        return cls(devices_=devices, processes_=procs)


@dataclass
class FakeToolRunner:
    """Answers ``vm_stat`` / ``sysctl`` invocations from captured output, keyed by the joined argv."""

    outputs: Mapping[str, str]
    calls: list[str] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> str | None:
        key = " ".join(argv)
        self.calls.append(key)
        return self.outputs.get(key)
