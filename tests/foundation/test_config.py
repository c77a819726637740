"""config.json: written on first run with every documented key, merged over defaults, validated strictly."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_watch.config import PressureThresholds, default_reserve_mb, load_settings
from fleet_watch.errors import ConfigError
from tests.conftest import run_fleet

DOCUMENTED_KEYS = {
    "gpu_total_mb", "gpu_reserve_mb", "preferred_ports", "patterns", "session_patterns", "idle_patterns",
    "idle_cpu_threshold", "pressure_thresholds", "gpu_estimator",
}


def test_first_run_writes_every_key_with_private_modes(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    result = run_fleet("status", "--json", home=home)
    assert result.returncode == 0, result.stderr
    doc = json.loads((home / "config.json").read_text())
    assert set(doc) >= DOCUMENTED_KEYS
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("config.json", "registry.db"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    # No GPU here: the pool defaults to this machine's physical RAM, not to a constant.
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    assert doc["gpu_total_mb"] == ram_mb
    assert doc["gpu_reserve_mb"] == default_reserve_mb(ram_mb)
    assert doc["gpu_estimator"]["framework_overhead"]["candle"] == 2.0


def test_user_file_is_merged_over_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "gpu_total_mb": 8192, "preferred_ports": [9000], "gpu_estimator": {"framework_overhead": {"candle": 2.5}},
    }))
    settings = load_settings(tmp_path, lambda: 1)
    assert settings.gpu_total_mb == 8192
    assert settings.gpu_reserve_mb == 2048  # derived from the user's total, not the default machine's
    assert settings.preferred_ports == (9000,)
    overhead = settings.framework_overhead
    assert overhead["candle"] == 2.5
    assert overhead["vllm"] == 1.4
    assert settings.pressure_thresholds == PressureThresholds(70, 85)


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"gpu_total_mb": "lots"}, "gpu_total_mb"),
        ({"gpu_total_mb": -1}, "gpu_total_mb"),
        ({"gpu_total_mb": 8192, "gpu_reserve_mb": 8192}, "gpu_reserve_mb"),
        ({"gpu_reserve_mb": -5}, "gpu_reserve_mb"),
        ({"preferred_ports": [80, 70000]}, "preferred_ports"),
        ({"preferred_ports": "8000"}, "preferred_ports"),
        ({"patterns": [{"name_template": "x", "workstream": "y", "process_match": "("}]}, "patterns[0].process_match"),
        ({"patterns": [{"name_template": "x", "workstream": "y", "process_match": "a", "priority": 9}]},
         "patterns[0].priority"),
        ({"idle_cpu_threshold": -1}, "idle_cpu_threshold"),
        ({"pressure_thresholds": {"elevated": 90, "critical": 80}}, "pressure_thresholds"),
        ({"gpu_estimator": {"framework_overhead": {"candle": "big"}}}, "framework_overhead.candle"),
        ({"physical_ram_mb": 0}, "physical_ram_mb"),
        ({"gpu_estimator": {"framework_overhead": {"candle": 1e308}}}, "framework_overhead.candle"),
        ({"idle_cpu_threshold": 1e300}, "idle_cpu_threshold"),
        ({"gpu_devices": {"\u00b2": {"total_mb": 1024}}}, "gpu_devices"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, document: dict[str, object], key: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_settings(tmp_path, lambda: 65536)


def test_invalid_json_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(tmp_path, lambda: 65536)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_settings(tmp_path, lambda: 65536)


@pytest.mark.parametrize(("raw", "needle"), [
    (b'{"gpu_estimator": {"framework_overhead": {"candle": NaN}}}', "NaN is not a JSON number"),
    (b'{"idle_cpu_threshold": Infinity}', "Infinity is not a JSON number"),
    (b'{"gpu_total_mb": 1e400}', "out of range"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a": "\xff"}', "not UTF-8"),
])
def test_json_that_only_python_accepts_is_a_config_error(tmp_path: Path, raw: bytes, needle: str) -> None:
    tmp_path.chmod(0o700)
    (tmp_path / "config.json").write_bytes(raw)
    result = run_fleet("status", "--json", home=tmp_path)
    assert result.returncode == 4, result.stdout
    assert needle in json.loads(result.stdout)["reason"]


def test_bad_config_is_exit_4_with_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    (tmp_path / "config.json").write_text(json.dumps({"gpu_total_mb": 8192, "gpu_reserve_mb": 9000}))
    result = run_fleet("status", home=tmp_path)
    assert result.returncode == 4
    assert result.stderr.count("\n") == 1
    assert "gpu_reserve_mb" in result.stderr
    assert "Traceback" not in result.stderr


@given(st.integers(min_value=1, max_value=4_000_000))
def test_default_reserve_is_below_total_and_monotone(total: int) -> None:
    reserve = default_reserve_mb(total)
    assert 0 <= reserve < total or total == 1
    assert reserve <= default_reserve_mb(total + 1) <= reserve + 1  # continuous: no jump anywhere


def test_readme_reserves() -> None:
    assert default_reserve_mb(8192) == 2048
    assert default_reserve_mb(131072) == 16384


def test_every_shipped_pattern_compiles() -> None:
    """The defaults are not compiled on every command (config trusts its own shipped patterns): this is where they
    are compiled and checked."""
    import re

    from fleet_watch.config import _SHIPPED_REGEXES

    assert len(_SHIPPED_REGEXES) > 20
    for pattern in _SHIPPED_REGEXES:
        re.compile(pattern)
