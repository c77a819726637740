"""``fleet thunder`` through the real CLI against a stand-in ``tnr`` on PATH printing recorded output shapes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.thunder.conftest import FakeTnr

TRAINER = "3f9c2a7e-8b1d-4e5f-9a6b-1c2d3e4f5a6b"
EVAL = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"


def rows(home: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(home / "registry.db")
    try:
        return list(conn.execute("SELECT external_id, status, gone_at, session_id, repo_dir, claim_expires_at "
                                 "FROM external_resources ORDER BY external_id"))
    finally:
        conn.close()


def event_types(home: Path) -> list[str]:
    conn = sqlite3.connect(home / "registry.db")
    try:
        return [t for (t,) in conn.execute("SELECT event_type FROM events ORDER BY seq")]
    finally:
        conn.close()


def test_sync_ingests_then_follows_status_changes_and_disappearance(fleet: Any, fleet_home: Path,
                                                                    tnr: FakeTnr) -> None:
    tnr.prints("status_two.json")
    out = fleet("thunder", "sync", "--json", env=tnr.env())
    assert out.returncode == 0, out.stderr
    doc = out.json()
    assert (doc["count"], [a["id"] for a in doc["added"]]) == (2, ["0", "1"])
    trainer = next(r for r in doc["resources"] if r["external_id"] == TRAINER)
    assert {k: trainer[k] for k in ("provider", "id", "name", "status", "gpu_type", "gpu_count", "endpoint",
                                    "cleanup_cmd", "claim", "session_id", "repo_dir", "gpu_mb")} == {
        "provider": "thunder", "id": "0", "name": "trainer", "status": "RUNNING", "gpu_type": "a100xl",
        "gpu_count": 1, "endpoint": "203.0.113.10:32101", "cleanup_cmd": "tnr delete 0 --yes", "claim": "unclaimed",
        "session_id": None, "repo_dir": None, "gpu_mb": 0}
    assert tnr.calls() == ["--json status"]
    status = fleet("status", "--json").json()
    assert {e["external_id"] for e in status["external_resources"]} == {EVAL, TRAINER}
    guard = fleet("guard", "--port", "18777", "--json").json()
    assert {e["external_id"] for e in guard["state"]["external_resources"]} == {EVAL, TRAINER}
    assert event_types(fleet_home).count("EXTERNAL_SYNC") == 1

    # The same answer again changes nothing and logs nothing.
    assert fleet("thunder", "sync", env=tnr.env()).returncode == 0
    assert event_types(fleet_home).count("EXTERNAL_SYNC") == 1

    # eval vanished, trainer stopped: eval is marked gone (not kept as if present), trainer's status follows.
    tnr.prints("status_one_stopped.json")
    text = fleet("thunder", "sync", env=tnr.env())
    assert text.returncode == 0, text.stderr
    assert "Synced 1 Thunder instance(s): 0 added, 1 gone, 1 status change(s)" in text.stdout
    assert "- thunder:1 (eval) gone" in text.stdout
    assert "~ thunder:0 RUNNING -> STOPPED" in text.stdout
    status = fleet("status", "--json").json()
    assert [(e["external_id"], e["status"]) for e in status["external_resources"]] == [(TRAINER, "STOPPED")]
    assert [(r[0], r[1], r[2] is not None) for r in rows(fleet_home)] == [(TRAINER, "STOPPED", False),
                                                                        (EVAL, "GONE", True)]
    human = fleet("status")
    assert "External resources (1):" in human.stdout
    assert "thunder:0  trainer" in human.stdout
    history = fleet("history", "--type", "EXTERNAL_SYNC", "--json").json()
    assert history[0]["detail"]["gone"][0]["external_id"] == EVAL
    assert fleet("history", "--verify").returncode == 0


MALFORMED = ["status_table.txt", "bad_element.json", "no_ids.json", "duplicate.json", "nan.json", "truncated.json",
             "object_not_map.json", "error_not_authenticated.json"]


@pytest.mark.parametrize("recorded", MALFORMED)
def test_malformed_output_is_one_line_exit_7_and_changes_nothing(fleet: Any, fleet_home: Path, tnr: FakeTnr,
                                                                  recorded: str) -> None:
    tnr.prints("status_two.json")
    assert fleet("thunder", "sync", env=tnr.env()).returncode == 0
    before, events = rows(fleet_home), event_types(fleet_home)
    tnr.prints(recorded)
    out = fleet("thunder", "sync", env=tnr.env())
    assert out.returncode == 7
    assert out.stderr.startswith("Error: tnr")
    assert out.stderr.count("\n") == 1
    assert "nothing was changed" in out.stderr
    assert "Traceback" not in out.stderr
    as_json = fleet("thunder", "sync", "--json", env=tnr.env())
    assert (as_json.returncode, as_json.json()["error"]) == (7, "tool_failed")
    assert rows(fleet_home) == before
    assert event_types(fleet_home) == events


def test_missing_failing_or_hanging_tnr_changes_nothing(fleet: Any, fleet_home: Path, tnr: FakeTnr,
                                                        tmp_path: Path) -> None:
    tnr.prints("status_two.json")
    assert fleet("thunder", "sync", env=tnr.env()).returncode == 0
    before = rows(fleet_home)

    empty = tmp_path / "empty-path"
    empty.mkdir()
    missing = fleet("thunder", "sync", env={"PATH": str(empty)})
    assert missing.returncode == 7
    assert missing.stderr == "Error: tnr (the Thunder Compute CLI) is not on PATH: install it and run `tnr login`\n"

    tnr.prints(b"", exit_code=1, stderr=b"Error: not authenticated. Please run 'tnr login' first\n")
    failing = fleet("thunder", "sync", "--json", env=tnr.env())
    assert failing.returncode == 7
    assert failing.json()["reason"] == ("tnr status failed (exit 1): Error: not authenticated. Please run 'tnr login' "
                                        "first; nothing was changed")

    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "thunder_tnr_timeout_s": 0.5}))
    tnr.prints("status_empty.json", sleep=30)
    hung = fleet("thunder", "sync", env=tnr.env())
    assert hung.returncode == 7
    assert "did not finish within 0.5 s" in hung.stderr
    assert rows(fleet_home) == before


def test_claim_heartbeat_release_and_the_repo_lock(fleet: Any, fleet_home: Path, tnr: FakeTnr, tmp_path: Path,
                                                   children: Any) -> None:
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    tnr.prints("status_two.json")
    assert fleet("thunder", "sync", env=tnr.env()).returncode == 0
    assert fleet("thunder", "claim", "--id", "7", "--session-id", "s1").returncode == 3

    out = fleet("thunder", "claim", "--id", "0", "--session-id", "agent-1", "--repo", str(repo), "--json")
    assert out.returncode == 0, out.stderr
    doc = out.json()
    assert (doc["claim"], doc["session_id"], doc["repo_dir"], doc["workstream"]) == (
        "claimed", "agent-1", str(repo), "thunder")
    state = fleet("guard", "--repo", str(repo / "sub"), "--session-id", "agent-1", "--json").json()["state"]
    assert str(repo) in state["locked_repos"]
    status = fleet("status", "--json").json()
    assert status["repos_locked"][str(repo)] is None
    claimed = next(e for e in status["external_resources"] if e["id"] == "0")
    assert (claimed["session_id"], claimed["repo_dir"]) == ("agent-1", str(repo))
    assert fleet("report").returncode == 0  # the report lists the remote instance with its claim
    report = (fleet_home / "STATE_REPORT.md").read_text()
    assert f"| thunder:0 | {claimed['name']} |" in report
    assert "| agent-1 |" in report

    # Another session: the instance is taken, and so is the repo (or anything inside it) through another instance.
    taken = fleet("thunder", "claim", "--uuid", TRAINER, "--session-id", "agent-2", "--json")
    assert taken.returncode == 1
    assert taken.json()["reason"].startswith("thunder:0 is claimed by session agent-1 until ")
    inside = fleet("thunder", "claim", "--id", "1", "--session-id", "agent-2", "--repo", str(repo / "sub"))
    assert inside.returncode == 1
    assert "locked by thunder:0 (trainer), session agent-1 (lock on" in inside.stderr
    assert fleet("thunder", "claim", "--id", "1", "--session-id", "agent-1", "--repo", str(repo / "sub")
                 ).returncode == 0  # the same session may

    # A live registered process of another session holds a repo: no external claim on it.
    other = tmp_path / "other"
    other.mkdir()
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "w", "--workstream", "x", "--repo", str(other),
                 "--session-id", "s9").returncode == 0
    locked = fleet("thunder", "release", "--id", "1")
    assert locked.returncode == 0
    refused = fleet("thunder", "claim", "--id", "1", "--session-id", "agent-2", "--repo", str(other))
    assert refused.returncode == 1
    assert f"repo {other} locked by PID {proc.pid} (w)" in refused.stderr

    beat = fleet("thunder", "heartbeat", "--id", "0", "--json")
    assert beat.returncode == 0
    assert beat.json()["claim_expires_at"] >= doc["claim_expires_at"]
    assert fleet("thunder", "heartbeat", "--id", "0", "--session-id", "agent-2").returncode == 1
    assert fleet("thunder", "heartbeat", "--id", "1").returncode == 3  # released: not claimed
    assert fleet("thunder", "release", "--id", "0", "--session-id", "agent-2").returncode == 1
    released = fleet("thunder", "release", "--id", "0")
    assert (released.returncode, released.stdout) == (0, "Released thunder:0 (trainer)\n")
    assert fleet("thunder", "release", "--id", "0").returncode == 3
    state = fleet("guard", "--repo", str(repo), "--json").json()["state"]
    assert str(repo) not in state["locked_repos"]
    kinds = event_types(fleet_home)
    assert kinds.count("EXTERNAL_CLAIM") == 2
    assert kinds.count("EXTERNAL_HEARTBEAT") == 1
    assert kinds.count("EXTERNAL_RELEASE") == 2
    assert kinds.count("CONFLICT") == 5
    assert fleet("history", "--type", "external_claim").returncode == 0
    assert fleet("history", "--verify").returncode == 0


def test_bad_arguments_and_config(fleet: Any, fleet_home: Path) -> None:
    assert fleet("thunder", "claim", "--id", "0").returncode == 2  # no --session-id
    assert fleet("thunder", "claim", "--id", "", "--session-id", "s").returncode == 2
    assert fleet("thunder", "heartbeat", "--id", "0\x07").returncode == 2
    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "thunder_claim_ttl_s": "600"}))
    out = fleet("thunder", "heartbeat", "--id", "0", "--json")
    assert out.returncode == 4
    assert "thunder_claim_ttl_s" in out.json()["reason"]


def test_closing_the_claiming_session_releases_its_instances_and_their_repo(fleet: Any, fleet_home: Path,
                                                                            tnr: FakeTnr, tmp_path: Path,
                                                                            children: Any) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    tnr.prints("status_two.json")
    assert fleet("thunder", "sync", env=tnr.env()).returncode == 0
    owner = children.sleeper()
    assert fleet("session", "start", "--session-id", "agent-1", "--owner-pid", str(owner.pid)).returncode == 0
    assert fleet("thunder", "claim", "--id", "0", "--session-id", "agent-1", "--repo", str(repo)).returncode == 0
    assert fleet("thunder", "claim", "--id", "1", "--session-id", "agent-9").returncode == 0  # another session's
    assert fleet("guard", "--repo", str(repo), "--session-id", "agent-2").returncode == 1

    closed = fleet("session", "close", "--session-id", "agent-1", "--json")
    assert closed.returncode == 0, closed.stderr
    assert closed.json()["external_released"] == ["thunder:0"]
    assert fleet("guard", "--repo", str(repo), "--session-id", "agent-2").returncode == 0
    claims = {e["id"]: (e["claim"], e["session_id"]) for e in fleet("status", "--json").json()["external_resources"]}
    assert claims == {"0": ("unclaimed", None), "1": ("claimed", "agent-9")}
    assert fleet("thunder", "claim", "--id", "0", "--session-id", "agent-2").returncode == 0
    conn = sqlite3.connect(fleet_home / "registry.db")
    try:
        detail = json.loads(conn.execute("SELECT detail FROM events WHERE event_type = 'SESSION_CLOSE'").fetchone()[0])
    finally:
        conn.close()
    assert detail["external_released"] == ["thunder:0"]
    assert fleet("history", "--verify").returncode == 0


def test_a_session_id_is_taken_as_given_like_every_other_commands(fleet: Any, tnr: FakeTnr, tmp_path: Path,
                                                                  children: Any) -> None:
    tnr.prints("status_two.json")
    assert fleet("thunder", "sync", env=tnr.env()).returncode == 0
    owner = children.sleeper()
    assert fleet("session", "start", "--session-id", "a ", "--owner-pid", str(owner.pid)).returncode == 0
    claimed = fleet("thunder", "claim", "--id", "0", "--session-id", "a ", "--repo", str(tmp_path), "--json")
    assert claimed.json()["session_id"] == "a "
    assert fleet("guard", "--repo", str(tmp_path), "--session-id", "a ").returncode == 0  # its own claim
    assert fleet("session", "close", "--session-id", "a ", "--json").json()["external_released"] == ["thunder:0"]
    assert fleet("thunder", "claim", "--id", "0", "--session-id", "a\tb").returncode == 2  # the common rule
