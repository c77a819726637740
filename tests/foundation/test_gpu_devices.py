"""Per-device GPU budgets on multi-GPU machines; the single pool everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_watch.config import load_settings
from tests.conftest import Children


@pytest.fixture
def two_gpus(fleet_home: Path) -> Path:
    (fleet_home / "config.json").write_text(json.dumps({
        "gpu_total_mb": 49152, "gpu_reserve_mb": 4096,
        "gpu_devices": {"0": {"total_mb": 24576, "reserve_mb": 2048}, "1": {"total_mb": 24576, "reserve_mb": 2048}},
    }))
    return fleet_home


def test_first_run_writes_one_budget_per_detected_device(tmp_path: Path) -> None:
    # Detection is the NVML boundary; here it reports what a two-GPU host would.
    settings = load_settings(tmp_path, lambda: (163840, {"0": 81920, "1": 81920}))
    assert settings.gpu_devices == {"0": (81920, 4096), "1": (81920, 4096)}  # VRAM keeps a twentieth back
    assert json.loads((tmp_path / "config.json").read_text())["gpu_devices"]["1"]["total_mb"] == 81920
    single = load_settings(tmp_path / "one", lambda: (81920, {"0": 81920}))
    assert single.gpu_devices == {}
    assert single.gpu_reserve_mb == 4096


def test_vllm_default_claim_fits_a_detected_80gb_gpu(tmp_path: Path) -> None:
    """vLLM takes 0.9 of the device: the default VRAM reserve must leave room for it (an eighth would not)."""
    from fleet_watch.models import GpuBudget

    settings = load_settings(tmp_path, lambda: (81559, {"0": 81559}))
    budget = GpuBudget(total_mb=settings.gpu_total_mb, reserve_mb=settings.gpu_reserve_mb, allocated_mb=0)
    assert budget.available_mb >= int(0.9 * 81559)
    no_gpu = load_settings(tmp_path / "ram", lambda: 131072)
    assert no_gpu.gpu_reserve_mb == 16384  # unified memory / RAM keeps the README's reserve


def test_device_claims_respect_the_device_budget(fleet, two_gpus: Path, children: Children) -> None:
    a, b, c = children.sleeper(), children.sleeper(), children.sleeper()
    assert fleet("register", "--pid", str(a.pid), "--name", "a", "--workstream", "w", "--gpu", "20000",
                 "--gpu-device", "0").returncode == 0
    denied = fleet("register", "--pid", str(b.pid), "--name", "b", "--workstream", "w", "--gpu", "5000",
                   "--gpu-device", "0")
    assert denied.returncode == 1
    assert "GPU 0 budget exceeded" in denied.stderr
    assert "20000MB claimed by PID" in denied.stderr  # every term of the arithmetic
    assert fleet("register", "--pid", str(b.pid), "--name", "b", "--workstream", "w", "--gpu", "5000",
                 "--gpu-device", "1").returncode == 0
    g = fleet("guard", "--gpu", "3000", "--gpu-device", "0", "--json").json()
    assert g["allowed"] is False
    assert g["checks"]["gpu"]["device"] == 0
    assert g["checks"]["gpu"]["available_mb"] == 2528
    assert fleet("check", "--gpu", "3000", "--gpu-device", "1").returncode == 0
    # Pool claims and device claims share the machine total.
    assert g["state"]["gpu_budget"]["allocated_mb"] == 25000
    assert fleet("register", "--pid", str(c.pid), "--name", "c", "--workstream", "w",
                 "--gpu", "21000").returncode == 1  # 45056 - 25000 = 20056 left in the pool
    bad = fleet("guard", "--gpu", "10", "--gpu-device", "5", "--json")
    assert bad.returncode == 2
    assert "not configured" in bad.json()["reason"]


def test_single_pool_machine_accepts_device_zero_only(fleet, children: Children) -> None:
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "a", "--workstream", "w", "--gpu", "100",
                 "--gpu-device", "0").returncode == 0
    assert fleet("guard", "--gpu", "100", "--gpu-device", "1").returncode == 2
    assert fleet("guard", "--gpu", "100", "--gpu-device", "-1").returncode == 2
