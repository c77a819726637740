"""``fleet health`` through the real CLI: key sets, exit codes, sessions and idle workloads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.discovery.servers import FAKE_SERVER, Servers
from tests.helpers import stand_ins

MEMORY_KEYS = {"total_mb", "available_mb", "used_mb", "pressure_pct", "pressure_label", "pageouts", "swapins",
               "pageouts_per_sec", "swapins_per_sec", "interval_seconds"}


def test_health_json_has_the_readme_keys_and_gates_on_critical(fleet: Any) -> None:
    out = fleet("health", "--json", "--sample-seconds", "0.2")
    doc = out.json()
    assert set(doc) == {"memory", "sessions", "idle", "gpu_memory_monitor"}
    assert set(doc["memory"]) >= MEMORY_KEYS
    assert {"pageout_rate", "gpu_process_footprints", "alerts", "devices"} <= set(doc["gpu_memory_monitor"])
    critical = any(a["severity"] == "critical" for a in doc["gpu_memory_monitor"]["alerts"])
    assert out.returncode == (8 if critical else 0)
    assert doc["memory"]["available"] is True
    assert doc["memory"]["interval_seconds"] is not None


def test_critical_pressure_exits_8(fleet: Any, fleet_home: Path) -> None:
    config = json.loads((fleet_home / "config.json").read_text())
    config["pressure_thresholds"] = {"elevated": 0, "critical": 0}
    (fleet_home / "config.json").write_text(json.dumps(config))
    out = fleet("health", "--json", "--sample-seconds", "0")
    assert out.returncode == 8
    alerts = out.json()["gpu_memory_monitor"]["alerts"]
    assert {"type": "memory_pressure", "severity": "critical"}.items() <= alerts[0].items()
    human = fleet("health", "--sample-seconds", "0")
    assert human.returncode == 8
    assert "Memory: CRITICAL" in human.stdout
    assert "[critical] memory_pressure" in human.stdout


def test_bad_sample_window_is_a_one_line_usage_error(fleet: Any) -> None:
    out = fleet("health", "--sample-seconds", "-1")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "Traceback" not in out.stderr


def test_sessions_with_cwd_parent_and_classification(fleet: Any, servers: Servers, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    # Launched through a shell that stays alive: its launcher still runs, so it is attached (no terminal needed).
    script = stand_ins.program(servers.bin, "claude", FAKE_SERVER)
    shell = subprocess.Popen(["bash", "-c", f"{script} --resume; true"], cwd=repo, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)  # no controlling terminal
    servers.children.procs.append(shell)
    servers.started.append(shell)
    assert shell.stdout is not None
    shell.stdout.readline()
    aider = servers.program("aider", "--model", "sonnet", cwd=repo)

    doc = fleet("health", "--json", "--sample-seconds", "0.2").json()
    sessions = {s["kind"]: s for s in doc["sessions"]}
    assert set(sessions) == {"claude-code", "aider"}
    claude = sessions["claude-code"]
    assert claude["cwd"] == str(repo)
    assert claude["ppid"] == shell.pid
    assert claude["parent_name"] == "bash"
    assert claude["classification"] == "attached"
    assert claude["attention"] is False
    assert claude["cpu_pct"] is not None
    assert claude["rss_mb"] > 0
    assert claude["start_time"] > 0
    assert sessions["aider"]["pid"] == aider.pid
    human = fleet("health", "--sample-seconds", "0")
    assert "Sessions: 2" in human.stdout


def test_orphaned_busy_session_needs_attention(fleet: Any, servers: Servers) -> None:
    script = stand_ins.program(servers.bin, "codex", FAKE_SERVER)
    # The shell exits at once: the agent is reparented (to PID 1 in the test's PID namespace).
    launcher = subprocess.Popen(["bash", "-c", f"{script} --busy --lifetime 60 <&0 & echo $!"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    servers.children.procs.append(launcher)
    servers.started.append(launcher)
    assert launcher.stdout is not None
    pid = next(int(line) for line in (launcher.stdout.readline(), launcher.stdout.readline()) if line.strip())
    launcher.wait(timeout=10)
    doc = fleet("health", "--json", "--sample-seconds", "0.5").json()
    codex = next(s for s in doc["sessions"] if s["pid"] == pid)
    assert codex["ppid"] == 1
    assert codex["tty"] is None
    assert codex["classification"] == "detached_hot"  # the same rule and name as reap-sessions
    assert codex["attention"] is True
    assert doc["sessions"][0]["pid"] == pid  # attention sorts first
    # It stops on EOF: the fixture closes our end of its stdin at teardown.


def test_idle_lists_quiet_workloads_not_busy_ones(fleet: Any, servers: Servers) -> None:
    quiet = servers.program("vllm", "serve", "Qwen/Qwen2.5-0.5B", "--port", "0")
    quiet_api = servers.program("uvicorn", "app:api", "--port", "0")
    busy_api = servers.program("uvicorn", "app:busy", "--busy", "--lifetime", "60", "--port", "0")
    doc = fleet("health", "--json", "--sample-seconds", "0.5").json()
    idle = {i["pid"]: i for i in doc["idle"]}
    assert quiet.pid in idle
    assert quiet_api.pid in idle
    assert busy_api.pid not in idle
    assert idle[quiet.pid]["workload"] is True
    assert idle[quiet_api.pid]["workload"] is False
    assert idle[quiet.pid]["cpu_pct"] <= 1.0
    assert idle[quiet.pid]["reclaimable_mb"] >= idle[quiet.pid]["rss_mb"] > 0
