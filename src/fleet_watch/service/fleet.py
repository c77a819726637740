"""The ``Fleet`` facade: open the registry once, then register, release, clean and read.

Every claim-changing operation is a single ``BEGIN IMMEDIATE`` transaction that also appends its audit event, so
concurrent CLI processes can neither double-grant a resource nor fork the chain. Each grant is decided by the same
functions as the guard's verdict (``decide_claims`` over ``core.guard``), over the same ledger read.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from fleet_watch import clock as clocks
from fleet_watch.config import Detected, Settings, ensure_home, load_settings
from fleet_watch.core import guard, inputs, liveness
from fleet_watch.errors import Conflict, NotFound, UsageError
from fleet_watch.models import GPU_POOL, Claim, Event, GpuBudget, ProcessRecord
from fleet_watch.probes import ports as port_probe
from fleet_watch.probes.processes import death_reason, is_descendant, process_facts
from fleet_watch.service.ledger import DeathProbe, Ledger, kernel_death
from fleet_watch.store import leases, registry
from fleet_watch.store.connection import BUSY_TIMEOUT_MS, immediate, open_db, snapshot

if TYPE_CHECKING:
    from fleet_watch.core.chain import ChainReport


def resolve_repo(path: str) -> str:
    """Absolute, with ``~`` expanded and every symlink resolved: one spelling per directory."""
    if not path or "\0" in path:
        raise UsageError("repo path must be a non-empty path")
    if len(path) > inputs.MAX_PATH:
        raise UsageError(f"repo path is {len(path)} characters long; at most {inputs.MAX_PATH}")
    return os.path.realpath(os.path.expanduser(path))


class ClaimRequest(NamedTuple):
    """What a caller wants to hold: any number of ports and repos, and GPU memory on the pool or one device."""

    ports: tuple[int, ...] = ()
    repos: tuple[str, ...] = ()  # resolved
    gpu_mb: int = 0
    device: str | None = None  # None: the single pool
    session_id: str | None = None
    # A register (and the guard, which asks whether one would pass): the session's reservations of what it asks for
    # become the process's claims (``takes_over``), so they do not deny it. A new reservation adds to them.
    takes_over_reservations: bool = False


def takes_over(req: ClaimRequest, claim: Claim) -> bool:
    """Whether granting ``req`` takes ``claim`` over: a reservation of the requesting session, of a port or repo the
    request names, or of GPU memory on the device it claims (the process's claim replaces it). The one rule for
    both the decision (such a claim never denies) and the register that moves or replaces it."""
    h = claim.holder
    if not (req.takes_over_reservations and h.kind == "reservation" and req.session_id is not None
            and h.session_id == req.session_id):
        return False
    if claim.kind == "port":
        return claim.key in {str(p) for p in req.ports}
    if claim.kind == "repo":
        return claim.key in req.repos
    return req.gpu_mb > 0 and claim.key == (req.device or GPU_POOL)


def owned_by(req: ClaimRequest, exclude: tuple[str, int] | None) -> Callable[[Claim], bool]:
    """Claims that are the requester's own and so never deny it: its own holder's (``exclude``, e.g. the process
    adding claims), and the reservations that granting it takes over (``takes_over``)."""
    def own(claim: Claim) -> bool:
        return claim.holder.key == exclude or takes_over(req, claim)
    return own


def decide_claims(
    fleet: Fleet, ledger: Ledger, req: ClaimRequest, *, os_listeners: dict[int, dict[str, Any] | None],
    suggestions: Callable[[int], list[int]], exclude: tuple[str, int] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The one decision for every resource of a request, as ``(resource, check)`` pairs in request order: the
    guard's verdict, ``register``'s grant, ``claim``'s reservation and the agents' hooks all come from here.

    ``os_listeners`` maps each requested port to the OS listener that is *not* the requester (None: nothing else
    listens). Claims that ``owned_by`` the requester never deny it.
    """
    own = owned_by(req, exclude)
    out: list[tuple[str, dict[str, Any]]] = []
    for port in req.ports:
        claim = ledger.port_claim(port)
        if claim is not None and own(claim):
            claim = None
        listener = os_listeners.get(port)
        out.append(("port", guard.check_port(
            port, registered=claim, holder_claims=ledger.claims_of(claim.holder) if claim else (),
            os_in_use=claim is None and listener is not None, os_listener=listener,
            suggested_ports=suggestions(port) if claim is not None or listener is not None else [],
        )))
    for repo_dir in req.repos:
        locks = [c for c in ledger.repo_locks(repo_dir) if not own(c)]
        out.append(("repo", guard.check_repo(repo_dir, locks=locks, session_id=req.session_id,
                                             claims_of=ledger.claims_of, external=ledger.external_locks)))
    if req.gpu_mb > 0:
        pool, device_budget = fleet.budgets(ledger, req.device, exclude=own)
        out.append(("gpu", guard.check_gpu(req.gpu_mb, pool, device=req.device, device_budget=device_budget)))
    return out


class CleanResult:
    __slots__ = ("expired", "removed")

    def __init__(self) -> None:
        self.removed: list[tuple[ProcessRecord, str]] = []
        self.expired: list[ProcessRecord] = []


class Fleet:
    """The registry opened for one command. Use it as a context manager: ``with Fleet.open(home) as fleet:``."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection, clock: clocks.Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._conn = conn

    @classmethod
    def open(
        cls, home: Path, *, clock: clocks.Clock | None = None, detect_total_mb: Callable[[], Detected] | None = None,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> Fleet:
        if detect_total_mb is None:
            detect_total_mb = detect_pool_mb
        ensure_home(home)
        settings = load_settings(home, detect_total_mb)
        return cls(settings, open_db(settings.db_path, busy_timeout_ms), clock or clocks.SystemClock())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read snapshot for a service module's own store calls: several reads, one state, no write lock."""
        with snapshot(self._conn):
            yield self._conn

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: the changes and their audit events land together or not at all."""
        with immediate(self._conn):
            yield self._conn

    def event(self, conn: sqlite3.Connection, event_type: str, pid: int | None, workstream: str | None,
              detail: dict[str, Any]) -> None:
        """Append an audit event inside a ``writing()`` transaction, stamped with this fleet's clock."""
        from fleet_watch.store import audit  # hashing and the chain: writers only, not the guard's path

        audit.append(conn, timestamp=clocks.iso_utc(self.clock.now()), event_type=event_type, pid=pid,
                     workstream=workstream, detail=detail)

    # -- reading ------------------------------------------------------------------------------------------
    def ledger(self, probe: DeathProbe = kernel_death) -> Ledger:
        """One consistent read of every claim and holder (no write lock). ``probe``: how liveness is asked (the
        kernel now, or a process table a discovery cycle just scanned)."""
        with snapshot(self._conn):
            return Ledger.read(self._conn, self.clock.now(), probe)

    def budgets(self, ledger: Ledger, device: str | None, *, exclude: Callable[[Claim], bool] | None = None
                ) -> tuple[GpuBudget, GpuBudget | None]:
        """The single pool's budget and, when a device is named, that device's own (live firm claims only;
        ``exclude`` leaves out the requester's own)."""
        pool = ledger.budget(self.settings.gpu_total_mb, self.settings.gpu_reserve_mb, exclude=exclude)
        if device is None:
            return pool, None
        total, reserve = self.settings.gpu_devices[device]
        return pool, ledger.budget(total, reserve, device, exclude=exclude)

    def device_key(self, gpu_device: int | None) -> str | None:
        """The claim key for ``--gpu-device``: None for the single pool (no device, or one device or none)."""
        if gpu_device is None:
            return None
        if gpu_device < 0:
            raise UsageError(f"GPU device must be >= 0, got {gpu_device}")
        devices = self.settings.gpu_devices
        if not devices:
            if gpu_device == 0:
                return None
            raise UsageError(f"GPU device {gpu_device} is not configured: this machine has a single GPU pool")
        if str(gpu_device) not in devices:
            raise UsageError(f"GPU device {gpu_device} is not configured (devices: {', '.join(sorted(devices))})")
        return str(gpu_device)

    def free_ports(self, requested: int | None, occupied: set[int], count: int = guard.SUGGESTION_COUNT) -> list[int]:
        """Up to ``count`` ports that no one claims and nothing listens on, best first."""
        out: list[int] = []
        for port in guard.candidate_ports(self.settings.preferred_ports, requested, occupied):
            if port_probe.port_in_use(port) is False:
                out.append(port)
                if len(out) == count:
                    break
        return out

    def records(self) -> list[ProcessRecord]:
        with snapshot(self._conn):
            return registry.list_records(self._conn)

    def history(self, *, event_type: str | None, hours: float | None, limit: int) -> list[Event]:
        from fleet_watch.core import chain
        from fleet_watch.store import audit

        if event_type is not None and event_type.upper() not in chain.EVENT_TYPES:
            raise UsageError(f"unknown event type {inputs.quote(event_type)}; one of: "
                             f"{', '.join(sorted(chain.EVENT_TYPES))}")
        inputs.finite(hours, "--hours", high=24 * 365 * 1000)
        if not 1 <= limit <= 1_000_000:
            raise UsageError(f"--limit must be between 1 and 1000000, got {limit}")
        since = clocks.iso_utc(self.clock.now() - hours * 3600) if hours else None
        with snapshot(self._conn):
            return audit.query(self._conn, event_type=event_type.upper() if event_type else None, since=since,
                               limit=limit)

    def verify_chain(self) -> ChainReport:
        from fleet_watch.core import chain
        from fleet_watch.store import audit

        with snapshot(self._conn):
            events = list(audit.iter_all(self._conn))
            head = audit.head(self._conn)
        return chain.verify_events(events, head)

    # -- writing ------------------------------------------------------------------------------------------
    def _event(self, event_type: str, pid: int | None, workstream: str | None, detail: dict[str, Any]) -> None:
        self.event(self._conn, event_type, pid, workstream, detail)

    def drop_dead(self, conn: sqlite3.Connection, ledger: Ledger) -> None:
        """A writer (inside ``writing()``) cleans, and logs, the dead holders its decision came across: they held
        nothing already. A dead process's row goes; an expired reservation goes; a lease whose owner is gone is
        closed (its row stays, as evidence for classification)."""
        at = clocks.iso_utc(self.clock.now())
        for holder, reason in ledger.dead_seen():
            if holder.kind == "process":
                registry.delete_process(conn, holder.record_id)
                self.event(conn, "CLEAN", holder.pid, holder.workstream, {"reason": reason, "name": holder.name})
            elif holder.kind == "reservation":
                leases.delete_reservation(conn, holder.record_id)
                self.event(conn, "RELEASE", None, holder.workstream, {
                    "reason": reason, "claim_id": holder.record_id, "session_id": holder.session_id})
            elif not holder.closed:
                leases.close(conn, holder.record_id, at)
                self.event(conn, "SESSION_CLOSE", holder.pid, holder.workstream, {
                    "reason": reason, "session_id": holder.session_id})

    def register(
        self, *, pid: int, name: str, workstream: str, ports: Sequence[int] = (), gpu_mb: int = 0,
        repos: Sequence[str] = (), priority: int = 3, session_id: str | None = None, model: str | None = None,
        start_cmd: str | None = None, source: str = "manual", gpu_device: int | None = None, update: bool = False,
    ) -> ProcessRecord:
        """Register a running process with its claims, or (``update``) add claims to a registered one.

        With ``update``, ``gpu_mb`` replaces the process's GPU claim; ports and repos are added to what it holds.
        """
        inputs.pid(pid)
        for p in ports:
            inputs.port(p)
        inputs.non_negative(gpu_mb, "GPU MB")
        inputs.priority(priority)
        if not update:  # an update keeps the registered name and workstream
            inputs.text("name", name)
            inputs.text("workstream", workstream)
        if session_id is not None:
            inputs.text("session id", session_id)
        if model is not None:
            inputs.text("model", model, max_len=inputs.MAX_PATH)
        if start_cmd is not None:
            inputs.text("start command", start_cmd, max_len=32768)
        device = self.device_key(gpu_device)
        facts = process_facts(pid)
        if facts is None or facts.is_zombie:
            raise NotFound(f"PID {pid} is not a running process")
        req = ClaimRequest(ports=tuple(dict.fromkeys(ports)),
                           repos=tuple(dict.fromkeys(resolve_repo(r) for r in repos)),
                           gpu_mb=gpu_mb, device=device, session_id=session_id or f"cli-{pid}",
                           takes_over_reservations=True)
        listeners = {p: _foreign_listener(p, pid) for p in req.ports}

        conflict: Conflict | None = None
        with immediate(self._conn):
            conflict = self._register_locked(req, pid=pid, start_time=facts.start_time, uid=facts.uid, name=name,
                                             workstream=workstream, priority=priority, model=model,
                                             start_cmd=start_cmd, source=source, listeners=listeners, update=update)
        if conflict is not None:
            raise conflict
        record = registry.record_by_pid(self._conn, pid)
        assert record is not None
        return record

    def _register_locked(
        self, req: ClaimRequest, *, pid: int, start_time: float, uid: int | None, name: str, workstream: str,
        priority: int, model: str | None, start_cmd: str | None, source: str,
        listeners: dict[int, dict[str, Any] | None], update: bool,
    ) -> Conflict | None:
        now_iso = clocks.iso_utc(self.clock.now())
        existing = registry.record_by_pid(self._conn, pid)
        if existing is not None and not liveness.same_start(existing.start_time, start_time):
            registry.delete_process(self._conn, existing.record_id)
            self._event("CLEAN", existing.pid, existing.workstream, {"reason": "pid_reused", "name": existing.name})
            existing = None
        if update and existing is None:
            raise NotFound(f"PID {pid} is not registered; register it before adding claims with --update")
        if not update and existing is not None:
            return self._conflict(pid, name, workstream, "pid", f"PID {pid} is already registered as "
                                  f"{existing.name}; release it first, or add claims with --update")
        if existing is not None:
            req = req._replace(session_id=existing.session_id)

        ledger = Ledger.read(self._conn, self.clock.now())
        checks = decide_claims(self, ledger, req, os_listeners=listeners, suggestions=lambda p: [],
                               exclude=("process", existing.record_id) if existing else None)
        self.drop_dead(self._conn, ledger)
        denied = next(((res, c) for res, c in checks if not c["allowed"]), None)
        if denied is not None:
            resource, check = denied
            return self._conflict(pid, name, workstream, resource, check["reason"], holder=check.get("holder"))

        if existing is None:
            record_id = registry.insert_process(
                self._conn, pid=pid, start_time=start_time, uid=uid, name=name, workstream=workstream,
                session_id=req.session_id, priority=priority, model=model, start_cmd=start_cmd, source=source,
                registered_at=now_iso, last_heartbeat=now_iso,
            )
            held_ports: set[int] = set()
        else:
            record_id = existing.record_id
            held_ports = set(existing.ports)
            if req.gpu_mb > 0:
                registry.delete_gpu_claims(self._conn, record_id)
        new_ports = [p for p in req.ports if p not in held_ports]
        held_repos = set(existing.repos) if existing else set()
        new_repos = [r for r in req.repos if r not in held_repos]
        taken = self._take_over_reservations(ledger, req, record_id, new_ports, new_repos)
        for port in new_ports:
            if ("port", str(port)) not in taken:
                registry.add_claim(self._conn, record_id, "port", str(port), 0, now_iso)
        for repo_dir in new_repos:
            if ("repo", repo_dir) not in taken:
                registry.add_claim(self._conn, record_id, "repo", repo_dir, 0, now_iso)
        if req.gpu_mb > 0:
            registry.add_claim(self._conn, record_id, "gpu", req.device or GPU_POOL, req.gpu_mb, now_iso)
        self._event("UPDATE" if existing else "REGISTER", pid, workstream if not existing else existing.workstream, {
            "name": name if not existing else existing.name, "start_time": start_time,
            "port": req.ports[0] if req.ports else None, "ports": list(new_ports if existing else req.ports),
            "gpu_mb": req.gpu_mb, "repo_dir": req.repos[0] if req.repos else None, "repos": list(new_repos),
            "priority": priority, "session_id": req.session_id, "source": source, "gpu_device": req.device,
        })
        return None

    def _take_over_reservations(self, ledger: Ledger, req: ClaimRequest, record_id: int, ports: Sequence[int],
                                repos: Sequence[str]) -> set[tuple[str, str]]:
        """The reservations that ``takes_over`` names: ports and repos become the process's claims in place (no
        moment in which they are free), reserved GPU memory on the same device is replaced by the process's claim.
        A reservation left with nothing is dropped. Returns the (kind, key) pairs moved."""
        own = ledger.live(c for c in ledger.claims if takes_over(req, c))
        wanted = {("port", str(p)) for p in ports} | {("repo", r) for r in repos}
        moved = [c for c in own if (c.kind, c.key) in wanted]
        leases.move_claims_to_process(self._conn, [c.claim_id for c in moved], record_id)
        registry.delete_claims(self._conn, [c.claim_id for c in own if c.kind == "gpu"])
        for res_id in {c.holder.record_id for c in own}:
            if not registry.holder_claims(self._conn, "reservation", res_id):
                leases.delete_reservation(self._conn, res_id)
        if moved:
            self._event("CLAIM", None, None, {"taken_over_by_pid_record": record_id, "session_id": req.session_id,
                                               "claims": [f"{c.kind}:{c.key}" for c in moved]})
        return {(c.kind, c.key) for c in moved}

    def _conflict(self, pid: int, name: str, workstream: str, resource: str, reason: str,
                  holder: dict[str, Any] | None = None) -> Conflict:
        self._event("CONFLICT", pid, workstream, {
            "name": name, "resource": resource, "reason": reason,
            "holder_pid": None if holder is None else holder.get("pid"),
        })
        return Conflict(reason, resource=resource, holder=holder)

    def heartbeat(self, pid: int) -> ProcessRecord:
        inputs.pid(pid)
        dead: NotFound | None = None
        with immediate(self._conn):
            record = registry.record_by_pid(self._conn, pid)
            if record is None:
                raise NotFound(f"PID {pid} is not registered")
            reason = death_reason(record.pid, record.start_time)
            if reason is not None:
                registry.delete_process(self._conn, record.record_id)
                self._event("CLEAN", record.pid, record.workstream, {"reason": reason, "name": record.name})
                dead = NotFound(f"PID {pid} is registered but that process is gone ({reason}); its row was cleaned")
            else:
                registry.touch_heartbeat(self._conn, record.record_id, clocks.iso_utc(self.clock.now()))
        if dead is not None:
            raise dead
        return record

    def release_pid(self, pid: int) -> ProcessRecord:
        inputs.pid(pid)
        with immediate(self._conn):
            record = registry.record_by_pid(self._conn, pid)
            if record is None:
                raise NotFound(f"PID {pid} is not registered")
            registry.delete_process(self._conn, record.record_id)
            self._event("RELEASE", record.pid, record.workstream, {
                "name": record.name, "ports": list(record.ports), "repos": list(record.repos),
                "gpu_mb": record.gpu_mb,
            })
        return record

    def release_port(self, port: int, *, pid: int | None = None) -> ProcessRecord:
        """Release one port claim; with ``pid``, only if that process is the one holding it."""
        inputs.port(port)
        with immediate(self._conn):
            holder = next((r for r in registry.list_records(self._conn) if port in r.ports), None)
            if holder is None:
                raise NotFound(f"port {port} is not claimed")
            if pid is not None and holder.pid != pid:
                raise NotFound(f"port {port} is not claimed by PID {pid} (it is claimed by PID {holder.pid})")
            registry.delete_port_claim(self._conn, holder.record_id, port)
            self._event("RELEASE", holder.pid, holder.workstream, {"name": holder.name, "port": port})
        return holder

    def clean(self) -> CleanResult:
        """Drop rows whose process is gone; log heartbeat expiry (once) for live rows gone quiet."""
        from fleet_watch.core.ownership import STALE_AFTER_S  # the classifier's own figure (not on the guard path)

        now = self.clock.now()
        result = CleanResult()
        records = self.records()
        verdicts = {r.record_id: death_reason(r.pid, r.start_time) for r in records}
        with immediate(self._conn):
            ledger = Ledger.read(self._conn, now)
            for c in ledger.claims:  # expired reservations, leases whose owner is gone
                if c.holder.kind != "process":
                    ledger.death(c.holder)
            self.drop_dead(self._conn, ledger)
            already = registry.stale_logged(self._conn)
            for rec in registry.list_records(self._conn):
                reason = verdicts[rec.record_id] if rec.record_id in verdicts else death_reason(rec.pid,
                                                                                               rec.start_time)
                if reason is not None:
                    registry.delete_process(self._conn, rec.record_id)
                    self._event("CLEAN", rec.pid, rec.workstream, {"reason": reason, "name": rec.name})
                    result.removed.append((rec, reason))
                elif (rec.record_id not in already
                      and now - clocks.parse_iso(rec.last_heartbeat) > STALE_AFTER_S):
                    registry.mark_stale_logged(self._conn, rec.record_id, clocks.iso_utc(now))
                    self._event("STALE", rec.pid, rec.workstream, {
                        "name": rec.name, "reason": "heartbeat_expired", "last_heartbeat": rec.last_heartbeat,
                    })
                    result.expired.append(rec)
        return result


def _foreign_listener(port: int, pid: int) -> dict[str, Any] | None:
    """What the OS says listens on ``port``, unless it is ``pid`` itself or one of its descendants."""
    if not port_probe.port_in_use(port):
        return None
    listener = port_probe.find_listener(port) or {}
    owner = listener.get("pid")
    if owner is not None and (owner == pid or is_descendant(owner, pid)):
        return None
    return listener


def detect_pool_mb() -> tuple[int, dict[str, int]]:
    """Only on first run (or a config without gpu_total_mb): NVML and sysctl stay off the guard path."""
    from fleet_watch.probes.machine import detect_pool_mb

    return detect_pool_mb()
