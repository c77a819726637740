"""External resources (remote GPU instances) and their claims, the pure part: is a claim live at ``now``, what a
sync changes, how a resource and its repo lock are shown. Rows in, verdicts out; no I/O, no clock.

A claim (session, optional repo) lives until its expiry; a heartbeat moves the expiry on by the TTL. An instance
that its provider no longer reports is gone: it holds nothing, and its row is dropped after ``GONE_RETENTION_S``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from fleet_watch.clock import parse_iso
from fleet_watch.core import paths

if TYPE_CHECKING:  # the guard reads rows and locks; only a sync needs tnr's instances
    from fleet_watch.core.thunder import Instance

GONE = "GONE"
GONE_RETENTION_S = 24 * 3600.0


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        return None


class ExternalRow(NamedTuple):
    """One ``external_resources`` row."""

    row_id: int
    provider: str
    external_id: str
    short_id: str | None
    resource_type: str
    name: str
    status: str
    gpu_type: str | None
    gpu_count: int | None
    endpoint: str | None
    cleanup_cmd: str | None
    metadata: dict[str, Any]
    first_seen: str
    last_seen: str
    gone_at: str | None = None
    session_id: str | None = None
    workstream: str | None = None
    repo_dir: str | None = None
    claimed_at: str | None = None
    heartbeat_at: str | None = None
    claim_expires_at: str | None = None

    @property
    def gone(self) -> bool:
        return self.gone_at is not None

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.short_id or self.external_id}"


def claim_live(row: ExternalRow, now: float) -> bool:
    """A claim holds while the instance is present and its expiry is ahead of ``now``."""
    expires = _ts(row.claim_expires_at)
    return row.session_id is not None and not row.gone and expires is not None and now < expires


def claim_state(row: ExternalRow, now: float) -> str:
    """``unclaimed`` | ``claimed`` | ``expired`` (a claim whose heartbeat stopped) | ``gone``."""
    if row.gone:
        return "gone"
    if row.session_id is None:
        return "unclaimed"
    return "claimed" if claim_live(row, now) else "expired"


def purgeable(row: ExternalRow, now: float) -> bool:
    gone = _ts(row.gone_at)
    return gone is not None and now - gone > GONE_RETENTION_S


class SyncPlan:
    """What one provider snapshot changes: rows to add, to refresh, to mark gone, to drop."""

    __slots__ = ("added", "gone", "purged", "refreshed", "returned", "status_changes")

    def __init__(self) -> None:
        self.added: list[Instance] = []
        self.refreshed: list[tuple[ExternalRow, Instance]] = []
        self.gone: list[ExternalRow] = []
        self.purged: list[ExternalRow] = []
        self.status_changes: list[tuple[ExternalRow, Instance]] = []
        self.returned: list[tuple[ExternalRow, Instance]] = []  # gone rows reported again

    @property
    def changed(self) -> bool:
        return bool(self.added or self.gone or self.purged or self.status_changes or self.returned)


def plan_sync(rows: Sequence[ExternalRow], snapshot: Iterable[Instance], now: float) -> SyncPlan:
    """Replace semantics: the snapshot is what the provider has now."""
    plan = SyncPlan()
    by_id = {r.external_id: r for r in rows}
    seen: set[str] = set()
    for inst in snapshot:
        seen.add(inst.external_id)
        row = by_id.get(inst.external_id)
        if row is None:
            plan.added.append(inst)
            continue
        plan.refreshed.append((row, inst))
        if row.gone:
            plan.returned.append((row, inst))
        elif row.status != inst.status:
            plan.status_changes.append((row, inst))
    for row in rows:
        if row.external_id in seen:
            continue
        if not row.gone:
            plan.gone.append(row)
        elif purgeable(row, now):
            plan.purged.append(row)
    return plan


def resource_view(row: ExternalRow, now: float) -> dict[str, Any]:
    """The JSON object of ``state.external_resources`` and ``fleet thunder ... --json``. A claim that is not live
    shows no session or repo: it holds nothing."""
    live = claim_live(row, now)
    return {
        "provider": row.provider, "resource_type": row.resource_type, "external_id": row.external_id,
        "id": row.short_id, "name": row.name, "status": GONE if row.gone else row.status,
        "gpu_type": row.gpu_type, "gpu_count": row.gpu_count, "gpu_mb": 0, "endpoint": row.endpoint,
        "cleanup_cmd": row.cleanup_cmd, "claim": claim_state(row, now),
        "session_id": row.session_id if live else None, "workstream": row.workstream if live else None,
        "repo_dir": row.repo_dir if live else None, "claimed_at": row.claimed_at if live else None,
        "last_heartbeat": row.heartbeat_at if live else None, "claim_expires_at": row.claim_expires_at,
        "first_seen": row.first_seen, "last_seen": row.last_seen, "gone_at": row.gone_at, "metadata": row.metadata,
    }


class ExternalLock(NamedTuple):
    """A repo lock held by a live external claim: for the guard's repo decision and ``locked_repos``."""

    repo_dir: str
    holder: str  # "thunder:0 (trainer), session agent-7"
    expires_at: str
    session_id: str
    provider: str
    external_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"repo_dir": self.repo_dir, "holder": self.holder, "expires_at": self.expires_at,
                "session_id": self.session_id, "provider": self.provider, "external_id": self.external_id}


def repo_locks(rows: Iterable[ExternalRow], now: float) -> list[ExternalLock]:
    out: list[ExternalLock] = []
    for row in rows:
        if row.repo_dir is None or not claim_live(row, now):
            continue
        assert row.session_id is not None
        assert row.claim_expires_at is not None
        out.append(ExternalLock(repo_dir=row.repo_dir, holder=f"{row.label} ({row.name}), session {row.session_id}",
                                expires_at=row.claim_expires_at, session_id=row.session_id, provider=row.provider,
                                external_id=row.external_id))
    return sorted(out, key=lambda lock: (lock.repo_dir, lock.external_id))


def blocking_locks(locks: Iterable[ExternalLock], repo_dir: str, session_id: str | None) -> list[ExternalLock]:
    """External locks that deny ``repo_dir`` to ``session_id``: overlapping (either contains the other), and held by
    another session."""
    return [lock for lock in locks
            if paths.overlaps(lock.repo_dir, repo_dir) and (session_id is None or lock.session_id != session_id)]
