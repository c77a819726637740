"""Session leases and reservations (issue 9): real processes, the real CLI, real races."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fleet_watch import events, registry
from fleet_watch.errors import Forbidden
from fleet_watch.service import sessions
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.sessions import Caller
from tests.conftest import Children, PortHolds
from tests.helpers.audit import events as audit_events
from tests.helpers.racers import racer_script


def _wait(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -- leases -----------------------------------------------------------------------------------------------------

def test_a_lease_holds_its_repo_for_its_own_session_only(fleet: Any, children: Children, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    owner = children.sleeper()
    start = fleet("session", "start", "--session-id", "agent-1", "--owner-pid", str(owner.pid), "--repo", str(repo),
                  "--json")
    assert start.returncode == 0, start.stderr
    assert start.json()["repo_dir"] == str(repo)
    assert fleet("guard", "--repo", str(repo / "src"), "--session-id", "agent-1").returncode == 0
    denied = fleet("guard", "--repo", str(repo / "src"), "--session-id", "agent-2", "--json")
    assert denied.returncode == 1
    assert "session agent-1 (lease" in denied.json()["checks"]["repo"]["reason"]
    assert fleet("check", "--repo", str(repo), "--session-id", "agent-2").returncode == 1
    other = children.sleeper()
    reg = fleet("register", "--pid", str(other.pid), "--name", "x", "--workstream", "w", "--repo", str(repo),
                "--session-id", "agent-2")
    assert reg.returncode == 1
    assert "session agent-1" in reg.stderr
    # A second session's lease on a path inside it is refused too.
    assert fleet("session", "start", "--session-id", "agent-2", "--owner-pid", str(other.pid),
                 "--repo", str(repo / "src")).returncode == 1
    # Closed, it holds nothing.
    assert fleet("session", "close", "--session-id", "agent-1").returncode == 0
    assert fleet("guard", "--repo", str(repo), "--session-id", "agent-2").returncode == 0


def test_a_lease_whose_owner_is_gone_holds_nothing(fleet: Any, children: Children, tmp_path: Path) -> None:
    owner = children.sleeper()
    assert fleet("session", "start", "--session-id", "s", "--owner-pid", str(owner.pid),
                 "--repo", str(tmp_path)).returncode == 0
    assert fleet("guard", "--repo", str(tmp_path), "--session-id", "t").returncode == 1
    owner.kill()
    owner.wait()
    assert fleet("guard", "--repo", str(tmp_path), "--session-id", "t").returncode == 0
    listed = fleet("session", "list", "--json").json()
    assert [(x["session_id"], x["status"]) for x in listed] == [("s", "OWNER_GONE")]


def test_heartbeat_and_close_of_an_unknown_session_are_not_found(fleet: Any) -> None:
    for verb in ("heartbeat", "close"):
        r = fleet("session", verb, "--session-id", "never-started", "--json")
        assert r.returncode == 3, r.stdout
        assert r.json()["error"] == "not_found"
    assert fleet("session", "list", "--json").json() == []  # a heartbeat never creates a lease


def test_ensure_is_idempotent_under_concurrent_callers(fleet: Any, fleet_home: Path, children: Children) -> None:
    owner = children.sleeper()
    env = {"FLEET_WATCH_HOME": str(fleet_home)}
    procs = [subprocess.Popen([sys.executable, "-m", "fleet_watch", "session", "ensure", "--session-id", "shared",
                               "--owner-pid", str(owner.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**__import__("os").environ, **env}) for _ in range(10)]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    assert [rc for _, _, rc in results] == [0] * 10, [err for _, err, _ in results]
    conn = sqlite3.connect(fleet_home / "registry.db")
    assert conn.execute("SELECT COUNT(*) FROM leases WHERE session_id = 'shared'").fetchone()[0] == 1
    conn.close()
    assert len(audit_events(fleet_home, "SESSION_START")) == 10


def _as_nobody(*argv: str) -> list[str]:
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


def test_only_the_owner_or_root_may_heartbeat_or_close(fleet_home: Path, children: Children) -> None:
    """The owner runs as `nobody`: its descendants (as nobody) may renew and close; a stranger may not."""
    owner = subprocess.Popen(_as_nobody("bash", "-c", "sleep 120 & echo $!; wait"), stdout=subprocess.PIPE, text=True)
    children.procs.append(owner)
    assert owner.stdout is not None
    child_pid = int(owner.stdout.readline())
    stranger = subprocess.Popen(_as_nobody("sleep", "120"), text=True)
    children.procs.append(stranger)
    with Fleet.open(fleet_home) as f:
        sessions.start(f, "owned", owner_pid=owner.pid)
        with pytest.raises(Forbidden, match="only its owner PID"):
            sessions.heartbeat(f, "owned", caller=Caller(stranger.pid, 65534))
        with pytest.raises(Forbidden, match="belongs to uid 65534"):
            sessions.close(f, "owned", caller=Caller(stranger.pid, 1000))
        assert sessions.heartbeat(f, "owned", caller=Caller(child_pid, 65534))["status"] == "ACTIVE"
        assert sessions.heartbeat(f, "owned", caller=Caller(stranger.pid, 0))["status"] == "ACTIVE"  # root
        assert sessions.close(f, "owned", caller=Caller(child_pid, 65534))["status"] == "CLOSED"


# -- reservations ---------------------------------------------------------------------------------------------

_RACER = racer_script("fleet_watch.cli.sessions", "fleet_watch.service.claims")


def test_twenty_agents_racing_for_one_port_get_one_winner(fleet_home: Path, tmp_path: Path,
                                                         free_ports: PortHolds) -> None:
    port = free_ports.take()
    gate = tmp_path / "gate"
    ready = [tmp_path / f"ready-{i}" for i in range(20)]
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(gate), str(flag), "claim", "--port", str(port),
                               "--session-id", f"agent-{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, flag in enumerate(ready)]
    assert _wait(lambda: all(f.exists() for f in ready), 120)
    gate.touch()
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0] + [1] * 19, [err for rc, err in results if rc not in (0, 1)]
    assert all("Traceback" not in err for _, err in results)
    assert len(audit_events(fleet_home, "CLAIM")) == 1
    assert len(audit_events(fleet_home, "CONFLICT")) == 19
    conn = registry.connect(fleet_home)
    try:
        assert events.verify_chain(conn) == (True, 20)
    finally:
        conn.close()


def test_auto_port_binds_and_is_not_handed_out_twice(fleet: Any) -> None:
    a = fleet("claim", "--port", "auto", "--session-id", "a", "--json")
    b = fleet("claim", "--port", "auto", "--session-id", "b", "--json")
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    pa, pb = a.json()["ports"][0], b.json()["ports"][0]
    assert pa != pb
    for port in (pa, pb):
        with socket.socket() as s:  # it really binds
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    assert fleet("guard", "--port", str(pa), "--session-id", "b").returncode == 1
    assert fleet("guard", "--port", str(pa), "--session-id", "a").returncode == 0  # its own reservation


def test_a_reservation_lapses_when_its_ttl_expires(fleet: Any, fleet_home: Path, free_ports: PortHolds) -> None:
    port = free_ports.take()
    assert fleet("claim", "--port", str(port), "--ttl", "1", "--session-id", "a").returncode == 0
    assert fleet("guard", "--port", str(port), "--session-id", "b").returncode == 1
    assert _wait(lambda: fleet("guard", "--port", str(port), "--session-id", "b").returncode == 0)
    assert fleet("clean").returncode == 0
    assert [e.get("reason") for e in audit_events(fleet_home, "RELEASE")] == ["expired"]


def test_register_takes_over_its_sessions_reservation(fleet: Any, fleet_home: Path, children: Children,
                                                      free_ports: PortHolds) -> None:
    port = free_ports.take()
    made = fleet("claim", "--port", str(port), "--gpu", "1000", "--session-id", "agent-9", "--json")
    assert made.returncode == 0, made.stderr
    stranger = children.sleeper()
    refused = fleet("register", "--pid", str(stranger.pid), "--name", "s", "--workstream", "w", "--port", str(port),
                    "--session-id", "other")
    assert refused.returncode == 1
    assert "reservation" in refused.stderr
    server = children.sleeper()
    taken = fleet("register", "--pid", str(server.pid), "--name", "srv", "--workstream", "w", "--port", str(port),
                  "--gpu", "1000", "--session-id", "agent-9")
    assert taken.returncode == 0, taken.stderr
    doc = fleet("status", "--json").json()
    assert doc["ports_claimed"] == {str(port): server.pid}
    assert doc["gpu_budget"]["allocated_mb"] == 1000  # moved, not counted twice
    assert fleet("release", "--claim", str(made.json()["claim_id"])).returncode == 3  # nothing left of it


def test_a_sessions_own_reservations_count_against_its_next_reservation(fleet: Any, free_ports: PortHolds) -> None:
    """Only a register takes a session's reservations over; a second reservation adds to the first. The budget
    here is 65536 - 8192 MB, so two of 30000 MB cannot both hold."""
    assert fleet("claim", "--gpu", "30000", "--session-id", "a").returncode == 0
    second = fleet("claim", "--gpu", "30000", "--session-id", "a", "--json")
    assert second.returncode == 1, second.stdout
    assert "reservation 1 of session a" in second.json()["reason"]
    assert fleet("status", "--json").json()["gpu_budget"]["allocated_mb"] == 30000
    port = free_ports.take()
    assert fleet("claim", "--port", str(port), "--session-id", "a").returncode == 0
    again = fleet("claim", "--port", str(port), "--session-id", "a", "--json")
    assert again.returncode == 1, again.stdout  # a conflict naming its own reservation, not a database error
    assert again.json()["error"] == "conflict"
    assert fleet("history", "--verify").returncode == 0


def test_register_takes_over_only_the_reserved_gpu_of_its_own_device(fleet: Any, fleet_home: Path,
                                                                      children: Children) -> None:
    (fleet_home / "config.json").write_text(json.dumps({
        "gpu_total_mb": 40000, "gpu_reserve_mb": 0,
        "gpu_devices": {"0": {"total_mb": 20000, "reserve_mb": 0}, "1": {"total_mb": 20000, "reserve_mb": 0}}}))
    assert fleet("claim", "--gpu", "15000", "--gpu-device", "0", "--session-id", "a").returncode == 0
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "p", "--workstream", "w", "--gpu", "15000",
                 "--gpu-device", "1", "--session-id", "a").returncode == 0  # device 0's reservation stays
    over = fleet("claim", "--gpu", "15000", "--session-id", "a", "--json")  # the pool: 40000 - 30000 held
    assert over.returncode == 1, over.stdout
    assert fleet("status", "--json").json()["gpu_budget"]["allocated_mb"] == 30000


def test_reopening_a_lease_whose_owner_died_does_not_hand_back_a_taken_repo(fleet: Any, children: Children,
                                                                            tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    first = children.sleeper()
    assert fleet("session", "start", "--session-id", "s", "--owner-pid", str(first.pid),
                 "--repo", str(repo)).returncode == 0
    first.kill()
    first.wait()
    other = children.sleeper()
    assert fleet("session", "start", "--session-id", "t", "--owner-pid", str(other.pid),
                 "--repo", str(repo)).returncode == 0
    again = children.sleeper()
    reopened = fleet("session", "ensure", "--session-id", "s", "--owner-pid", str(again.pid), "--json")
    assert reopened.returncode == 0, reopened.stderr
    assert reopened.json()["repo_dir"] is None
    listed = {x["session_id"]: (x["status"], x["repo_dir"]) for x in fleet("session", "list", "--json").json()}
    assert listed == {"s": ("ACTIVE", None), "t": ("ACTIVE", str(repo))}
    denied = fleet("guard", "--repo", str(repo), "--session-id", "s", "--json")
    assert denied.returncode == 1
    assert "session t (lease" in denied.json()["checks"]["repo"]["reason"]


def test_closing_a_session_releases_its_reservations(fleet: Any, children: Children, free_ports: PortHolds) -> None:
    port = free_ports.take()
    owner = children.sleeper()
    assert fleet("session", "start", "--session-id", "s", "--owner-pid", str(owner.pid)).returncode == 0
    assert fleet("claim", "--port", str(port), "--session-id", "s").returncode == 0
    closed = fleet("session", "close", "--session-id", "s", "--json")
    assert closed.returncode == 0
    assert closed.json()["reservations_released"] == [1]
    assert fleet("guard", "--port", str(port), "--session-id", "t").returncode == 0


def test_claim_input_errors(fleet: Any) -> None:
    assert fleet("claim", "--session-id", "s").returncode == 2  # nothing to claim
    assert fleet("claim", "--port", "auto", "--port", "auto", "--session-id", "s").returncode == 2
    assert fleet("claim", "--port", "0", "--session-id", "s").returncode == 2
    assert fleet("claim", "--port", "8000", "--ttl", "0", "--session-id", "s").returncode == 2
    r = fleet("claim", "--port", "8000", "--json", env={"FLEET_SESSION_ID": ""})
    assert r.returncode == 2
    assert r.json()["error"] == "usage_error"
