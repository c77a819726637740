"""Classification and reaping with real processes, through the real CLI.

A real orphan is a child whose launching shell exited (it is re-parented: to PID 1 inside the suite's PID namespace,
else to init or a subreaper); stale heartbeats and PID reuse are simulated by editing the registry's
``last_heartbeat`` and ``start_time`` columns, as the issue asks.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.probes import signals
from fleet_watch.probes.processes import process_facts
from tests.ownership.conftest import Procs, Registry, running, start_of, wait_for


def register(fleet: Any, pid: int, name: str, *extra: str) -> None:
    out = fleet("register", "--pid", str(pid), "--name", name, "--workstream", "own", *extra)
    assert out.returncode == 0, out.stderr


def classes(fleet: Any) -> dict[int, dict[str, Any]]:
    out = fleet("reconcile", "--json")
    assert out.returncode == 0, out.stderr
    return {p["pid"]: p for p in out.json()["processes"]}


def test_a_real_orphan_is_classified_with_evidence_and_reaped(fleet: Any, procs: Procs, registry: Registry) -> None:
    orphan = procs.orphan("sleep 600")
    start = start_of(orphan)
    register(fleet, orphan, "left-behind")
    fresh = classes(fleet)[orphan]
    assert fresh["classification"] == "live"  # heartbeat fresh: its own registration owns it
    assert fresh["parent_chain_detached"] is True

    registry.age_heartbeat(orphan, 600)
    row = classes(fleet)[orphan]
    assert row["classification"] == "orphan_confirmed"
    assert row["safe_to_reap"] is True
    assert re.match(r"process heartbeat expired \(60\ds ago", row["evidence"][0])  # a loaded machine: a second later
    assert row["evidence"][1] == "registered without a session: no session lease owns it"
    assert row["evidence"][2].startswith("parent chain detached")
    assert row["session_lease_status"] == "NONE"

    stale = fleet("stale")
    assert stale.returncode == 0
    assert re.match(rf"PID {orphan} \(left-behind\) — orphan_confirmed — heartbeat 60\ds ago — ", stale.stdout)

    dry = fleet("reap")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "Dry run. Orphan-confirmed processes:"
    assert running(orphan, start)  # a dry run touches nothing

    out = fleet("reap", "--confirm", "--json")
    assert out.returncode == 0, out.stderr
    doc = out.json()
    assert doc["candidate_count"] == 1
    assert [(r["pid"], r["outcome"], r["signals"]) for r in doc["released"]] == [(orphan, "exited", ["SIGTERM"])]
    assert not running(orphan, start)
    assert registry.rows() == []
    event = fleet("history", "--type", "REAP", "--json").json()[0]
    assert event["pid"] == orphan
    detail = event["detail"]
    assert (detail["classification"], detail["outcome"], detail["signals"], detail["released"]) == (
        "orphan_confirmed", "exited", ["SIGTERM"], True)
    assert len(detail["evidence"]) == 3


def test_an_attached_stale_process_is_only_a_candidate_and_reap_leaves_it(fleet: Any, procs: Procs,
                                                                          registry: Registry) -> None:
    _shell, child = procs.attached("sleep 600")
    start = start_of(child)
    register(fleet, child, "still-owned")
    registry.age_heartbeat(child, 600)
    row = classes(fleet)[child]
    assert row["classification"] == "stale_candidate"
    assert row["parent_chain_detached"] is False
    assert row["evidence"][2].startswith("parent chain attached: parent PID ")
    out = fleet("reap", "--confirm", "--json")
    assert out.returncode == 0, out.stderr
    assert out.json()["candidate_count"] == 0
    assert running(child, start)


def test_a_session_lease_decides_between_owned_and_orphaned(fleet: Any, procs: Procs, registry: Registry) -> None:
    owned = procs.orphan("sleep 600")
    closed = procs.orphan("sleep 600")
    owner_gone = procs.orphan("sleep 600")
    missing = procs.orphan("sleep 600")
    dead_owner = procs.popen(["sleep", "600"])
    registry.add_lease("s-open", os.getpid())
    registry.add_lease("s-closed", os.getpid(), closed=True)
    registry.add_lease("s-gone", dead_owner.pid)
    dead_owner.kill()
    dead_owner.wait()
    for pid, session in ((owned, "s-open"), (closed, "s-closed"), (owner_gone, "s-gone"), (missing, "s-missing")):
        register(fleet, pid, f"p-{session}", "--session-id", session)
    fresh = classes(fleet)
    assert {p: fresh[p]["classification"] for p in (owned, closed, owner_gone, missing)} == {
        owned: "live", closed: "disconnected", owner_gone: "disconnected", missing: "disconnected"}
    for pid in (owned, closed, owner_gone, missing):
        registry.age_heartbeat(pid, 400)
    stale = classes(fleet)
    assert {p: stale[p]["classification"] for p in (owned, closed, owner_gone, missing)} == {
        owned: "stale_candidate", closed: "orphan_confirmed", owner_gone: "orphan_confirmed",
        missing: "orphan_confirmed"}
    assert stale[owner_gone]["session_lease_status"] == "OWNER_GONE"
    assert stale[owner_gone]["evidence"][1] == f"session 's-gone''s owner PID {dead_owner.pid} is gone (dead_pid)"
    assert stale[missing]["evidence"][1] == "session lease 's-missing' is missing"

    # The views show the same classes and every lease (the one ownership source).
    state = fleet("status", "--json").json()
    assert {c["pid"]: c["classification"] for c in state["process_classifications"]}[closed] == "orphan_confirmed"
    assert {s["session_id"]: s["status"] for s in state["session_leases"]} == {
        "s-open": "ACTIVE", "s-closed": "CLOSED", "s-gone": "OWNER_GONE"}


def test_a_zombie_is_exited_and_never_signalled(fleet: Any, procs: Procs, registry: Registry) -> None:
    child = procs.popen(["sleep", "600"])
    start = start_of(child.pid)
    register(fleet, child.pid, "zombie")
    registry.age_heartbeat(child.pid, 600)
    os.kill(child.pid, signal.SIGKILL)  # our own child; not waited for: a zombie until we reap it
    wait_for(lambda: (f := process_facts(child.pid)) is not None and f.is_zombie, "the zombie")
    row = classes(fleet)[child.pid]
    assert row["classification"] == "exited"
    assert row["death_reason"] == "zombie"
    out = fleet("reap", "--confirm", "--json")
    assert out.json()["candidate_count"] == 0
    result = signals.stop(child.pid, start, grace_s=1)
    assert (result.outcome, result.signals) == ("already_gone", ())
    child.wait()


def test_a_reused_pid_is_never_signalled_by_reap(fleet: Any, procs: Procs, registry: Registry) -> None:
    orphan = procs.orphan("sleep 600")
    start = start_of(orphan)
    register(fleet, orphan, "reused")
    registry.age_heartbeat(orphan, 600)
    registry.shift_start_time(orphan)  # the row now names an older process that had this PID
    row = classes(fleet)[orphan]
    assert (row["classification"], row["death_reason"]) == ("exited", "pid_reused")
    out = fleet("reap", "--confirm", "--json")
    assert out.returncode == 0, out.stderr
    assert out.json()["candidate_count"] == 0
    assert running(orphan, start)
    assert fleet("history", "--type", "REAP", "--json").json() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user (CI runs the suite "
                    "as root, inside a private PID namespace)")
def test_another_users_orphan_is_refused_unless_root_asks(fleet: Any, procs: Procs, registry: Registry,
                                                          fleet_home: Path) -> None:
    orphan = procs.orphan("sleep 600", user="65534")
    start = start_of(orphan)
    assert process_facts(orphan).uid == 65534  # type: ignore[union-attr]
    register(fleet, orphan, "nobodys")
    registry.age_heartbeat(orphan, 600)
    assert classes(fleet)[orphan]["classification"] == "orphan_confirmed"

    refused = fleet("reap", "--confirm", "--json")
    assert refused.returncode == 1
    failed = refused.json()["failed"]
    assert [(f["pid"], f["outcome"], f["signals"]) for f in failed] == [(orphan, "refused", [])]
    assert "belongs to uid 65534, not to root" in failed[0]["reason"]
    assert running(orphan, start)
    assert [r[0] for r in registry.rows()] == [orphan]  # the row stays: nothing happened
    event = fleet("history", "--type", "REAP", "--json").json()[0]["detail"]
    assert (event["outcome"], event["released"]) == ("refused", False)

    done = fleet("reap", "--confirm", "--allow-other-users", "--json")
    assert done.returncode == 0, done.stdout
    assert [r["pid"] for r in done.json()["released"]] == [orphan]
    wait_for(lambda: not running(orphan, start), "the orphan to exit")


def test_allow_other_users_is_for_root_only(fleet: Any) -> None:
    if os.geteuid() == 0:
        out = fleet("reap", "--allow-other-users", "--json")
        assert out.returncode == 0, out.stderr
        return
    out = fleet("reap", "--allow-other-users", "--json")
    assert out.returncode == 2
    assert out.json()["error"] == "usage_error"


def test_reconcile_and_stale_on_an_empty_registry(fleet: Any) -> None:
    assert fleet("reconcile").stdout == "No registered processes.\n"
    assert fleet("stale").stdout == "No stale processes.\n"
    assert fleet("reap").stdout == "No orphan-confirmed processes.\n"
    doc = fleet("reconcile", "--json").json()
    assert doc["summary"] == dict.fromkeys(("live", "disconnected", "stale_candidate", "orphan_confirmed", "exited"), 0)


def test_a_heartbeat_that_is_not_a_timestamp_proves_nothing(fleet: Any, procs: Procs, registry: Registry) -> None:
    orphan = procs.orphan("sleep 600")
    register(fleet, orphan, "garbled")
    registry.execute("UPDATE processes SET last_heartbeat = 'yesterday' WHERE pid = ?", (orphan,))
    row = classes(fleet)[orphan]
    assert row["classification"] == "stale_candidate"
    assert row["evidence"][0] == "process heartbeat is unreadable"


def test_a_reaped_process_that_releases_its_own_row_counts_as_reaped(fleet: Any, procs: Procs, registry: Registry,
                                                                    fleet_home: Path) -> None:
    """Its SIGTERM trap runs `fleet release --pid $$` before exiting: the row is gone when reap comes to release
    it. It was stopped, so reap succeeds (it used to say "failed" and exit 1)."""
    fleet_cmd = f"{sys.executable} -m fleet_watch"
    orphan = procs.orphan(f"env FLEET_WATCH_HOME={fleet_home} bash -c "
                          f"'trap \"{fleet_cmd} release --pid \\$\\$; exit 0\" TERM; while :; do sleep 0.2; done'")
    register(fleet, orphan, "self-releasing")
    registry.age_heartbeat(orphan, 600)
    out = fleet("reap", "--confirm", "--json")
    assert out.returncode == 0, out.stdout
    doc = out.json()
    assert doc["failed"] == []
    (done,) = doc["released"]
    assert (done["pid"], done["note"]) == (orphan, "its row was already released")
    assert registry.rows() == []
