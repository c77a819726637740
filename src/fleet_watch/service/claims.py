"""Reservations (``fleet claim``): ports, repos and GPU memory held before a process exists.

A reservation is decided by ``decide_claims``, exactly like the guard's verdict and ``register``'s grant, inside
one ``BEGIN IMMEDIATE`` transaction, and the port index is one over every kind of holder: two agents asking for the
same free port cannot both proceed. It lives until its TTL expires, ``fleet release --claim ID``, its session's
close, or its session's first ``register`` naming the same resource (which takes it over in place).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fleet_watch import clock as clocks
from fleet_watch.core import guard, inputs
from fleet_watch.errors import Conflict, Forbidden, NotFound, UsageError
from fleet_watch.models import GPU_POOL, Reservation
from fleet_watch.probes import ports as port_probe
from fleet_watch.service.fleet import ClaimRequest, Fleet, decide_claims, resolve_repo
from fleet_watch.service.ledger import Ledger
from fleet_watch.store import leases as store
from fleet_watch.store import registry

DEFAULT_TTL_S = 600
MAX_TTL_S = 7 * 24 * 3600
AUTO_PORT_TRIES = 200


def reservation_view(res: Reservation, now: float) -> dict[str, Any]:
    return {"claim_id": res.reservation_id, "session_id": res.session_id, "uid": res.uid,
            "created_at": res.created_at, "expires_at": clocks.iso_utc(res.expires_at),
            "expires_in_s": max(0, round(res.expires_at - now, 1)), "ports": list(res.ports),
            "repos": list(res.repos), "gpu": [{"device": d, "mb": mb} for d, mb in res.gpu]}


def _auto_port(fleet: Fleet, ledger: Ledger) -> int:
    """A port that no one claims and that really binds now, best first (the preferred list, then a scan)."""
    occupied = set(ledger.occupied_ports())
    for port in guard.candidate_ports(fleet.settings.preferred_ports, None, occupied):
        if port_probe.port_in_use(port) is False:
            return port
    raise Conflict("no free port found among the preferred ports and the scan range", resource="port")


def reserve(fleet: Fleet, *, ports: Sequence[int] = (), auto_port: bool = False, repos: Sequence[str] = (),
            gpu_mb: int = 0, gpu_device: int | None = None, ttl_s: int = DEFAULT_TTL_S,
            session_id: str | None) -> Reservation:
    """Reserve the resources atomically, all or nothing; a refusal names the holder and is logged (CONFLICT)."""
    if not session_id:
        raise UsageError("a reservation needs a session: --session-id, $FLEET_SESSION_ID, or the agent's own")
    inputs.text("session id", session_id)
    for p in ports:
        inputs.port(p)
    inputs.non_negative(gpu_mb, "GPU MB")
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise UsageError(f"--ttl must be from 1 to {MAX_TTL_S} seconds, got {ttl_s}")
    if not (ports or auto_port or repos or gpu_mb):
        raise UsageError("claim at least one resource: --port N|auto, --repo PATH or --gpu MB")
    device = fleet.device_key(gpu_device)
    repo_dirs = tuple(dict.fromkeys(resolve_repo(r) for r in repos))
    now = fleet.clock.now()
    at = clocks.iso_utc(now)
    conflict: Conflict | None = None
    with fleet.writing() as conn:
        ledger = Ledger.read(conn, now)
        wanted = list(dict.fromkeys(ports))
        if auto_port:
            wanted.append(_auto_port(fleet, ledger))
        listeners = {p: (port_probe.find_listener(p) or {}) if port_probe.port_in_use(p) else None for p in wanted}
        req = ClaimRequest(ports=tuple(wanted), repos=repo_dirs, gpu_mb=gpu_mb, device=device, session_id=session_id)
        checks = decide_claims(fleet, ledger, req, os_listeners=listeners,
                               suggestions=lambda p: fleet.free_ports(p, set(ledger.occupied_ports())))
        fleet.drop_dead(conn, ledger)
        denied = next(((res, c) for res, c in checks if not c["allowed"]), None)
        if denied is not None:
            resource, check = denied
            fleet.event(conn, "CONFLICT", None, session_id, {"resource": resource, "reason": check["reason"],
                                                             "session_id": session_id, "source": "claim"})
            conflict = Conflict(check["reason"], resource=resource, holder=check.get("holder"))
        else:
            res_id = store.insert_reservation(conn, session_id=session_id, uid=os.geteuid(), at=at,
                                              expires_at=now + ttl_s)
            for port in wanted:
                registry.add_claim(conn, res_id, "port", str(port), 0, at, holder_kind="reservation")
            for repo_dir in repo_dirs:
                registry.add_claim(conn, res_id, "repo", repo_dir, 0, at, holder_kind="reservation")
            if gpu_mb:
                registry.add_claim(conn, res_id, "gpu", device or GPU_POOL, gpu_mb, at, holder_kind="reservation")
            fleet.event(conn, "CLAIM", None, session_id, {"claim_id": res_id, "session_id": session_id,
                                                          "ports": wanted, "repos": list(repo_dirs),
                                                          "gpu_mb": gpu_mb, "gpu_device": device, "ttl_s": ttl_s})
            made = store.reservation(conn, res_id)
    if conflict is not None:
        raise conflict
    assert made is not None
    return made


def release(fleet: Fleet, claim_id: int) -> Reservation:
    """Release a reservation: its own user (or root) only."""
    with fleet.writing() as conn:
        res = store.reservation(conn, claim_id)
        if res is None:
            raise NotFound(f"claim {claim_id} does not exist (released, expired and cleaned, or never made)")
        uid = os.geteuid()
        if uid != 0 and res.uid is not None and res.uid != uid:
            raise Forbidden(f"claim {claim_id} belongs to uid {res.uid}, not uid {uid}")
        store.delete_reservation(conn, claim_id)
        fleet.event(conn, "RELEASE", None, res.session_id, {"claim_id": claim_id, "session_id": res.session_id,
                                                             "ports": list(res.ports), "repos": list(res.repos)})
    return res


def list_reservations(fleet: Fleet) -> list[dict[str, Any]]:
    now = fleet.clock.now()
    with fleet.reading() as conn:
        found = store.reservations(conn)
    return [reservation_view(r, now) for r in found if r.expires_at > now]
