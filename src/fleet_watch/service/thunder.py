"""``fleet thunder sync|claim|heartbeat|release``: Thunder Compute instances as external resources.

``sync`` replaces what is known with what ``tnr --json status`` reports (new instances added, vanished ones marked
gone and dropped a day later); a missing or failing ``tnr`` or a doubtful answer changes nothing. ``claim`` attaches
an owner session (and optionally a repo lock) to a known instance; the claim lives ``thunder_claim_ttl_s`` seconds
(default 600) past its last claim or heartbeat. Sync never renews a claim. Every change is one transaction with its
audit event.

Config keys read here (validated; a wrong type is a ``ConfigError`` naming the key): ``thunder_tnr_timeout_s``
(default 10) and ``thunder_claim_ttl_s`` (default 600).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from fleet_watch import clock as clocks
from fleet_watch.config import Settings
from fleet_watch.core import external as core
from fleet_watch.core import guard, inputs
from fleet_watch.core.thunder import PROVIDER, ThunderOutputError, parse_status
from fleet_watch.errors import Conflict, NotFound, ToolFailed, UsageError
from fleet_watch.service.fleet import Fleet, resolve_repo
from fleet_watch.service.ledger import Ledger
from fleet_watch.store import audit
from fleet_watch.store import external as store


def tnr_timeout_s(settings: Settings) -> float:
    return settings.thunder_tnr_timeout_s


def claim_ttl_s(settings: Settings) -> int:
    return settings.thunder_claim_ttl_s


def _ident(value: str) -> str:
    if not value or not value.strip() or len(value) > 200 or not value.isprintable():
        raise UsageError("--id must be a Thunder instance id or uuid (printable, at most 200 characters)")
    return value.strip()


def _session(value: str | None, flag: str = "--session-id") -> str | None:
    """The same rule as every other command's session ids and workstreams (``core.inputs.text``): a session id
    is compared as given, so `fleet session` and `fleet thunder` name the same session."""
    return None if value is None else inputs.text(flag, value)


@dataclass(slots=True)
class SyncResult:
    count: int = 0
    added: list[dict[str, Any]] = field(default_factory=list)
    gone: list[dict[str, Any]] = field(default_factory=list)
    returned: list[dict[str, Any]] = field(default_factory=list)
    status_changes: list[dict[str, Any]] = field(default_factory=list)
    purged: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"provider": PROVIDER, "count": self.count, "added": self.added, "gone": self.gone,
                "returned": self.returned, "status_changes": self.status_changes, "purged": self.purged,
                "resources": self.resources}


def sync(fleet: Fleet) -> SyncResult:
    """Ask ``tnr`` and apply its list in one transaction (one ``EXTERNAL_SYNC`` event when anything changed)."""
    from fleet_watch.probes.tnr import run_status

    run = run_status(tnr_timeout_s(fleet.settings))
    try:
        instances = parse_status(run.returncode, run.stdout, run.stderr)
    except ThunderOutputError as err:
        raise ToolFailed(f"{err}; nothing was changed") from err
    now = fleet.clock.now()
    at = clocks.iso_utc(now)
    result = SyncResult(count=len(instances))
    with fleet.writing() as conn:
        plan = core.plan_sync(store.list_rows(conn, PROVIDER), instances, now)
        for inst in plan.added:
            store.insert(conn, PROVIDER, inst, at)
        for row, inst in plan.refreshed:
            store.refresh(conn, row.row_id, inst, at)
        store.mark_gone(conn, [r.row_id for r in plan.gone], at)
        store.delete(conn, [r.row_id for r in plan.purged])
        result.added = [{"external_id": i.external_id, "id": i.short_id, "name": i.name, "status": i.status}
                        for i in plan.added]
        result.gone = [{"external_id": r.external_id, "id": r.short_id, "name": r.name, "last_status": r.status,
                        "released_session": r.session_id if core.claim_live(r, now) else None} for r in plan.gone]
        result.returned = [{"external_id": i.external_id, "id": i.short_id, "name": i.name, "status": i.status}
                           for _, i in plan.returned]
        result.status_changes = [{"external_id": r.external_id, "id": r.short_id, "old_status": r.status,
                                  "new_status": i.status} for r, i in plan.status_changes]
        result.purged = [{"external_id": r.external_id, "id": r.short_id, "name": r.name} for r in plan.purged]
        if plan.changed:
            audit.append(conn, timestamp=at, event_type="EXTERNAL_SYNC", pid=None, workstream=None, detail={
                "provider": PROVIDER, "count": len(instances), "added": result.added, "gone": result.gone,
                "returned": result.returned, "status_changes": result.status_changes, "purged": result.purged})
        result.resources = [core.resource_view(r, now) for r in store.present_rows(conn) if r.provider == PROVIDER]
    return result


def _known(conn: Any, ident: str) -> core.ExternalRow:
    row = store.find(conn, PROVIDER, ident)
    if row is None:
        raise NotFound(f"Thunder instance {ident} is not known here: run `fleet thunder sync` first")
    if row.gone:
        raise NotFound(f"Thunder instance {ident} is gone (tnr no longer reports it since {row.gone_at})")
    return row


def _conflict(fleet: Fleet, conn: sqlite3.Connection, row: core.ExternalRow, resource: str, reason: str,
              holder: dict[str, Any] | None, session_id: str | None) -> Conflict:
    audit.append(conn, timestamp=clocks.iso_utc(fleet.clock.now()), event_type="CONFLICT", pid=None,
                 workstream=None, detail={"provider": PROVIDER, "external_id": row.external_id, "resource": resource,
                                          "reason": reason, "session_id": session_id, "holder": holder})
    return Conflict(reason, resource=resource, holder=holder)


def _not_yours(fleet: Fleet, conn: sqlite3.Connection, row: core.ExternalRow, session: str | None) -> Conflict | None:
    """Heartbeat and release name a session: another session's claim is a conflict (logged); no session named,
    or the claiming one, acts."""
    if session is None or session == row.session_id:
        return None
    return _conflict(fleet, conn, row, "instance", f"{row.label} is claimed by session {row.session_id}, not {session}",
                     {"kind": "external", "session_id": row.session_id}, session)


def _repo_conflict(conn: sqlite3.Connection, row: core.ExternalRow, repo_dir: str, session_id: str, now: float
                   ) -> tuple[str, dict[str, Any]] | None:
    """Another session's live lock on this repo (a process's, or another external claim's): the guard's own repo
    decision (``core.guard.check_repo``) over the same ledger, this instance's own lock left out."""
    ledger = Ledger.read(conn, now)
    others = [lock for lock in ledger.external_locks if lock.external_id != row.external_id]
    check = guard.check_repo(repo_dir, locks=ledger.repo_locks(repo_dir), session_id=session_id,
                             claims_of=ledger.claims_of, external=others)
    return None if check["allowed"] else (check["reason"], check["holder"])


