"""Claims in time (a fixed clock through the service): the TTL, a sync that never renews, gone instances, purging."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_watch.clock import FixedClock
from fleet_watch.errors import Conflict, NotFound
from fleet_watch.service import thunder
from fleet_watch.service.external import external_repo_locks, live_external_resources
from fleet_watch.service.fleet import Fleet
from tests.thunder.conftest import FakeTnr

T0 = 1_795_910_400.0  # 2026-11-29T00:00:00Z


@pytest.fixture
def opened(fleet_home: Path, tnr: FakeTnr, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    for key, value in tnr.env().items():
        monkeypatch.setenv(key, value)
    fleet = Fleet.open(fleet_home, clock=FixedClock(T0))
    tnr.prints("status_two.json")
    thunder.sync(fleet)
    return fleet


def locks(fleet: Fleet) -> list[str]:
    with fleet.reading() as conn:
        return [lock.repo_dir for lock in external_repo_locks(conn, fleet.clock.now())]


def test_a_claim_lives_ttl_seconds_past_its_last_heartbeat(opened: Fleet, tmp_path: Path) -> None:
    clock = opened.clock
    assert isinstance(clock, FixedClock)
    doc = thunder.claim(opened, "0", session_id="a", repo=str(tmp_path))
    assert doc["claim_expires_at"] == "2026-11-29T00:10:00.000000+00:00"  # default TTL 600 s
    clock.advance(590)
    thunder.heartbeat(opened, "0")
    clock.advance(590)  # 1180 s after the claim, 590 after the heartbeat: still held
    assert locks(opened) == [str(tmp_path)]
    with pytest.raises(Conflict):
        thunder.claim(opened, "0", session_id="b")

    # A sync refreshes what Thunder says, never the claim.
    thunder.sync(opened)
    clock.advance(11)
    assert locks(opened) == []
    with opened.reading() as conn:
        (view,) = [e for e in live_external_resources(conn, clock.now()) if e["id"] == "0"]
    assert (view["claim"], view["session_id"], view["repo_dir"]) == ("expired", None, None)
    with pytest.raises(NotFound, match="expired"):
        thunder.heartbeat(opened, "0")
    with pytest.raises(NotFound, match="expired"):  # nothing to release either (servers.md: exit 3)
        thunder.release(opened, "0")
    # Expired: another session may take it.
    assert thunder.claim(opened, "0", session_id="b")["session_id"] == "b"


def test_gone_instances_hold_nothing_and_are_dropped_after_a_day(opened: Fleet, tnr: FakeTnr, tmp_path: Path
                                                                 ) -> None:
    clock = opened.clock
    assert isinstance(clock, FixedClock)
    thunder.claim(opened, "1", session_id="a", repo=str(tmp_path))
    tnr.prints("status_one_stopped.json")
    result = thunder.sync(opened)
    assert [(g["id"], g["released_session"]) for g in result.gone] == [("1", "a")]
    assert locks(opened) == []
    with pytest.raises(NotFound, match="gone"):
        thunder.claim(opened, "1", session_id="a")
    clock.advance(23 * 3600)
    assert thunder.sync(opened).purged == []
    clock.advance(2 * 3600)
    assert [p["id"] for p in thunder.sync(opened).purged] == ["1"]
    with pytest.raises(NotFound, match="not known"):
        thunder.release(opened, "1")


def test_releasing_a_gone_instance_removes_its_row(opened: Fleet, tnr: FakeTnr) -> None:
    tnr.prints("status_one_stopped.json")
    thunder.sync(opened)
    doc = thunder.release(opened, "1")
    assert (doc["removed"], doc["released"]) == (True, True)
    with pytest.raises(NotFound, match="not known"):
        thunder.release(opened, "1")
    with opened.reading() as conn:
        assert [e["id"] for e in live_external_resources(conn, opened.clock.now())] == ["0"]
