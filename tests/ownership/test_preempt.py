"""``fleet preempt`` with real holders listening on loopback ports.

The last step reserves the freed port for the preempting session through the reservations' own function
(``service.claims.reserve``). Most tests stand in for it with a recorder that checks the moment it is called (the
holder gone, the port free); ``test_preempt_end_to_end_through_the_cli`` runs the whole path, reservation included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.probes import ports
from fleet_watch.service.acting import rights
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.preempt import preempt
from tests.ownership.conftest import HERE, Procs, Registry, running, start_of


class HandOver:
    """Stands in for the reservation: records each call and what was true at that moment."""

    def __init__(self, holder: tuple[int, float] | None = None) -> None:
        self.holder = holder
        self.calls: list[tuple[int, str, float]] = []

    def __call__(self, fleet: Fleet, port: int, session_id: str, ttl_s: float) -> dict[str, Any]:
        assert ports.port_in_use(port) is False, "the port must be free before it moves"
        if self.holder is not None:
            assert not running(*self.holder), "the holder must be gone before the port moves"
        self.calls.append((port, session_id, ttl_s))
        return {"reservation_id": 7, "session_id": session_id, "ports": [port]}


def register(fleet: Any, pid: int, port: int, priority: int) -> None:
    out = fleet("register", "--pid", str(pid), "--name", "holder", "--workstream", "own", "--port", str(port),
                "--priority", str(priority))
    assert out.returncode == 0, out.stderr


def test_a_holder_that_ignores_sigterm_is_preempted_by_escalation(fleet: Any, procs: Procs, registry: Registry,
                                                                   fleet_home: Path) -> None:
    holder, port = procs.holder()
    start = start_of(holder.pid)
    register(fleet, holder.pid, port, 2)
    hand_over = HandOver((holder.pid, start))
    with Fleet.open(fleet_home) as opened:
        result = preempt(opened, port=port, priority=4, reason="eval run", grace_s=0.3, session_id="s-new",
                         who=rights(False), hand_over=hand_over)
    assert (result.outcome, result.ok) == ("preempted", True)
    assert result.stop is not None
    assert result.stop["signals"] == ["SIGTERM", "SIGKILL"]
    assert hand_over.calls == [(port, "s-new", 300.0)]
    assert result.reservation == {"reservation_id": 7, "session_id": "s-new", "ports": [port]}
    assert registry.rows() == []  # the dead holder's row (and its claims) went
    event = fleet("history", "--type", "PREEMPT", "--json").json()[0]["detail"]
    assert (event["holder_pid"], event["holder_priority"], event["new_priority"]) == (holder.pid, 2, 4)
    assert (event["outcome"], event["signals"], event["reason"]) == ("preempted", ["SIGTERM", "SIGKILL"], "eval run")


def test_the_port_does_not_move_while_something_still_listens(fleet: Any, procs: Procs, registry: Registry,
                                                              fleet_home: Path) -> None:
    holder = procs.popen([sys.executable, str(HERE / "stubborn.py"), "--obey", "--keeper"], stdout=subprocess.PIPE)
    assert holder.stdout is not None
    port_text, keeper_text = holder.stdout.readline().split()
    port = int(port_text)
    keeper = procs.track(int(keeper_text))
    register(fleet, holder.pid, port, 1)
    hand_over = HandOver()
    with Fleet.open(fleet_home) as opened:
        result = preempt(opened, port=port, priority=5, reason="mine now", grace_s=5, session_id="s-new",
                         who=rights(False), hand_over=hand_over, port_wait_s=0.3)
    assert (result.outcome, result.ok) == ("port_busy", False)
    assert f"port {port} is still in use" in result.message
    assert hand_over.calls == []
    assert running(keeper, start_of(keeper))  # never Fleet Watch's: it was not registered
    event = fleet("history", "--type", "PREEMPT", "--json").json()[0]["detail"]
    assert (event["outcome"], event["reservation"]) == ("port_busy", None)


def test_a_free_unclaimed_port_is_handed_over_at_once(fleet_home: Path, free_ports: Any) -> None:
    port = free_ports.take()
    free_ports.release(port)
    hand_over = HandOver()
    with Fleet.open(fleet_home) as opened:
        result = preempt(opened, port=port, priority=3, reason="x", grace_s=1, session_id="s", who=rights(False),
                         hand_over=hand_over)
    assert (result.outcome, result.ok) == ("free", True)
    assert hand_over.calls == [(port, "s", 300.0)]


@pytest.mark.parametrize("priority", ["3", "2"])
def test_only_a_strictly_higher_priority_preempts(fleet: Any, procs: Procs, priority: str) -> None:
    holder, port = procs.holder(obey=True)
    start = start_of(holder.pid)
    register(fleet, holder.pid, port, 3)
    out = fleet("preempt", "--port", str(port), "--priority", priority, "--reason", "x", "--session-id", "s")
    assert out.returncode == 1
    assert out.stdout == f"DENY: cannot preempt: priority {priority} is not higher than the holder's priority 3\n"
    assert running(holder.pid, start)
    doc = fleet("preempt", "--port", str(port), "--priority", priority, "--reason", "x", "--session-id", "s",
                "--json").json()
    assert (doc["preempted"], doc["outcome"], doc["holder"]["pid"]) == (False, "denied", holder.pid)


def test_a_reused_pid_is_never_preempted(fleet: Any, procs: Procs, registry: Registry) -> None:
    holder, port = procs.holder(obey=True)
    start = start_of(holder.pid)
    register(fleet, holder.pid, port, 1)
    registry.shift_start_time(holder.pid)  # the row names an older process: the listener is not Fleet Watch's
    out = fleet("preempt", "--port", str(port), "--priority", "5", "--reason", "x", "--session-id", "s", "--json")
    assert out.returncode == 1
    doc = out.json()
    assert doc["outcome"] == "denied"
    assert doc["message"] == (f"port {port} is in use by PID {holder.pid} that Fleet Watch did not register: "
                              "not Fleet Watch's to stop")
    assert running(holder.pid, start)


def test_preempt_needs_a_session_to_hand_the_port_to(fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_CODE_SESSION_ID", raising=False)
    out = fleet("preempt", "--port", "8000", "--priority", "5", "--reason", "x", "--json")
    assert out.returncode == 2
    assert out.json()["reason"] == "preempt hands the port to a session: pass --session-id or set $FLEET_SESSION_ID"
    bad = fleet("preempt", "--port", "8000", "--priority", "6", "--reason", "x", "--session-id", "s", "--json")
    assert bad.returncode == 2


def test_preempt_end_to_end_through_the_cli(fleet: Any, procs: Procs, registry: Registry) -> None:
    holder, port = procs.holder()  # ignores SIGTERM
    register(fleet, holder.pid, port, 2)
    out = fleet("preempt", "--port", str(port), "--priority", "4", "--reason", "eval run", "--grace", "0.3",
                "--session-id", "s-new", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = out.json()
    assert doc["outcome"] == "preempted"
    assert doc["reservation"]["ports"] == [port]
    assert doc["stop"]["signals"] == ["SIGTERM", "SIGKILL"]  # it ignored SIGTERM: escalated
    assert holder.wait(timeout=10) == -9
    # The port is now the preempting session's reservation: others are denied, the session itself is not.
    other = fleet("guard", "--port", str(port), "--session-id", "someone", "--json").json()
    assert other["allowed"] is False
    assert "session s-new" in other["checks"]["port"]["reason"]
    assert fleet("guard", "--port", str(port), "--session-id", "s-new").returncode == 0
    assert registry.rows() == []


def test_a_port_another_process_listens_on_is_never_preempted_from_its_claimant(fleet: Any, procs: Procs,
                                                                              fleet_home: Path) -> None:
    """The claimant does not listen; an unregistered process does. Stopping the claimant would not free the port,
    so nothing is signalled (README: a port held by a listener Fleet Watch did not register is denied)."""
    from tests.helpers.ports import free_port

    port = free_port()
    claimant = procs.popen(["sleep", "120"])
    register(fleet, claimant.pid, port, 1)  # claimed while free; then someone else binds it
    listener = procs.popen([sys.executable, "-c", "import socket, sys, time\ns = socket.socket()\n"
                            f"s.bind(('127.0.0.1', {port})); s.listen(1); print('up', flush=True)\n"
                            "time.sleep(120)"], stdout=subprocess.PIPE)
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "up"
    claimant_start, listener_start = start_of(claimant.pid), start_of(listener.pid)
    with Fleet.open(fleet_home) as opened:
        result = preempt(opened, port=port, priority=5, reason="mine", grace_s=1, session_id="s-new",
                         who=rights(False), hand_over=HandOver(), port_wait_s=0.3)
    assert (result.outcome, result.ok) == ("denied", False)
    assert f"in use by PID {listener.pid}" in result.message
    assert result.listener is not None
    assert running(claimant.pid, claimant_start)
    assert running(listener.pid, listener_start)
