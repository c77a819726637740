"""The memory a working set must fit in: this machine (detected), this machine as configured
(``physical_ram_mb``), or another machine being planned for (``--ram-mb``), minus what stays reserved.

Detected, best source first: NVIDIA free VRAM (every device for engines that split layers across GPUs, the
freest one otherwise), Apple Silicon's GPU working-set (wired) limit, else physical RAM.
"""

from __future__ import annotations

from typing import NamedTuple

from fleet_watch.config import Settings, default_reserve_mb
from fleet_watch.core.estimator import fit
from fleet_watch.errors import UsageError

_SPLIT_ACROSS_GPUS = ("llama_cpp", "ollama", "transformers")


class Memory(NamedTuple):
    limit_mb: int  # the memory the working set must fit in, before reserve and claims
    physical_ram_mb: int
    device: str  # cuda, apple, cpu
    origin: str  # "override", "nvidia_free_vram", "apple_wired_limit", "ram"
    free_mb: int | None = None  # NVIDIA: free now
    device_total_mb: int | None = None  # NVIDIA: total of the device(s) counted
    planned: bool = False  # --ram-mb: another machine, so nothing registered here counts against it

    def describe(self) -> str:
        if self.device == "apple" and self.limit_mb < self.physical_ram_mb:
            return f"the Apple GPU working-set limit ({self.limit_mb}MB of {self.physical_ram_mb}MB RAM)"
        if self.origin == "nvidia_free_vram":
            return f"GPU memory ({self.limit_mb}MB)"
        return f"physical RAM ({self.limit_mb}MB)"


def given_memory(ram_mb: int, framework: str, *, planned: bool) -> Memory:
    """A machine known only by its RAM: MLX plans for a Mac (the default wired limit), vLLM/SGLang for a GPU of
    that size, everything else for RAM (the README's Candle example: 8 GB -> 6144 MB after reserve)."""
    if framework == "mlx":
        limit = fit.apple_wired_limit_mb(ram_mb, None)[0]
        return Memory(limit, ram_mb, "apple", "override", device_total_mb=limit, planned=planned)
    device = "cuda" if framework in ("vllm", "sglang") else "cpu"
    return Memory(ram_mb, ram_mb, device, "override", device_total_mb=ram_mb, planned=planned)


def machine_memory(settings: Settings, ram_mb: int | None, framework: str) -> Memory:
    if ram_mb is not None:
        if ram_mb <= 0:
            raise UsageError(f"--ram-mb must be a positive number of MB, got {ram_mb}")
        return given_memory(ram_mb, framework, planned=True)
    if settings.physical_ram_mb:
        return given_memory(settings.physical_ram_mb, framework, planned=False)
    from fleet_watch.probes.machine import detect_memory

    mem = detect_memory()
    if mem.gpu_devices:
        if framework in _SPLIT_ACROSS_GPUS:
            free, total = sum(d.free_mb for d in mem.gpu_devices), sum(d.total_mb for d in mem.gpu_devices)
        else:
            best = max(mem.gpu_devices, key=lambda d: d.free_mb)
            free, total = best.free_mb, best.total_mb
        return Memory(total, mem.physical_ram_mb, "cuda", "nvidia_free_vram", free, total)
    if mem.apple_wired_limit_mb:
        return Memory(mem.apple_wired_limit_mb, mem.physical_ram_mb, "apple", "apple_wired_limit",
                      device_total_mb=mem.apple_wired_limit_mb)
    return Memory(mem.physical_ram_mb, mem.physical_ram_mb, "cpu", "ram", device_total_mb=mem.physical_ram_mb)


def reserve_mb(settings: Settings, mem: Memory) -> int:
    """What stays back for the OS and everything else.

    This machine (detected, or ``physical_ram_mb``) keeps its configured ``gpu_reserve_mb``, exactly as the ledger
    does, so that guard never shows two budgets for one machine. A machine planned with ``--ram-mb`` keeps the
    default reserve for its size (planning an 8 GB Mac from a 24 GB Linux box must not carry the Linux box's
    reserve); on a planned Mac the RAM above the wired limit is already kept back, so only the rest of that default
    counts. Capped at a quarter of the memory (see ``fit.effective_reserve_mb``).
    """
    if not mem.planned:
        return fit.effective_reserve_mb(mem.limit_mb, settings.gpu_reserve_mb)
    configured = default_reserve_mb(mem.physical_ram_mb)
    if mem.device == "apple":
        configured = max(0, configured - (mem.physical_ram_mb - mem.limit_mb))
    return fit.effective_reserve_mb(mem.limit_mb, configured)


def available_mb(settings: Settings, mem: Memory, allocated_mb: int, *, engine_reserves: bool = False
                 ) -> tuple[int, int, int]:
    """(reserve, allocated, available): limit - reserve - allocated, never more than NVIDIA reports free. On a
    planned machine nothing registered here is allocated.

    ``engine_reserves``: the engine claims a fraction of the device itself (vLLM/SGLang's
    ``gpu_memory_utilization``, which leaves the rest free), so no reserve is taken on top of it: with the default
    eighth, vLLM's 0.9 of an 80 GB GPU could never fit.
    """
    reserve = 0 if engine_reserves else reserve_mb(settings, mem)
    if mem.planned:
        allocated_mb = 0  # another machine: nothing registered here holds its memory
    available = mem.limit_mb - reserve - allocated_mb
    if mem.free_mb is not None:
        available = min(available, mem.free_mb)
    return reserve, allocated_mb, max(0, available)