def claim(fleet: Fleet, ident: str, *, session_id: str, repo: str | None = None,
          workstream: str | None = None) -> dict[str, Any]:
    ident = _ident(ident)
    session = _session(session_id)
    if session is None:
        raise UsageError("--session-id is required")
    repo_dir = resolve_repo(repo) if repo is not None else None
    workstream = _session(workstream, "--workstream") or "thunder"
    ttl = claim_ttl_s(fleet.settings)
    now = fleet.clock.now()
    at, expires = clocks.iso_utc(now), clocks.iso_utc(now + ttl)
    refused: Conflict | None = None
    with fleet.writing() as conn:
        row = _known(conn, ident)
        if core.claim_live(row, now) and row.session_id != session:
            refused = _conflict(fleet, conn, row, "instance",
                                f"{row.label} is claimed by session {row.session_id} until {row.claim_expires_at}",
                                {"kind": "external", "session_id": row.session_id}, session)
        elif repo_dir is not None and (found := _repo_conflict(conn, row, repo_dir, session, now)) is not None:
            refused = _conflict(fleet, conn, row, "repo", found[0], found[1], session)
        else:
            renewing = core.claim_live(row, now)
            store.set_claim(conn, row.row_id, session_id=session, workstream=workstream,
                            repo_dir=repo_dir, claimed_at=row.claimed_at if renewing and row.claimed_at else at,
                            heartbeat_at=at, expires_at=expires)
            audit.append(conn, timestamp=at, event_type="EXTERNAL_CLAIM", pid=None,
                         workstream=workstream, detail={
                             "provider": PROVIDER, "external_id": row.external_id, "id": row.short_id,
                             "name": row.name, "session_id": session, "repo_dir": repo_dir, "expires_at": expires,
                             "ttl_s": ttl})
            updated = store.find(conn, PROVIDER, row.external_id)
    if refused is not None:
        raise refused
    assert updated is not None
    return core.resource_view(updated, now)


