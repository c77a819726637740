"""The NVML path through its one small interface (``GpuProbe``), with a fake driver; the Apple footprint
path with a fake footprint reader. Processes and sockets are real; the registry is real SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.core import discovery as dcore
from fleet_watch.probes.fake import FakeGpuProbe
from fleet_watch.probes.nvml import GpuDevice, GpuProcess, NvmlProbe, driver_may_be_present
from fleet_watch.probes.scan import ProcessScanner
from fleet_watch.service.discovery import Discovery
from fleet_watch.service.estimate import estimate_from_command
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.health import gather_health
from fleet_watch.service.last_cycle import MONITOR_FILE
from fleet_watch.service.watch import Watcher
from tests.discovery.servers import Servers


@pytest.fixture
def opened(fleet_home: Path) -> Iterator[Fleet]:
    # A fixed memory size, so that the estimates (vLLM claims 0.9 of it) do not depend on this machine.
    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "physical_ram_mb": 65536}))
    f = Fleet.open(fleet_home)
    try:
        yield f
    finally:
        f.close()


def _events(f: Fleet, event_type: str) -> list[dict[str, Any]]:
    with f.reading() as conn:
        rows = list(conn.execute("SELECT pid, detail FROM events WHERE event_type = ? ORDER BY seq", (event_type,)))
    return [{"pid": pid, **json.loads(d)} for pid, d in rows]


H100 = GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", total_mb=81559, used_mb=78100, free_mb=3459,
                 utilization_pct=97, temperature_c=64)


def test_nvml_figures_win_and_follow_the_process(opened: Fleet, servers: Servers, fleet: Any) -> None:
    server = servers.program("vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "0")
    fake = FakeGpuProbe(devices_=[H100], processes_=[GpuProcess(device=0, pid=server.pid, used_mb=70000)])
    disc = Discovery(opened, gpu=fake)
    result = disc.cycle()
    assert [(a["pid"], a["gpu_mb"], a["gpu_source"]) for a in result.added] == [(server.pid, 70000, "nvml")]
    register = _events(opened, "REGISTER")[0]
    assert register["gpu_devices"] == {"0": 70000}

    # A move within NVML's wobble is not an update; a real change is one UPDATE event.
    fake.processes_ = [GpuProcess(device=0, pid=server.pid, used_mb=70040)]
    assert disc.cycle().updated == []
    fake.processes_ = [GpuProcess(device=0, pid=server.pid, used_mb=52000)]
    updated = disc.cycle().updated
    assert [(u["previous_gpu_mb"], u["gpu_mb"], u["gpu_source"]) for u in updated] == [(70000, 52000, "nvml")]
    assert len(_events(opened, "UPDATE")) == 1
    status = fleet("status", "--json").json()
    assert [p["gpu_mb"] for p in status["processes"] if p["pid"] == server.pid] == [52000]


def test_health_reports_devices_footprints_and_alerts(opened: Fleet, servers: Servers, fleet: Any) -> None:
    server = servers.program("vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "0")
    # Registered by hand with a 1 GB claim, then found using 70 GB on the GPU.
    assert fleet("register", "--pid", str(server.pid), "--name", "vllm", "--workstream", "w",
                 "--gpu", "1000").returncode == 0
    fake = FakeGpuProbe(devices_=[H100], processes_=[GpuProcess(device=0, pid=server.pid, used_mb=70000)])
    report = gather_health(opened, sample_s=0.1, discovery=Discovery(opened, gpu=fake))
    mon = report.document["gpu_memory_monitor"]
    assert mon["devices"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "total_mb": 81559, "used_mb": 78100,
                               "free_mb": 3459, "utilization_pct": 97, "temperature_c": 64}]
    footprint = next(f for f in mon["gpu_process_footprints"] if f["pid"] == server.pid)
    assert (footprint["gpu_mb"], footprint["source"], footprint["claim_mb"]) == (70000, "nvml", 1000)
    kinds = {a["type"]: a for a in mon["alerts"]}
    assert kinds["gpu_memory_full"]["severity"] == "warning"
    assert kinds["gpu_memory_full"]["used_pct"] == 95.8
    assert kinds["process_over_claim"]["pid"] == server.pid
    assert footprint["estimate_mb"] == int(0.9 * 65536)  # vLLM claims gpu_memory_utilization of the memory
    assert kinds["process_over_estimate"]["estimate_mb"] == footprint["estimate_mb"]
    assert not report.critical


def test_watch_logs_gpu_pressure_once_per_transition(opened: Fleet, servers: Servers) -> None:
    server = servers.program("llama-server", "-m", "/models/m.gguf", "--port", "0")
    full = GpuDevice(index=0, name="L4", total_mb=23034, used_mb=23000, free_mb=34)
    fake = FakeGpuProbe(devices_=[full], processes_=[GpuProcess(device=0, pid=server.pid, used_mb=22000)])
    watcher = Watcher(opened, discovery=Discovery(opened, gpu=fake))
    first = watcher.watch_once()
    assert first.error is None
    assert first.monitor is not None
    assert [a["severity"] for a in first.monitor["alerts"] if a["type"] == "gpu_memory_full"] == ["critical"]
    watcher.watch_once()
    assert len(_events(opened, "GPU_MEMORY_PRESSURE")) == 1
    fake.devices_ = [GpuDevice(index=0, name="L4", total_mb=23034, used_mb=1000, free_mb=22034)]
    watcher.watch_once()
    fake.devices_ = [full]
    watcher.watch_once()
    assert len(_events(opened, "GPU_MEMORY_PRESSURE")) == 2
    saved = json.loads((opened.settings.home / MONITOR_FILE).read_text())
    assert saved["alerts"][0]["type"] == "gpu_memory_full"


def test_foreign_gpu_pids_do_not_zero_out_unlisted_workloads(opened: Fleet, servers: Servers) -> None:
    server = servers.program("ollama", "serve", "--port", "0")
    # NVML lists a PID that does not exist here (a container without --pid=host): it cannot vouch for 0 MB.
    fake = FakeGpuProbe(devices_=[H100], processes_=[GpuProcess(device=0, pid=4_000_000, used_mb=9000)])
    disc = Discovery(opened, gpu=fake)
    snap = disc.scan()
    assert snap.foreign_gpu_pids == [4_000_000]
    obs = next(o for o in snap.observed if o.workload.pid == server.pid)
    assert (obs.gpu_mb, obs.gpu_source) == (4096, "pattern_default")  # `ollama serve` names no model to estimate
    # Without foreign PIDs, a workload absent from NVML's lists really uses no GPU memory.
    fake.processes_ = []
    obs = next(o for o in disc.scan().observed if o.workload.pid == server.pid)
    assert (obs.gpu_mb, obs.gpu_source) == (0, "nvml")


class FootprintScanner(ProcessScanner):
    """The real scanner, with the macOS footprint call (libproc) answered by a table."""

    def __init__(self, footprints: dict[int, int]) -> None:
        super().__init__()
        self.footprints = footprints

    def footprint_mb(self, pid: int) -> int | None:  # type: ignore[override]
        return self.footprints.get(pid)


def test_apple_footprint_is_second_and_no_driver_falls_through(opened: Fleet, servers: Servers) -> None:
    server = servers.module("mlx_lm.server", "--model", "mlx-community/Qwen2.5-7B-Instruct-4bit", "--port", "0")
    disc = Discovery(opened, scanner=FootprintScanner({server.pid: 6100}), gpu=FakeGpuProbe(devices_=None))
    disc.apple = True
    obs = next(o for o in disc.scan().observed if o.workload.pid == server.pid)
    assert (obs.gpu_mb, obs.gpu_source) == (6100, "apple_footprint")
    disc.apple = False
    obs = next(o for o in disc.scan().observed if o.workload.pid == server.pid)
    # No footprint: the estimate from the command line's model (a known model name, read from --model, not from
    # python's -m module), as `fleet estimate` would give it.
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()
    assert (obs.gpu_mb, obs.gpu_source) == (estimate_from_command(opened.settings, cmdline), "estimate")


def test_gpu_order_is_nvml_footprint_estimate_default() -> None:
    assert dcore.resolve_gpu(nvml_mb=0, footprint_mb=5, estimate_mb=6, default_mb=7) == (0, "nvml")
    assert dcore.resolve_gpu(nvml_mb=None, footprint_mb=5, estimate_mb=6, default_mb=7) == (5, "apple_footprint")
    assert dcore.resolve_gpu(nvml_mb=None, footprint_mb=None, estimate_mb=6, default_mb=7) == (6, "estimate")
    assert dcore.resolve_gpu(nvml_mb=None, footprint_mb=None, estimate_mb=None, default_mb=7) == (7, "pattern_default")


def test_real_nvml_probe_without_a_driver_is_none_not_an_error() -> None:
    probe = NvmlProbe()
    devices = probe.devices()
    if driver_may_be_present():  # a GPU host (bench/nvml_check.py is the deliberate check there)
        assert devices
        assert all(d.total_mb > 0 for d in devices)
    else:
        assert devices is None
        assert probe.processes() == []


def test_nvml_is_not_even_imported_without_a_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from fleet_watch.probes import nvml

    # A host where no driver shows itself (the signs point into an empty folder, whatever this host has).
    monkeypatch.setattr(nvml, "_DRIVER_SIGNS", (str(tmp_path / "proc-driver-nvidia"), str(tmp_path / "nvidiactl")))
    monkeypatch.delenv("FLEET_WATCH_NVML", raising=False)
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    assert nvml.driver_may_be_present() is False
    assert nvml.NvmlProbe().devices() is None
    assert "pynvml" not in sys.modules
    (tmp_path / "nvidiactl").touch()  # a sign appears: NVML is asked (and here answers None, or real devices)
    assert nvml.driver_may_be_present() is (sys.platform != "darwin")
    nvml.NvmlProbe().devices()
    assert "pynvml" in sys.modules or sys.platform == "darwin"
    monkeypatch.setenv("FLEET_WATCH_NVML", "1")
    assert nvml.driver_may_be_present() is True
