"""``fleet reap-sessions``: a stand-in agent CLI (named like an agent, burning CPU) whose launcher is gone is
reaped; the same agent under a live launcher is left alone, with or without a terminal."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tests.ownership.conftest import Procs, running, start_of


def test_a_detached_hot_session_is_listed_then_reaped(fleet: Any, procs: Procs, agent_patterns: None,
                                                      busy_agent: str) -> None:
    agent = procs.orphan(busy_agent)
    start = start_of(agent)
    dry = fleet("reap-sessions", "--json")
    assert dry.returncode == 0, dry.stdout
    candidates = {c["pid"]: c for c in dry.json()["candidates"]}
    assert candidates[agent]["classification"] == "detached_hot"
    assert candidates[agent]["kind"] == "fake-agent"
    assert candidates[agent]["evidence"][0].startswith("parent chain detached")
    assert running(agent, start)

    out = fleet("reap-sessions", "--confirm", "--json")
    assert out.returncode == 0, out.stdout
    killed = {k["pid"]: k for k in out.json()["killed"]}
    assert [(m["pid"], m["outcome"], m["signals"]) for m in killed[agent]["members"]] == [
        (agent, "exited", ["SIGTERM"])]
    assert not running(agent, start)
    event = fleet("history", "--type", "REAP_SESSION", "--json").json()[0]
    assert (event["pid"], event["detail"]["success"], event["detail"]["classification"]) == (
        agent, True, "detached_hot")


def test_a_busy_session_whose_launcher_lives_is_left_alone(fleet: Any, procs: Procs, agent_patterns: None,
                                                            busy_agent: str) -> None:
    _shell, agent = procs.attached(busy_agent)
    start = start_of(agent)
    out = fleet("reap-sessions", "--confirm", "--json")
    assert out.returncode == 0, out.stdout
    assert agent not in {c["pid"] for c in out.json()["candidates"]}
    assert running(agent, start)
    assert fleet("reap-sessions").stdout == "No detached hot sessions.\n"


def test_root_with_allow_other_users_reaps_the_sessions_it_listed(fleet: Any, procs: Procs, agent_patterns: None,
                                                                 busy_agent: str, tmp_path: Path) -> None:
    """Another user's detached hot agent session: listed by the dry run with --allow-other-users, and then really
    stopped by --confirm (the proof used to be built for root's own sessions, so every stop was refused)."""
    import os
    import shutil

    shared = Path(tempfile.mkdtemp(prefix="fleet-agent-"))  # somewhere `nobody` may run it from
    try:
        shared.chmod(0o755)
        agent_path = shared / Path(busy_agent).name
        shutil.copy(busy_agent, agent_path)
        agent_path.chmod(0o755)
        agent = procs.orphan(str(agent_path), user="65534")
        start = start_of(agent)
        assert os.geteuid() == 0
        dry = fleet("reap-sessions", "--allow-other-users", "--json")
        assert agent in {c["pid"] for c in dry.json()["candidates"]}
        assert agent not in {c["pid"] for c in fleet("reap-sessions", "--json").json()["candidates"]}
        out = fleet("reap-sessions", "--confirm", "--allow-other-users", "--json")
        assert out.returncode == 0, out.stdout
        assert agent in {k["pid"] for k in out.json()["killed"]}
        assert not running(agent, start)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
