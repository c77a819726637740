"""The changelog: one entry per kind of change between successive states, bounded by rotation, read back by
``fleet changelog``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fleet_watch.config import load_settings
from fleet_watch.reports import changelog
from fleet_watch.reports.ownership import Classification, Lease, Ownership
from fleet_watch.service import changelog as log
from tests.conftest import Children
from tests.views import sample


def test_each_kind_of_change_is_an_entry_with_a_human_line() -> None:
    old = sample.state()
    records = list(sample.RECORDS)
    moved = sample.record(1, "vllm-main", "research", ports=(8000, 8005), gpu=(("0", 20480),),
                          repos=("/srv/new",), session="sess-a")
    records[0] = moved
    del records[4]  # dead-one is gone
    records.append(sample.record(6, "new-server", "llama-cpp", ports=(9000,), gpu=(("1", 1024),)))
    classes = dict(sample.OWNERSHIP.classes)
    classes[2] = Classification(classification="stale_candidate", evidence=("process heartbeat expired",))
    classes[6] = Classification(classification="live")
    leases = (Lease(session_id="sess-a", status="CLOSED"), Lease(session_id="sess-new", status="ACTIVE"))
    new = sample.state(Ownership(classes=classes, leases=leases), records)
    new["generated_utc"] = "2027-01-15T08:01:00.000000+00:00"
    old["external_resources"] = [{"provider": "thunder", "external_id": "a1", "name": "box", "status": "RUNNING"},
                                 {"provider": "thunder", "external_id": "b2", "name": "old", "status": "RUNNING"}]
    new["external_resources"] = [{"provider": "thunder", "external_id": "a1", "name": "box", "status": "STOPPED"},
                                 {"provider": "thunder", "external_id": "c3", "name": "fresh", "status": "STARTING"}]
    new["gpu_budget"] = {**new["gpu_budget"], "allocated_mb": 36864}

    item = changelog.entry(old, new)
    assert item is not None
    delta = item["delta"]
    assert item["timestamp"] == "2027-01-15T08:01:00.000000+00:00"
    assert [p["name"] for p in delta["processes_added"]] == ["new-server"]
    assert delta["processes_removed"] == [{"pid": 4005, "name": "dead-one", "workstream": "ollama"}]
    assert delta["claims_changed"] == [{"pid": 4001, "name": "vllm-main", "ports_added": [8005], "ports_removed": [],
                                        "repos_added": ["/srv/new"], "repos_removed": [],
                                        "gpu_mb": {"old": 40960, "new": 20480}}]
    assert delta["classes_changed"] == [{"pid": 4002, "name": sample.HOSTILE, "old": "disconnected",
                                         "new": "stale_candidate"}]
    assert delta["leases_added"] == [{"session_id": "sess-new", "status": "ACTIVE", "repo_dir": None}]
    assert delta["leases_removed"] == [{"session_id": "sess-gone"}]
    assert delta["lease_status_changes"] == [{"session_id": "sess-a", "old_status": "ACTIVE",
                                              "new_status": "CLOSED"}]
    assert [e["external_id"] for e in delta["external_added"]] == ["c3"]
    assert [e["external_id"] for e in delta["external_removed"]] == ["b2"]
    assert delta["status_changes"] == [{"provider": "thunder", "external_id": "a1", "old_status": "RUNNING",
                                        "new_status": "STOPPED"}]
    assert delta["gpu_allocated_mb"] == {"old": 55296, "new": 36864}

    line = changelog.describe(item)
    assert line is not None
    for part in ("+new-server (PID 4006, 1,024MB)", "-dead-one (PID 4005)", "vllm-main (PID 4001) +8005 +/srv/new "
                 "GPU 40,960→20,480MB", "disconnected→stale_candidate", "+lease sess-new (ACTIVE)",
                 "-lease sess-gone", "lease sess-a ACTIVE→CLOSED", "+thunder:c3 (fresh)", "-thunder:b2 (old)",
                 "thunder:a1 RUNNING→STOPPED", "GPU 55,296→36,864MB"):
        assert part in line, part
    assert line.startswith("2027-01-15 08:01:00  ")


def test_nothing_changed_is_no_entry_and_a_reused_pid_is_a_new_process() -> None:
    old = sample.state()
    same = copy.deepcopy(old)
    same["generated_utc"] = "2027-01-15T09:00:00+00:00"
    same["system_memory"] = {}
    assert changelog.entry(old, same) is None
    reused = copy.deepcopy(old)
    reused["processes"][0]["start_time"] += 500  # same PID, another process
    delta = changelog.diff_states(old, reused)
    assert [p["pid"] for p in delta["processes_added"]] == [4001]
    assert [p["pid"] for p in delta["processes_removed"]] == [4001]


def test_a_damaged_previous_state_is_read_defensively() -> None:
    junk: dict[str, Any] = {"processes": [1, "x", {"pid": "7"}, {"pid": 5, "start_time": None}],
                            "session_leases": "nope", "gpu_budget": [], "process_classifications": [None]}
    delta = changelog.diff_states(junk, sample.state())
    assert len(delta["processes_added"]) == 5
    assert "processes_removed" not in delta


def test_one_entry_is_bounded_however_many_processes_appear() -> None:
    records = [sample.record(i, f"p{i}", "bulk") for i in range(1, changelog.MAX_ITEMS + 51)]
    new = sample.state(Ownership(), records)
    delta = changelog.diff_states({}, new)
    assert len(delta["processes_added"]) == changelog.MAX_ITEMS
    assert delta["processes_added_omitted"] == 50
    line = changelog.describe({"timestamp": new["generated_utc"], "delta": delta})
    assert line is not None
    assert line.endswith("(+50 more)")


def test_the_file_rotates_and_never_grows_past_two_generations(fleet_home: Path) -> None:
    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "changelog_max_bytes": 4096}))
    limit = log.max_bytes(load_settings(fleet_home, lambda: 1))
    assert limit == 4096
    current, older = log.paths(fleet_home)
    for i in range(400):
        log.append(fleet_home, {"timestamp": f"t{i:04d}", "delta": {"gpu_allocated_mb": {"old": i, "new": i + 1}}},
                   limit)
        assert current.stat().st_size <= limit
    assert older.exists()
    assert older.stat().st_size <= limit
    read = log.read_last(fleet_home, 30)
    assert [e["timestamp"] for e in read.entries] == [f"t{i:04d}" for i in range(370, 400)]
    everything = log.read_last(fleet_home, 100_000)
    assert everything.entries[-1]["timestamp"] == "t0399"
    assert len(everything.entries) < 400  # the oldest are gone: bounded


def test_changelog_cli(fleet: Any, fleet_home: Path, children: Children) -> None:
    out = fleet("changelog")
    assert out.returncode == 0
    assert "No changelog yet" in out.stdout
    assert fleet("changelog", "--json").json() == []
    proc = children.sleeper()
    port = sample.free_port()
    assert fleet("register", "--pid", str(proc.pid), "--name", "srv", "--workstream", "demo", "--gpu", "512",
                 "--port", str(port)).returncode == 0
    assert fleet("report").returncode == 0
    assert fleet("release", "--pid", str(proc.pid)).returncode == 0
    assert fleet("report").returncode == 0
    assert fleet("report").returncode == 0  # nothing changed: no third entry
    entries = fleet("changelog", "--json").json()
    assert len(entries) == 2
    assert entries[0]["delta"]["processes_added"][0]["ports"] == [port]
    assert entries[1]["delta"]["processes_removed"][0]["pid"] == proc.pid
    lines = fleet("changelog").stdout.splitlines()
    assert f"+srv (PID {proc.pid}, 512MB)" in lines[0]
    assert "GPU 0→512MB" in lines[0]
    assert f"-srv (PID {proc.pid})" in lines[1]
    assert "GPU 512→0MB" in lines[1]
    assert fleet("changelog", "--lines", "1", "--json").json() == entries[1:]

    with (fleet_home / "state_changelog.jsonl").open("ab") as fh:
        fh.write(b"{not json\n[1,2]\n")
    out = fleet("changelog", "--json")
    assert out.returncode == 0
    assert out.json() == entries
    assert "2 damaged changelog line(s) skipped" in out.stderr
    for bad in ("0", "-3", "100001", "x"):
        out = fleet("changelog", "--lines", bad)
        assert out.returncode == 2, bad


def test_an_unreadable_previous_state_records_nothing_wrong(fleet: Any, fleet_home: Path) -> None:
    assert fleet("report").returncode == 0
    (fleet_home / "state.json").write_text('{"processes": [')
    out = fleet("report", "--json")
    assert out.returncode == 0
    assert out.json()["changelog_entry"] is None
    json.loads((fleet_home / "state.json").read_text())  # rewritten whole