def heartbeat(fleet: Fleet, ident: str, *, session_id: str | None = None) -> dict[str, Any]:
    ident = _ident(ident)
    session = _session(session_id)
    ttl = claim_ttl_s(fleet.settings)
    now = fleet.clock.now()
    at, expires = clocks.iso_utc(now), clocks.iso_utc(now + ttl)
    refused: Conflict | None = None
    with fleet.writing() as conn:
        row = _known(conn, ident)
        state = core.claim_state(row, now)
        if state == "unclaimed":
            raise NotFound(f"{row.label} is not claimed: `fleet thunder claim` it first")
        if state == "expired":
            raise NotFound(f"the claim on {row.label} expired at {row.claim_expires_at}: claim it again")
        refused = _not_yours(fleet, conn, row, session)
        if refused is None:
            store.touch_claim(conn, row.row_id, heartbeat_at=at, expires_at=expires)
            audit.append(conn, timestamp=at, event_type="EXTERNAL_HEARTBEAT", pid=None,
                         workstream=row.workstream, detail={"provider": PROVIDER, "external_id": row.external_id,
                                                            "session_id": row.session_id, "expires_at": expires})
            updated = store.find(conn, PROVIDER, row.external_id)
    if refused is not None:
        raise refused
    assert updated is not None
    return core.resource_view(updated, now)


def release(fleet: Fleet, ident: str, *, session_id: str | None = None) -> dict[str, Any]:
    """Drop the claim (and the row of an instance that is already gone). The instance itself is Thunder's."""
    ident = _ident(ident)
    session = _session(session_id)
    now = fleet.clock.now()
    at = clocks.iso_utc(now)
    refused: Conflict | None = None
    with fleet.writing() as conn:
        row = store.find(conn, PROVIDER, ident)
        if row is None:
            raise NotFound(f"Thunder instance {ident} is not known here")
        if row.session_id is None and not row.gone:
            raise NotFound(f"{row.label} is not claimed: nothing to release")
        if not row.gone and not core.claim_live(row, now):  # as heartbeat says: an expired claim holds nothing
            raise NotFound(f"the claim on {row.label} expired at {row.claim_expires_at}: nothing to release")
        refused = _not_yours(fleet, conn, row, session) if core.claim_live(row, now) else None
        if refused is None:
            if row.gone:
                store.delete(conn, [row.row_id])
            else:
                store.clear_claim(conn, row.row_id)
            audit.append(conn, timestamp=at, event_type="EXTERNAL_RELEASE", pid=None,
                         workstream=row.workstream, detail={
                             "provider": PROVIDER, "external_id": row.external_id, "name": row.name,
                             "session_id": row.session_id, "repo_dir": row.repo_dir, "removed": row.gone})
    if refused is not None:
        raise refused
    return {"provider": PROVIDER, "external_id": row.external_id, "id": row.short_id, "name": row.name,
            "released": True, "removed": row.gone, "session_id": row.session_id}

