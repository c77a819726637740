"""``fleet status --json`` carries the last discovery cycle's sessions, idle workloads and GPU memory monitor, and
memory read now, without scanning the process table itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.discovery.servers import Servers

MEMORY_KEYS = {"total_mb", "available_mb", "used_mb", "pressure_pct", "pressure_label", "pageouts", "swapins",
               "pageouts_per_sec", "swapins_per_sec", "interval_seconds"}


def test_before_any_cycle_memory_is_live_and_the_rest_empty(fleet: Any) -> None:
    doc = fleet("status", "--json").json()
    assert set(doc["system_memory"]) >= MEMORY_KEYS
    assert doc["system_memory"]["total_mb"] > 0
    assert doc["system_memory"]["pageouts_per_sec"] is None  # nothing to measure a rate against yet
    assert (doc["sessions"], doc["idle_processes"], doc["gpu_memory_monitor"]) == ([], [], None)


def test_status_reports_the_last_watch_cycle(fleet: Any, fleet_home: Path, servers: Servers) -> None:
    server = servers.program("vllm", "serve", "Qwen/Qwen2.5-0.5B", "--port", "0")
    agent = servers.program("aider", "--model", "sonnet")
    out = fleet("watch", "--interval", "0.5", "--max-ticks", "2", "--json")
    assert out.returncode == 0, out.stderr
    last_tick = json.loads(out.stdout.splitlines()[-1])

    doc = fleet("status", "--json").json()
    monitor = doc["gpu_memory_monitor"]
    assert {"pageout_rate", "gpu_process_footprints", "alerts", "generated_utc"} <= set(monitor)
    assert "sessions" not in monitor
    assert "idle" not in monitor
    assert server.pid in {f["pid"] for f in monitor["gpu_process_footprints"]}
    assert [s["pid"] for s in doc["sessions"]] == [s["pid"] for s in last_tick["sessions"]]
    assert agent.pid in {s["pid"] for s in doc["sessions"]}
    assert doc["idle_processes"] == last_tick["idle"]
    assert last_tick["interval_seconds"] > 0  # the second tick measured CPU over an interval
    assert doc["system_memory"]["pageouts_per_sec"] is not None  # a rate since that cycle


@pytest.mark.parametrize("text", [
    '{"sessions": "nope", "idle": [1, {"pid": 5}], "timesta',
    '{"sessions": "nope", "idle": [1, {"pid": 5}], "timestamp_s": "x", "memory_counters": {"pageouts": "y"}}',
    '{"alerts": "x", "gpu_process_footprints": 7}',
    '{"sessions": [{"pid": "x"}]}',
    '{"memory_counters": {"pageouts": 1}, "timestamp_s": NaN}',
    '{"memory_counters": {"pageouts": 1e400}, "timestamp_s": 1}',
    "[" * 100_000 + "]" * 100_000,
    '{"a": "\udcff"}',
])
def test_a_damaged_snapshot_is_ignored_whole_not_fatal(fleet: Any, fleet_home: Path, text: str) -> None:
    (fleet_home / "gpu_memory_monitor.json").write_text(text, errors="surrogateescape")
    out = fleet("status", "--json")
    assert out.returncode == 0, out.stdout
    doc = out.json()  # strict: NaN or Infinity would not parse as JSON everywhere
    assert "NaN" not in out.stdout
    assert "Infinity" not in out.stdout
    assert (doc["sessions"], doc["idle_processes"], doc["gpu_memory_monitor"]) == ([], [], None)
    assert doc["system_memory"]["pageouts_per_sec"] is None
    assert fleet("discover", "--json").returncode == 0  # and the next cycle rewrites it


def test_every_cycle_writes_state_json_for_agents_without_the_cli(fleet: Any, fleet_home: Path,
                                                                   servers: Servers) -> None:
    server = servers.program("ollama", "serve", "--port", "0")
    assert fleet("discover").returncode == 0
    state = json.loads((fleet_home / "state.json").read_text())
    assert (fleet_home / "state.json").stat().st_mode & 0o077 == 0
    assert set(state) == set(fleet("status", "--json").json())
    assert [p["pid"] for p in state["processes"]] == [server.pid]
    assert state["gpu_memory_monitor"]["generated_utc"]
