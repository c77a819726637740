"""``fleet preempt``: a strictly higher priority takes a port from its registered holder.

The holder is stopped with escalation (SIGTERM, ``grace_s``, SIGKILL) through the one signal path; the port moves
only once the holder is gone *and* nothing listens on the port any more (a child that inherited the socket keeps it
busy): then it is reserved for the preempting session (``hand_over``), the dead holder's row is removed, and one
``PREEMPT`` event records the evidence. A holder that survives, or a port that stays busy, moves nothing (exit 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_watch.core import inputs, liveness, safety
from fleet_watch.errors import UsageError
from fleet_watch.probes import ports as port_probe
from fleet_watch.probes.processes import death_reason, is_descendant
from fleet_watch.service.acting import Rights, stop_owned
from fleet_watch.service.fleet import Fleet
from fleet_watch.store import registry

PORT_FREE_WAIT_S = 5.0  # after the holder is gone: how long the port may take to close (bounded polling)
PORT_POLL_S = 0.05
RESERVATION_TTL_S = 300.0  # the preempting session's reservation of the port, until its own register takes it over
MAX_GRACE_S = 3600.0

# (fleet, port, session id, ttl) -> what the reservation says about itself (JSON-ready)
HandOver = Callable[[Fleet, int, str, float], dict[str, Any]]


def reserve_port(fleet: Fleet, port: int, session_id: str, ttl_s: float) -> dict[str, Any]:
    """The port, reserved for the preempting session through the reservations' own function (``fleet claim``'s),
    ``fleet_watch.service.claims.reserve``. It takes over a port whose holder is dead, as ``register`` does (the
    ledger's rule: a dead holder holds nothing; its row is dropped in the same transaction)."""
    from fleet_watch.service.claims import reserve

    reservation = reserve(fleet, ports=[port], session_id=session_id, ttl_s=max(1, round(ttl_s)))
    return {"reservation_id": reservation.reservation_id, "session_id": reservation.session_id,
            "ports": list(reservation.ports), "expires_at": reservation.expires_at}


@dataclass(slots=True)
class PreemptResult:
    port: int
    priority: int
    reason: str
    session_id: str
    outcome: str  # preempted | free | denied | failed | port_busy
    message: str
    holder: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None
    reservation: dict[str, Any] | None = None
    listener: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.outcome in ("preempted", "free")

    def to_dict(self) -> dict[str, Any]:
        return {"preempted": self.outcome == "preempted", "outcome": self.outcome, "port": self.port,
                "priority": self.priority, "reason": self.reason, "session_id": self.session_id,
                "holder": self.holder, "stop": self.stop, "reservation": self.reservation,
                "listener": self.listener, "message": self.message}


def _wait_port_free(port: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:  # bounded
        if port_probe.port_in_use(port) is False:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(PORT_POLL_S)


def preempt(fleet: Fleet, *, port: int, priority: int, reason: str, grace_s: float, session_id: str | None,
            who: Rights, hand_over: HandOver = reserve_port, port_wait_s: float = PORT_FREE_WAIT_S) -> PreemptResult:
    inputs.port(port)
    inputs.priority(priority)
    inputs.text("--reason", reason, max_len=1000)
    inputs.finite(grace_s, "--grace", high=MAX_GRACE_S)
    if session_id is None:
        raise UsageError("preempt hands the port to a session: pass --session-id or set $FLEET_SESSION_ID")
    inputs.text("--session-id", session_id)

    def done(outcome: str, message: str, **kw: Any) -> PreemptResult:
        return PreemptResult(port, priority, reason, session_id, outcome, message, **kw)

    claim = fleet.ledger().port_claim(port)
    if claim is None:
        if port_probe.port_in_use(port):
            listener = port_probe.find_listener(port)
            who_text = f"PID {listener['pid']}" if listener and listener.get("pid") else "a process"
            return done("denied", f"port {port} is in use by {who_text} that Fleet Watch did not register: "
                                  "not Fleet Watch's to stop", listener=listener)
        return done("free", f"port {port} is already free",
                    reservation=hand_over(fleet, port, session_id, RESERVATION_TTL_S))
    holder = claim.holder
    view = {"kind": holder.kind, "pid": holder.pid, "start_time": holder.start_time, "name": holder.name,
            "workstream": holder.workstream, "session_id": holder.session_id, "priority": holder.priority}
    if holder.kind != "process" or holder.pid is None or holder.start_time is None:
        return done("denied", f"port {port} is held by {holder.describe()}, which has no process to stop; "
                              "it is released by its session (fleet release --claim) or its expiry", holder=view)
    refused = safety.may_preempt(priority, holder.priority)
    if refused is not None:
        return done("denied", refused, holder=view)
    if port_probe.port_in_use(port):  # who really listens: stopping the holder must be what frees the port
        listener = port_probe.find_listener(port)
        owner = listener.get("pid") if listener else None
        if owner is None or (owner != holder.pid and not is_descendant(owner, holder.pid)):
            who_text = f"PID {owner}" if owner is not None else "a process this user cannot see"
            return done("denied", f"port {port} is claimed by PID {holder.pid} ({holder.name}) but in use by "
                                  f"{who_text}, which Fleet Watch did not register: stopping PID {holder.pid} would "
                                  "not free it; nothing was signalled", holder=view, listener=listener)

    with fleet.reading() as conn:
        row = registry.record_by_id(conn, holder.record_id)
    proof = safety.ownership_proof(holder.pid, holder.start_time,
                                   registered_start=row.start_time if row is not None else None, agent_session=None)
    stopped = stop_owned(holder.pid, holder.start_time, proof, who, grace_s=grace_s)
    outcome, message = "failed", stopped.reason
    busy_listener: dict[str, Any] | None = None
    reservation: dict[str, Any] | None = None
    if stopped.gone:
        if not _wait_port_free(port, port_wait_s):
            listener = port_probe.find_listener(port)
            busy_listener = listener
            outcome = "port_busy"
            message = (f"PID {holder.pid} is gone but port {port} is still in use"
                       f"{' by PID ' + str(listener['pid']) if listener and listener.get('pid') else ''}; "
                       "the claim was not moved")
        else:
            reservation = hand_over(fleet, port, session_id, RESERVATION_TTL_S)
            outcome, message = "preempted", f"preempted PID {holder.pid} ({holder.name}) for: {reason}"
    with fleet.writing() as conn:
        current = registry.record_by_id(conn, holder.record_id)
        if (outcome == "preempted" and current is not None
                and liveness.same_start(current.start_time, holder.start_time)
                and death_reason(holder.pid, holder.start_time) is not None):
            registry.delete_process(conn, holder.record_id)  # the dead holder's other claims go with it
        fleet.event(conn, "PREEMPT", holder.pid, holder.workstream, {
            "port": port, "holder_pid": holder.pid, "holder_start_time": holder.start_time, "holder_name": holder.name,
            "holder_priority": holder.priority, "new_priority": priority, "reason": reason, "grace_seconds": grace_s,
            "session_id": session_id, "signals": list(stopped.signals), "outcome": outcome,
            "detail": stopped.reason, "reservation": reservation,
        })
    return done(outcome, message, holder=view, stop=stopped.to_dict(), reservation=reservation,
                listener=busy_listener)
