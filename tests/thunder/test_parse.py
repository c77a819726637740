"""Reading ``tnr --json status`` (pure): recorded shapes accepted, anything doubtful rejected whole."""

from __future__ import annotations

import pytest

from fleet_watch.core import external
from fleet_watch.core.thunder import ThunderOutputError, parse_status
from tests.thunder.conftest import DATA


def parse(name: str, code: int = 0, stderr: bytes = b"") -> list:  # type: ignore[type-arg]
    return parse_status(code, (DATA / name).read_bytes(), stderr)


def test_recorded_list_maps_ids_gpus_endpoint_and_cleanup() -> None:
    trainer, evaluator = parse("status_two.json")
    assert trainer.external_id == "3f9c2a7e-8b1d-4e5f-9a6b-1c2d3e4f5a6b"
    assert (trainer.short_id, trainer.name, trainer.status) == ("0", "trainer", "RUNNING")
    assert (trainer.gpu_type, trainer.gpu_count, trainer.endpoint) == ("a100xl", 1, "203.0.113.10:32101")
    assert trainer.cleanup_cmd == "tnr delete 0 --yes"
    assert "sshPublicKeys" not in trainer.metadata
    assert trainer.metadata["httpPorts"] == [8888]
    assert (evaluator.status, evaluator.gpu_count, evaluator.endpoint) == ("STARTING", 2, None)


def test_type_drift_a_preamble_and_an_empty_list_are_fine() -> None:
    (drift,) = parse("status_types_drift.json")
    assert (drift.external_id, drift.short_id, drift.status, drift.gpu_count) == ("3", "3", "RUNNING", 4)
    assert drift.endpoint == "198.51.100.7:2222"
    assert drift.cleanup_cmd == "tnr delete 3 --yes"
    (old,) = parse("status_preamble.txt")
    assert old.external_id == "u-0"
    assert parse("status_empty.json") == []


@pytest.mark.parametrize(("name", "code", "message"), [
    ("error_not_authenticated.json", 1, "tnr status failed (exit 1): not authenticated. Please run 'tnr login' first"),
    ("error_not_authenticated.json", 0, "tnr reported an error: not authenticated"),
    ("status_table.txt", 0, "tnr printed something that is not JSON: 'ID  UUID"),
    ("bad_element.json", 0, "tnr's instance 1 is not an object"),
    ("no_ids.json", 0, "tnr's instance 0 has neither a uuid nor an id"),
    ("duplicate.json", 0, "tnr listed the same instance twice"),
    ("nan.json", 0, "tnr printed malformed JSON: NaN is not a JSON number"),
    ("truncated.json", 0, "tnr printed malformed JSON"),
    ("object_not_map.json", 0, "tnr printed an object that is not a map of instances"),
])
def test_doubtful_answers_are_one_error(name: str, code: int, message: str) -> None:
    with pytest.raises(ThunderOutputError) as err:
        parse(name, code)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_nothing_non_utf8_or_oversized_is_read() -> None:
    for stdout, message in ((b"", "tnr printed nothing"), (b"\xff\xfe[]", "not UTF-8"),
                            (b"[" + b" " * (9 * 1024 * 1024) + b"]", "more than 8 MiB")):
        with pytest.raises(ThunderOutputError, match=message):
            parse_status(0, stdout, b"")
    with pytest.raises(ThunderOutputError, match=r"exit 2\): no message"):
        parse_status(2, b"", b"")
    progress_then_error = b"Fetching instances...\nError: not authenticated. Please run 'tnr login' first\n"
    with pytest.raises(ThunderOutputError, match=r"exit 1\): Error: not authenticated"):
        parse_status(1, b"", progress_then_error)


def test_sync_plan_adds_refreshes_marks_gone_and_purges() -> None:
    a, b = parse("status_two.json")

    def row(rid: int, ext: str, status: str, gone_at: str | None = None) -> external.ExternalRow:
        return external.ExternalRow(row_id=rid, provider="thunder", external_id=ext, short_id=None,
                                    resource_type="instance", name=ext, status=status, gpu_type=None, gpu_count=None,
                                    endpoint=None, cleanup_cmd=None, metadata={}, first_seen="x", last_seen="x",
                                    gone_at=gone_at)

    rows = [row(1, a.external_id, "STOPPED"), row(2, "vanished", "RUNNING"),
            row(3, "long-gone", "GONE", "2026-11-01T00:00:00.000000+00:00"),
            row(4, b.external_id, "GONE", "2026-11-28T00:00:00.000000+00:00")]
    now = 1795910400.0  # 2026-11-29T00:00:00Z
    plan = external.plan_sync(rows, [a, b], now)
    assert [r.external_id for r, _ in plan.status_changes] == [a.external_id]
    assert [r.external_id for r in plan.gone] == ["vanished"]
    assert [r.external_id for r in plan.purged] == ["long-gone"]
    assert [r.external_id for r, _ in plan.returned] == [b.external_id]
    assert plan.added == []
