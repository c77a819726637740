"""``fleet reap-sessions``: a stand-in agent CLI (named like an agent, burning CPU) whose launcher is gone is
reaped; the same agent under a live launcher is left alone, with or without a terminal."""

from __future__ import annotations

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
