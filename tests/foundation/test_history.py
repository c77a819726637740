"""fleet history: newest first, a time window that is really the window, type filters, JSON."""

from __future__ import annotations

import time
from pathlib import Path

from fleet_watch.clock import FixedClock
from fleet_watch.service.fleet import Fleet
from tests.conftest import Children


def test_window_type_and_order(fleet, fleet_home: Path, children: Children) -> None:
    now = time.time()
    clock = FixedClock(now - 43 * 3600)
    lib = Fleet.open(fleet_home, clock=clock)
    procs = [children.sleeper() for _ in range(3)]
    lib.register(pid=procs[0].pid, name="old", workstream="w")  # 43 h ago
    clock.advance(24 * 3600)
    lib.register(pid=procs[1].pid, name="older-than-an-hour", workstream="w")  # 19 h ago
    clock.advance(19 * 3600 - 60)
    lib.register(pid=procs[2].pid, name="recent", workstream="w")  # a minute ago
    lib.release_pid(procs[2].pid)
    lib.close()

    def names(*args: str) -> list[str]:
        r = fleet("history", *args, "--json")
        assert r.returncode == 0, r.stderr
        return [e["detail"]["name"] for e in r.json()]

    assert names("--hours", "1") == ["recent", "recent"]
    assert names("--hours", "24") == ["recent", "recent", "older-than-an-hour"]
    assert names("--hours", "0") == ["recent", "recent", "older-than-an-hour", "old"]
    assert names("--hours", "0", "--type", "register") == ["recent", "older-than-an-hour", "old"]
    assert names("--hours", "0", "--limit", "1") == ["recent"]
    text = fleet("history", "--hours", "1").stdout.splitlines()
    assert text[0].split()[1] == "RELEASE"
    assert f"PID {procs[2].pid}" in text[0]


def test_history_validates(fleet) -> None:
    bad = fleet("history", "--type", "NOPE")
    assert bad.returncode == 2
    assert "unknown event type" in bad.stderr
    assert fleet("history", "--hours", "-1").returncode == 2
    assert fleet("history", "--hours", "soon", "--json").json()["allowed"] is False
    assert fleet("history").stdout.strip() == "No events found."


def test_status_json_has_the_state_keys(fleet, children: Children) -> None:
    keys = {
        "agent_interface", "generated_utc", "processes", "external_resources", "process_count", "gpu_budget",
        "ports_claimed", "preferred_ports", "safe_ports", "repos_locked", "session_leases",
        "process_classifications", "stale_processes", "recent_events", "conflicts_prevented_24h", "system_memory",
        "sessions", "idle_processes", "gpu_memory_monitor",
    }
    a, b = children.sleeper(), children.sleeper()
    assert fleet("register", "--pid", str(a.pid), "--name", "a", "--workstream", "w", "--port", "18950").returncode == 0
    assert fleet("register", "--pid", str(b.pid), "--name", "b", "--workstream", "w", "--port", "18950").returncode == 1
    doc = fleet("status", "--json").json()
    assert set(doc) == keys
    assert doc["agent_interface"] == "fleet guard --json"
    assert doc["conflicts_prevented_24h"] == 1
    assert [e["event_type"] for e in doc["recent_events"]] == ["CONFLICT", "REGISTER"]
    assert doc["processes"][0]["alive"] is True
    human = fleet("status").stdout
    assert "Registered processes (1 live):" in human
    assert "18950" in human
