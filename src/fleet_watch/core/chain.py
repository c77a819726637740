"""The audit chain's canonical form, its hash, and verification. Pure: events in, verdicts out.

Canonical form (documented in docs/formats.md; changing it changes every hash):
    payload = {"seq", "timestamp", "event_type", "pid", "workstream", "detail", "prev_hash"}
    hash    = "sha256:" + hex(SHA-256(UTF-8(json.dumps(payload, sort_keys=True,
                                                       separators=(",", ":"), ensure_ascii=False))))
The first event's ``prev_hash`` is ``GENESIS``. Every stored field is covered, the sequence number too,
so an edited field, a renumbered event or a deleted one breaks verification at that event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from fleet_watch.models import Event

HASH_PREFIX = "sha256:"
GENESIS = HASH_PREFIX + "0" * 64

EVENT_TYPES = frozenset({
    "REGISTER", "HEARTBEAT", "RELEASE", "STALE", "PREEMPT", "RESTART", "KILL", "THERMAL", "MEMORY_PRESSURE",
    "CONFLICT", "CLEAN", "CLAIM", "SESSION_START", "SESSION_HEARTBEAT", "SESSION_CLOSE", "REAP", "REAP_SESSION",
    "FUSE_TRIPPED", "GPU_BUDGET_DENY", "GPU_MEMORY_PRESSURE", "GPU_WORKING_SET_DENY", "RUNAWAY_DETECTED",
    "RUNAWAY_KILL", "RUNAWAY_KILL_FAILED", "UPDATE", "GPU_OVERCOMMIT",
    # model servers (fleet unload) and external resources (fleet thunder)
    "UNLOAD", "EXTERNAL_SYNC", "EXTERNAL_CLAIM", "EXTERNAL_HEARTBEAT", "EXTERNAL_RELEASE",
})


def canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(
    *, seq: int, timestamp: str, event_type: str, pid: int | None, workstream: str | None,
    detail: dict[str, object], prev_hash: str,
) -> str:
    payload = {
        "seq": seq, "timestamp": timestamp, "event_type": event_type, "pid": pid,
        "workstream": workstream, "detail": detail, "prev_hash": prev_hash,
    }
    import hashlib  # not on the guard path, which never hashes

    return HASH_PREFIX + hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class ChainBreak(NamedTuple):
    """The first event at which the chain stops verifying, and why."""

    seq: int
    reason: str


class ChainReport(NamedTuple):
    valid: bool
    event_count: int  # the events that verify (before the first break)
    first_break: ChainBreak | None


def verify_events(events: Iterable[Event], head: tuple[int, str] | None) -> ChainReport:
    """Walk events in ascending ``seq`` and return the first break.

    ``head`` is the (seq, hash) that the store recorded with the newest append; it catches a chain whose
    tail was cut off, which links alone cannot show.
    """
    expected_prev = GENESIS
    expected_seq = 1
    count = 0
    for ev in events:
        if ev.seq != expected_seq:
            missing = expected_seq if ev.seq > expected_seq else ev.seq
            gap = ChainBreak(missing, f"sequence gap: expected {expected_seq}, found {ev.seq}")
            return ChainReport(False, count, gap)
        if ev.prev_hash != expected_prev:
            return ChainReport(False, count, ChainBreak(ev.seq, "prev_hash does not match the previous event"))
        recomputed = event_hash(
            seq=ev.seq, timestamp=ev.timestamp, event_type=ev.event_type, pid=ev.pid,
            workstream=ev.workstream, detail=ev.detail, prev_hash=ev.prev_hash,
        )
        if recomputed != ev.hash:
            return ChainReport(False, count, ChainBreak(ev.seq, "stored hash does not match the event's fields"))
        expected_prev = ev.hash
        expected_seq += 1
        count += 1
    last_seq = expected_seq - 1
    if head is not None and head != (last_seq, expected_prev):
        if head[0] > last_seq:
            return ChainReport(False, count, ChainBreak(last_seq + 1, f"events {last_seq + 1}..{head[0]} are missing"))
        return ChainReport(False, count, ChainBreak(head[0], "chain head does not match the newest event"))
    if head is None and count:
        return ChainReport(False, count, ChainBreak(1, "chain head record is missing"))
    return ChainReport(True, count, None)
