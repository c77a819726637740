"""Session leases: who owns a session (a process, by PID and start time), what repo it holds, whether it is open.

Every change is one ``BEGIN IMMEDIATE`` transaction with its audit event. Only the lease's owner (its owner process
or a descendant of it, as the same user) or root may heartbeat or close a lease; anything else is refused with the
reason. A lease's repo is a claim like any other: the guard, ``check`` and ``register`` decide it with the same
``decide_claims``, so a lease blocks other sessions' work in that repo and every path inside it, while its own
session passes. A closed lease, or one whose owner is gone, holds nothing.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from fleet_watch import clock as clocks
from fleet_watch.core import external, inputs
from fleet_watch.core.liveness import same_start
from fleet_watch.errors import Conflict, Forbidden, NotFound, UsageError
from fleet_watch.models import Lease
from fleet_watch.probes.processes import death_reason, is_descendant, process_facts
from fleet_watch.service.fleet import ClaimRequest, Fleet, decide_claims, resolve_repo
from fleet_watch.service.ledger import Ledger
from fleet_watch.store import external as external_store
from fleet_watch.store import leases as store


class Caller(NamedTuple):
    """Who is asking: this process, its user. Passed in so that tests and the hooks can name the caller."""

    pid: int
    uid: int

    @classmethod
    def current(cls) -> Caller:
        return cls(os.getpid(), os.geteuid())


def lease_view(lease: Lease, *, owner_alive: bool | None) -> dict[str, Any]:
    return {"session_id": lease.session_id, "owner_pid": lease.owner_pid, "owner_start_time": lease.owner_start_time,
            "owner_uid": lease.owner_uid, "owner_alive": owner_alive, "repo_dir": lease.repo,
            "started_at": lease.started_at, "last_heartbeat": lease.last_heartbeat, "closed_at": lease.closed_at,
            "status": "CLOSED" if lease.is_closed else ("ACTIVE" if owner_alive is not False else "OWNER_GONE")}


def owner_alive(lease: Lease) -> bool | None:
    if lease.owner_pid is None or lease.owner_start_time is None:
        return None
    return death_reason(lease.owner_pid, lease.owner_start_time) is None


def _session(session_id: str | None) -> str:
    if not session_id:
        raise UsageError("a session id is needed: --session-id, $FLEET_SESSION_ID, or the agent's own session")
    return inputs.text("session id", session_id)


def _owner(owner_pid: int | None) -> tuple[int, float, int | None]:
    """The owner process (default: whoever ran this command, i.e. the agent or shell), identified now."""
    pid = inputs.pid(owner_pid, "--owner-pid") if owner_pid is not None else os.getppid()
    facts = process_facts(pid)
    if facts is None or facts.is_zombie:
        raise NotFound(f"owner PID {pid} is not a running process")
    return pid, facts.start_time, facts.uid


def authorize(lease: Lease, caller: Caller, action: str) -> None:
    """Only root, or the lease's owner process (or a descendant of it) running as the owner's user."""
    if caller.uid == 0:
        return
    if lease.owner_uid is not None and caller.uid != lease.owner_uid:
        raise Forbidden(f"cannot {action} session {lease.session_id}: it belongs to uid {lease.owner_uid}, "
                        f"not uid {caller.uid}")
    if lease.owner_pid is None:
        return  # no owner process was named: the owner's user is the owner
    alive = owner_alive(lease)
    if alive is False:
        if action == "close":
            return  # its owner is gone: the owner's user may close what is left
        raise Forbidden(f"cannot {action} session {lease.session_id}: its owner PID {lease.owner_pid} is gone "
                        "(start the session again)")
    if caller.pid != lease.owner_pid and not is_descendant(caller.pid, lease.owner_pid):
        raise Forbidden(f"cannot {action} session {lease.session_id}: only its owner PID {lease.owner_pid} and "
                        "the processes it started may")


def start(fleet: Fleet, session_id: str | None, *, owner_pid: int | None = None, repo: str | None = None,
          source: str = "start") -> dict[str, Any]:
    """Open the lease (or reopen a closed one, or refresh an open one that this caller owns), holding ``repo``."""
    sid = _session(session_id)
    repo_dir = resolve_repo(repo) if repo is not None else None
    pid, start_time, uid = _owner(owner_pid)
    at = clocks.iso_utc(fleet.clock.now())
    conflict: Conflict | None = None
    with fleet.writing() as conn:
        lease = store.get(conn, sid)
        if lease is not None and not lease.is_closed and owner_alive(lease) is not False:
            authorize(lease, Caller.current(), "take over")
        ledger = Ledger.read(conn, fleet.clock.now())
        if lease is not None:  # an open lease whose owner is gone holds nothing: drop_dead closes it below, so
            for claim in ledger.claims:  # that reopening cannot hand back a repo another session took meanwhile
                if claim.holder.key == ("lease", lease.lease_id):
                    ledger.death(claim.holder)
        if repo_dir is not None:
            exclude = ("lease", lease.lease_id) if lease is not None else None
            (resource, check), = decide_claims(fleet, ledger, ClaimRequest(repos=(repo_dir,), session_id=sid),
                                               os_listeners={}, suggestions=lambda p: [], exclude=exclude)
            if not check["allowed"]:
                fleet.event(conn, "CONFLICT", pid, sid, {"resource": resource, "reason": check["reason"],
                                                         "session_id": sid, "source": f"session {source}"})
                conflict = Conflict(check["reason"], resource=resource, holder=check["holder"])
        fleet.drop_dead(conn, ledger)
        if conflict is None:
            if lease is None:
                lease_id = store.insert(conn, session_id=sid, owner_pid=pid, owner_start_time=start_time,
                                        owner_uid=uid, at=at)
            else:
                lease_id = lease.lease_id
                store.reopen(conn, lease_id, owner_pid=pid, owner_start_time=start_time, owner_uid=uid, at=at)
            if repo_dir is not None or lease is None:
                store.set_repo(conn, lease_id, repo_dir, at)
            fleet.event(conn, "SESSION_START", pid, sid, {"session_id": sid, "repo_dir": repo_dir, "source": source,
                                                          "owner_start_time": start_time,
                                                          "reopened": lease is not None})
            current = store.get(conn, sid)
    if conflict is not None:
        raise conflict
    assert current is not None
    return lease_view(current, owner_alive=True)


def ensure(fleet: Fleet, session_id: str | None, *, owner_pid: int | None = None,
           repo: str | None = None) -> dict[str, Any]:
    """Idempotent: the same call twice (or from two processes at once) leaves one open lease, owned as asked."""
    return start(fleet, session_id, owner_pid=owner_pid, repo=repo, source="ensure")


def heartbeat(fleet: Fleet, session_id: str | None, *, caller: Caller | None = None) -> dict[str, Any]:
    sid = _session(session_id)
    at = clocks.iso_utc(fleet.clock.now())
    with fleet.writing() as conn:
        lease = store.get(conn, sid)
        if lease is None:
            raise NotFound(f"session {sid} has no lease: start it with `fleet session start`")
        if lease.is_closed:
            raise NotFound(f"session {sid} was closed at {lease.closed_at}: start it again")
        authorize(lease, caller or Caller.current(), "heartbeat")
        store.touch(conn, lease.lease_id, at)
        fleet.event(conn, "SESSION_HEARTBEAT", lease.owner_pid, sid, {"session_id": sid})
        current = store.get(conn, sid)
    assert current is not None
    return lease_view(current, owner_alive=owner_alive(current))


def close(fleet: Fleet, session_id: str | None, *, caller: Caller | None = None) -> dict[str, Any]:
    """Close the lease: its repo, the session's reservations and its live external claims (a Thunder instance and
    the repo it locks) are released in the same transaction, logged in the one ``SESSION_CLOSE`` event."""
    sid = _session(session_id)
    with fleet.writing() as conn:
        lease = store.get(conn, sid)
        if lease is None:
            raise NotFound(f"session {sid} has no lease")
        authorize(lease, caller or Caller.current(), "close")
        released = _close(fleet, conn, lease)
        current = store.get(conn, sid)
    assert current is not None
    return {**lease_view(current, owner_alive=owner_alive(current)), **released}


def _close(fleet: Fleet, conn: Any, lease: Lease, reason: str | None = None) -> dict[str, list[Any]]:
    """Inside the caller's write transaction: release what the session holds and close its lease, in one
    ``SESSION_CLOSE`` event. Returns what was released."""
    now = fleet.clock.now()
    sid = lease.session_id
    reservations = [r.reservation_id for r in store.reservations(conn, sid)]
    for res_id in reservations:
        store.delete_reservation(conn, res_id)
    remote = [row for row in external_store.claimed_by(conn, sid) if external.claim_live(row, now)]
    for row in remote:
        external_store.clear_claim(conn, row.row_id)
    store.close(conn, lease.lease_id, clocks.iso_utc(now))
    released: dict[str, list[Any]] = {"reservations_released": reservations,
                                      "external_released": [row.label for row in remote]}
    detail: dict[str, Any] = {"session_id": sid, "repo_dir": lease.repo, **released, "was_closed": lease.is_closed}
    if reason is not None:
        detail["reason"] = reason
    fleet.event(conn, "SESSION_CLOSE", lease.owner_pid, sid, detail)
    return released


def close_superseded(fleet: Fleet, session_id: str | None, *, owner_pid: int | None) -> list[str]:
    """The agent process ``owner_pid`` now runs ``session_id``: close its other open leases (one agent process runs
    one session at a time; Codex has no SessionEnd, and a `/clear` or a failed SessionEnd hook would otherwise
    leave the old session holding the agent's own repo). Returns the sessions closed."""
    sid = _session(session_id)
    if owner_pid is None:
        return []
    facts = process_facts(owner_pid)
    if facts is None:
        return []
    closed: list[str] = []
    with fleet.writing() as conn:
        for lease in store.list_all(conn):
            if (lease.session_id != sid and not lease.is_closed and lease.owner_pid == owner_pid
                    and same_start(lease.owner_start_time, facts.start_time)):
                _close(fleet, conn, lease, reason=f"superseded by session {sid} of the same agent process")
                closed.append(lease.session_id)
    return closed


def list_leases(fleet: Fleet) -> list[dict[str, Any]]:
    with fleet.reading() as conn:
        found = store.list_all(conn)
    return [lease_view(lease, owner_alive=owner_alive(lease)) for lease in found]
