"""The audit chain: every stored field is covered, the first break is named, the README API works."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_watch import events, registry
from fleet_watch.service.fleet import Fleet
from tests.conftest import Children, run_fleet


@pytest.fixture
def chain_db(fleet_home: Path, children: Children) -> Path:
    """A registry with five real events: three registrations and two releases."""
    fleet = Fleet.open(fleet_home)
    procs = [children.sleeper() for _ in range(3)]
    for i, proc in enumerate(procs):
        fleet.register(pid=proc.pid, name=f"w{i}", workstream="ws", ports=[18500 + i])
    fleet.release_pid(procs[0].pid)
    fleet.release_port(18501)
    fleet.close()
    return fleet_home / "registry.db"


def _tamper(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_intact_chain_verifies_through_readme_api(chain_db: Path) -> None:
    conn = registry.connect()
    valid, count = events.verify_chain(conn)
    assert (valid, count) == (True, 5)


@pytest.mark.parametrize(
    ("column", "value"),
    [("timestamp", "2020-01-01T00:00:00.000000+00:00"), ("event_type", "CLEAN"), ("pid", 4242),
     ("workstream", "other"), ("detail", '{"name":"forged"}'), ("prev_hash", "sha256:" + "1" * 64),
     ("hash", "sha256:" + "2" * 64)],
)
def test_changing_any_field_of_any_event_is_detected_and_named(chain_db: Path, column: str, value: object) -> None:
    for seq in (1, 3, 5):
        db_copy = chain_db.with_name(f"copy-{column}-{seq}.db")
        db_copy.write_bytes(chain_db.read_bytes())
        _tamper(db_copy, f"UPDATE events SET {column} = ? WHERE seq = ?", value, seq)
        report = events.verify(sqlite3.connect(db_copy))
        assert not report.valid
        assert report.first_break is not None, (column, seq, report)
        assert report.first_break.seq == seq, (column, seq, report)
        assert report.event_count == seq - 1


def test_deleting_a_middle_event_is_named(chain_db: Path) -> None:
    _tamper(chain_db, "DELETE FROM events WHERE seq = 3")
    report = events.verify(sqlite3.connect(chain_db))
    assert not report.valid
    assert report.first_break is not None
    assert report.first_break.seq == 3


def test_renumbering_is_detected(chain_db: Path) -> None:
    _tamper(chain_db, "UPDATE events SET seq = seq + 10 WHERE seq >= 4")
    report = events.verify(sqlite3.connect(chain_db))
    assert not report.valid
    assert report.first_break is not None
    assert report.first_break.seq == 4


def test_cutting_off_the_tail_is_detected(chain_db: Path) -> None:
    _tamper(chain_db, "DELETE FROM events WHERE seq >= 4")
    report = events.verify(sqlite3.connect(chain_db))
    assert not report.valid
    assert report.first_break is not None
    assert report.first_break.seq == 4


def test_history_verify_cli(chain_db: Path, fleet_home: Path) -> None:
    ok = run_fleet("history", "--verify", home=fleet_home)
    assert ok.returncode == 0
    assert "Chain valid: 5 events" in ok.stdout
    _tamper(chain_db, "UPDATE events SET pid = 1 WHERE seq = 2")
    bad = run_fleet("history", "--verify", home=fleet_home)
    assert bad.returncode == 6
    assert "event 2" in bad.stderr
    assert "Traceback" not in bad.stderr
    as_json = run_fleet("history", "--verify", "--json", home=fleet_home)
    assert as_json.returncode == 6
    doc = as_json.json()  # the one error path: the error object, with the verification's own fields
    assert (doc["valid"], doc["count"], doc["first_break"]) == (
        False, 1, {"id": 2, "reason": "stored hash does not match the event's fields"})
    assert (doc["error"], doc["exit_code"], doc["allowed"]) == ("integrity_error", 6, False)


def test_readme_snippet_runs_as_written(chain_db: Path, fleet_home: Path) -> None:
    snippet = (
        "from fleet_watch import events, registry\n"
        "conn = registry.connect()\n"
        "valid, count = events.verify_chain(conn)\n"
        'print(f"Chain valid: {valid}, events: {count}")\n'
    )
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Chain valid: True, events: 5"
