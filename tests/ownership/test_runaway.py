"""``fleet runaway`` with real busy processes: CPU over a window, and ``--kill`` touching only what Fleet Watch owns.

The thresholds are low (a busy loop shares two cores with everything else on a loaded machine); what is asserted is
who is stopped and who is left alone, never a figure.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.ownership.conftest import AGENT, Procs, Registry, running, start_of


def test_kill_stops_what_fleet_watch_owns_and_leaves_the_rest(fleet: Any, procs: Procs, registry: Registry,
                                                              agent_patterns: None) -> None:
    owned = procs.busy()
    stranger = procs.busy()
    reused = procs.busy()
    identities = {p.pid: start_of(p.pid) for p in (owned, stranger, reused)}
    for proc, name in ((owned, "spinner"), (reused, "reused")):
        out = fleet("register", "--pid", str(proc.pid), "--name", name, "--workstream", "own")
        assert out.returncode == 0, out.stderr
    registry.shift_start_time(reused.pid)  # its row names another process now: not Fleet Watch's to touch

    out = fleet("runaway", "--cpu-threshold", "5", "--sustained-seconds", "2", "--kill", "--json")
    assert out.returncode == 0, out.stdout
    doc = out.json()
    flagged = {r["pid"]: r for r in doc["flagged"]}
    assert {owned.pid, stranger.pid, reused.pid} <= set(flagged)
    assert flagged[owned.pid]["owned"] is True
    assert flagged[stranger.pid]["owned"] is False
    assert flagged[reused.pid]["owned"] is False
    assert [(r["pid"], r["signals"]) for r in doc["killed"]] == [(owned.pid, ["SIGTERM"])]
    assert {stranger.pid, reused.pid} <= {r["pid"] for r in doc["skipped"]}
    assert not running(owned.pid, identities[owned.pid])
    assert running(stranger.pid, identities[stranger.pid])
    assert running(reused.pid, identities[reused.pid])

    events = fleet("history", "--type", "RUNAWAY_KILL", "--json").json()
    assert [e["pid"] for e in events] == [owned.pid]
    detail = events[0]["detail"]
    assert detail["ownership"] == f"registered as PID {owned.pid} with this start time"
    assert (detail["outcome"], detail["signals"], detail["released"]) == ("exited", ["SIGTERM"], True)
    assert detail["cpu_pct"] >= 5
    # The killed process's row and claims went with it, as reap does; the reused row (another process) stays.
    assert [row[0] for row in registry.rows()] == [reused.pid]


def test_kill_stops_a_busy_child_of_the_users_agent_session(fleet: Any, procs: Procs, agent_patterns: None) -> None:
    agent = procs.popen(["bash", "-c", f'exec -a {AGENT} bash -c "$0"',
                         "python3 -c 'import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass' "
                         "& echo $!; wait; sleep 600"], stdout=subprocess.PIPE)
    assert agent.stdout is not None
    child = procs.track(int(agent.stdout.readline()))
    child_start, agent_start = start_of(child), start_of(agent.pid)
    out = fleet("runaway", "--cpu-threshold", "5", "--sustained-seconds", "2", "--kill", "--json")
    assert out.returncode == 0, out.stdout
    killed = {r["pid"]: r for r in out.json()["killed"]}
    assert killed[child]["ownership"] == f"in your fake-agent session (agent PID {agent.pid})"
    assert not running(child, child_start)
    assert agent.pid not in killed
    assert running(agent.pid, agent_start)  # idle: not a runaway, never signalled


def test_a_dry_run_lists_and_touches_nothing(fleet: Any, procs: Procs) -> None:
    spinner = procs.busy()
    start = start_of(spinner.pid)
    assert fleet("register", "--pid", str(spinner.pid), "--name", "spinner", "--workstream", "own").returncode == 0
    out = fleet("runaway", "--cpu-threshold", "5", "--sustained-seconds", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Dry run. ")
    assert any(line.startswith(f"  PID {spinner.pid}  ") and "[registered as PID" in line for line in lines)
    assert lines[-1] == "Run `fleet runaway --kill` to stop the ones Fleet Watch owns."
    assert running(spinner.pid, start)


@pytest.mark.parametrize(("args", "message"), [
    (("--kill", "--sustained-seconds", "0"), "--kill needs --sustained-seconds above 0"),
    (("--kill", "--cpu-threshold", "0"), "--kill with --cpu-threshold 0"),
    (("--cpu-threshold", "nan"), "is not a finite number"),
    (("--sustained-seconds", "-1"), "is not a finite number"),
])
def test_usage_errors(fleet: Any, args: tuple[str, ...], message: str) -> None:
    out = fleet("runaway", *args, "--json")
    assert out.returncode == 2
    doc = out.json()
    assert doc["error"] == "usage_error"
    assert message in doc["reason"]
