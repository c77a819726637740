"""The server's report against NVML, through the one NVML interface (``GpuProbe``) with a scripted driver: the
processes and their HTTP answers are real. (The real NVML path is checked on GPU hosts by ``bench/nvml_check.py``.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_watch.core import discovery as dcore
from fleet_watch.probes.fake import FakeGpuProbe
from fleet_watch.probes.nvml import GpuDevice, GpuProcess
from fleet_watch.service.discovery import Discovery
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.servers import inventory
from tests.servers.helpers import StandIns

GIB = 1024**3
H100 = GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", total_mb=81559, used_mb=40000, free_mb=41559)
MODELS = [{"name": "a:latest", "model": "a:latest", "size": 21 * GIB, "size_vram": 20 * GIB},
          {"name": "b:latest", "model": "b:latest", "size": 11 * GIB, "size_vram": 10 * GIB}]


@pytest.fixture
def opened(fleet_home: Path) -> Iterator[Fleet]:
    f = Fleet.open(fleet_home)
    try:
        yield f
    finally:
        f.close()


def observed(disc: Discovery, pid: int) -> dcore.Observed:
    return next(o for o in disc.scan().observed if o.workload.pid == pid)


def test_nvml_wins_when_it_sees_the_memory_and_ollama_when_it_does_not(opened: Fleet, stand_ins: StandIns) -> None:
    ollama = stand_ins.start("ollama", ["ollama", "serve"], models=MODELS)
    runner_seen = FakeGpuProbe(devices_=[H100], processes_=[GpuProcess(device=0, pid=ollama.pid, used_mb=31200)])
    o = observed(Discovery(opened, gpu=runner_seen), ollama.pid)
    assert (o.gpu_mb, o.gpu_source) == (31200, "nvml")
    # A driver that lists no per-process memory (WSL2, some containers) does not overrule Ollama's own report.
    blind = FakeGpuProbe(devices_=[H100], processes_=[])
    o = observed(Discovery(opened, gpu=blind), ollama.pid)
    assert (o.gpu_mb, o.gpu_source) == (30720, "ollama_api")
    o = observed(Discovery(opened, gpu=FakeGpuProbe(devices_=None)), ollama.pid)
    assert (o.gpu_mb, o.gpu_source) == (30720, "ollama_api")


def test_resolve_gpu_order() -> None:
    assert dcore.resolve_gpu(nvml_mb=5, server_mb=9, footprint_mb=1, estimate_mb=2, default_mb=3) == (5, "nvml")
    assert dcore.resolve_gpu(nvml_mb=0, server_mb=9, footprint_mb=1, estimate_mb=2, default_mb=3) == (9, "ollama_api")
    assert dcore.resolve_gpu(nvml_mb=0, server_mb=0, footprint_mb=1, estimate_mb=2, default_mb=3) == (0, "ollama_api")
    assert dcore.resolve_gpu(nvml_mb=None, server_mb=0, footprint_mb=1, estimate_mb=2, default_mb=3) == (
        0, "ollama_api")
    assert dcore.GPU_SOURCES.index("ollama_api") == 1


def test_a_single_model_server_without_a_memory_figure_gets_nvmls(opened: Fleet, stand_ins: StandIns) -> None:
    llama = stand_ins.start("llama-server", ["llama-server", "-m", "/m.gguf", "--port", "0"])
    router = stand_ins.start("llama-server", ["llama-server", "--port", "0"], models=[
        {"id": "a", "status": {"value": "loaded", "args": []}}, {"id": "b", "status": {"value": "loaded", "args": []}}])
    fake = FakeGpuProbe(devices_=[H100], processes_=[GpuProcess(device=0, pid=llama.pid, used_mb=5200),
                                                      GpuProcess(device=0, pid=router.pid, used_mb=9000)])
    models = {(m.pid, m.name): m for m in inventory(opened.settings, gpu=fake).models}
    single = models[(llama.pid, "/m.gguf")]
    assert (single.vram_mb, single.size_mb) == (5200, 4466)  # the server's own size stays
    assert models[(router.pid, "a")].vram_mb is None  # NVML cannot split one process between two models
