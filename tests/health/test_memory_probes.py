"""Memory telemetry from fixture /proc trees and captured macOS tool output, then the real machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fleet_watch.config import PressureThresholds
from fleet_watch.core import health as core
from fleet_watch.probes import _darwin, _linux
from fleet_watch.probes.fake import FakeToolRunner
from fleet_watch.probes.memory import MemoryProbe

DATA = Path(__file__).resolve().parents[1] / "data"
PROC = DATA / "proc"
DARWIN = DATA / "darwin"
THRESHOLDS = PressureThresholds(70, 85)


def _linux_probe(tree: str) -> core.MemoryCounters:
    mem = MemoryProbe(platform="linux", root=PROC / tree).read()
    assert mem is not None
    return mem


def test_plain_linux_machine_from_meminfo_vmstat_and_psi() -> None:
    mem = _linux_probe("linux-basic")
    assert (mem.source, mem.total_mb, mem.available_mb, mem.used_mb) == ("linux-proc", 32768, 20480, 12288)
    assert mem.pressure_pct == round(100 * 12288 / 32768)
    assert (mem.pageouts, mem.swapins) == (3400, 120)
    assert mem.psi is not None
    assert mem.psi["some_avg10"] == 0.0
    assert mem.cgroup is None
    assert core.pressure_label(mem, THRESHOLDS) == "OK"


def test_cgroup_v2_limit_replaces_machine_totals_and_ignores_page_cache() -> None:
    mem = _linux_probe("cgroup-v2")
    assert mem.source == "linux-cgroup-v2"
    assert mem.total_mb == 4096
    assert mem.used_mb == 3584 - 512  # memory.current minus inactive_file
    assert mem.available_mb == 1024
    assert mem.cgroup == {"version": 2, "path": "/system.slice/fleet.service", "limit_mb": 4096, "usage_mb": 3584}
    assert core.pressure_label(mem, THRESHOLDS) == "ELEVATED"  # 75 %


def test_cgroup_v1_container_limit_found_at_the_namespaced_root() -> None:
    mem = _linux_probe("cgroup-v1")
    assert mem.source == "linux-cgroup-v1"
    assert (mem.total_mb, mem.used_mb, mem.available_mb) == (2048, 1536 - 256, 2048 - 1280)


def test_old_kernel_without_memavailable_or_psi() -> None:
    mem = _linux_probe("old-kernel")
    assert mem.available_mb == (1048576 + 204800 + 4194304) // 1024
    assert mem.psi is None


def test_psi_stalls_raise_the_label_to_critical() -> None:
    mem = _linux_probe("psi-stall")
    assert mem.pressure_pct == 50
    assert core.pressure_label(mem, THRESHOLDS) == "CRITICAL"


def test_swap_thrash_rate_between_two_samples() -> None:
    before, after = _linux_probe("linux-basic"), _linux_probe("swapping")
    rate = core.pageout_rate(after, before, 5.0, 1000)
    assert rate == {"pageout_delta": 500000, "swapin_delta": 90000, "interval_seconds": 5.0,
                    "pageouts_per_sec": 100000.0, "swapins_per_sec": 18000.0, "thrashing": True}
    view = core.memory_view(after, before, 5.0, THRESHOLDS)
    assert view["pageouts_per_sec"] == 100000.0
    assert view["pressure_label"] == "CRITICAL"
    alerts = core.build_alerts(memory_label=view["pressure_label"], memory_pct=view["pressure_pct"], rate_view=rate,
                               devices=[], footprints=[])
    assert {a["type"] for a in alerts} == {"memory_pressure", "swap_thrashing"}
    assert core.is_critical(alerts)


def test_missing_proc_is_unavailable_not_an_error(tmp_path: Path) -> None:
    assert MemoryProbe(platform="linux", root=tmp_path).read() is None
    view = core.memory_view(None, None, None, THRESHOLDS)
    assert view["available"] is False
    assert view["pressure_label"] == "UNAVAILABLE"
    assert view["pressure_pct"] == -1


def test_proc_net_tcp_listeners_with_owner_uid() -> None:
    found = _linux.read_tcp_listeners(PROC / "linux-basic")
    assert [(x.port, x.address, x.uid, x.family) for x in found] == [(11434, "127.0.0.1", 997, 4),
                                                                     (8080, "::1", 1000, 6)]


def _darwin_runner(vm: str, sysctl: str, level: str | None) -> FakeToolRunner:
    outputs = {"vm_stat": (DARWIN / vm).read_text(),
               "sysctl hw.memsize hw.pagesize vm.swapusage": (DARWIN / sysctl).read_text()}
    if level is not None:
        outputs["sysctl kern.memorystatus_vm_pressure_level"] = (DARWIN / level).read_text()
    return FakeToolRunner(outputs)


def test_apple_silicon_vm_stat_and_sysctl() -> None:
    runner = _darwin_runner("vm_stat_m2_16gb.txt", "sysctl_m2_16gb.txt", "sysctl_pressure_m2.txt")
    mem = MemoryProbe(platform="darwin", runner=runner).read()
    assert mem is not None
    page = 16384

    def mb(pages: int) -> int:
        return pages * page // (1024 * 1024)

    assert mem.total_mb == 16384
    assert mem.wired_mb == mb(126521)
    assert mem.compressed_mb == mb(229567)
    assert mem.available_mb == mb(5813) + mb(306186) + mb(3164)
    assert mem.pressure_pct == round(100 * (mb(311702) + mb(126521) + mb(229567)) / 16384)
    assert (mem.pageouts, mem.swapins) == (421811, 1948512)
    assert (mem.swap_total_mb, mem.swap_used_mb) == (3072, 1930)
    assert mem.os_pressure_level == 2
    assert core.pressure_label(mem, THRESHOLDS) == "ELEVATED"  # 64 % by pages, raised by the kernel's "warn"
    assert runner.calls == ["vm_stat", "sysctl hw.memsize hw.pagesize vm.swapusage",
                            "sysctl kern.memorystatus_vm_pressure_level"]


def test_intel_mac_page_size_and_missing_pressure_sysctl() -> None:
    mem = MemoryProbe(platform="darwin", runner=_darwin_runner("vm_stat_intel_8gb.txt", "sysctl_intel_8gb.txt",
                                                               None)).read()
    assert mem is not None
    assert mem.total_mb == 8192
    assert mem.wired_mb == 300450 * 4096 // (1024 * 1024)
    assert mem.os_pressure_level is None


def test_vm_stat_failure_is_unavailable_never_all_free() -> None:
    assert MemoryProbe(platform="darwin", runner=FakeToolRunner({})).read() is None
    assert _darwin.parse_vm_stat("garbage") is None


@pytest.mark.parametrize(("text", "expected"), [
    ("vm.swapusage: total = 2048.00M  used = 1053.25M  free = 994.75M  (encrypted)", (2048.0, 1053.25)),
    ("vm.swapusage: total = 1.50G  used = 512.00K  free = 1.50G", (1536.0, 0.5)),
])
def test_swapusage_units(text: str, expected: tuple[float, float]) -> None:
    parsed = _darwin.parse_sysctl(text)
    assert (parsed.swap_total_mb, parsed.swap_used_mb) == expected


def test_the_real_machine() -> None:
    mem = MemoryProbe().read()
    if sys.platform.startswith("linux"):
        assert mem is not None
        assert mem.total_mb > 0
        assert 0 <= mem.available_mb <= mem.total_mb
        assert 0 <= mem.pressure_pct <= 100
        assert mem.pageouts is not None
    elif sys.platform == "darwin":
        assert mem is not None
        assert mem.total_mb > 0
    else:
        assert mem is None
