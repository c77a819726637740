"""The ``Fleet`` facade: open the registry once, then register, release, clean, guard and report.

Every claim-changing operation is a single ``BEGIN IMMEDIATE`` transaction that also appends its audit
event, so concurrent CLI processes can neither double-grant a resource nor fork the chain. ``guard`` and
``check`` are read-only: they never take the write lock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_watch import clock as clocks
from fleet_watch.config import Detected, Settings, ensure_home, load_settings
from fleet_watch.core import chain, guard, paths
from fleet_watch.errors import Conflict, NotFound, UsageError
from fleet_watch.models import GPU_POOL, Claim, GpuBudget, ProcessRecord
from fleet_watch.probes import ports as port_probe
from fleet_watch.probes.processes import death_reason, process_facts
from fleet_watch.store import audit, registry
from fleet_watch.store.connection import immediate, open_db, snapshot

if TYPE_CHECKING:
    from fleet_watch.service.preflight import GuardRequest, GuardResult

STALE_AFTER_S = 180.0  # a heartbeat older than this is "expired" (README ownership model)


def resolve_repo(path: str) -> str:
    """Absolute, with ``~`` expanded and every symlink resolved: one spelling per directory."""
    if not path or "\0" in path:
        raise UsageError("repo path must be a non-empty path")
    return os.path.realpath(os.path.expanduser(path))


def validate_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"port must be between 1 and 65535, got {port}")


@dataclass(slots=True)
class CleanResult:
    removed: list[tuple[ProcessRecord, str]] = field(default_factory=list)
    expired: list[ProcessRecord] = field(default_factory=list)


class Fleet:
    def __init__(self, settings: Settings, conn: sqlite3.Connection, clock: clocks.Clock) -> None:
        self.settings = settings
        self.conn = conn
        self.clock = clock

    @classmethod
    def open(
        cls, home: Path, *, clock: clocks.Clock | None = None, detect_total_mb: Callable[[], Detected] | None = None,
    ) -> Fleet:
        if detect_total_mb is None:
            detect_total_mb = detect_pool_mb
        ensure_home(home)
        settings = load_settings(home, detect_total_mb)
        return cls(settings, open_db(settings.db_path), clock or clocks.SystemClock())

    def close(self) -> None:
        self.conn.close()

    # -- liveness ---------------------------------------------------------------------------------------
    @staticmethod
    def death_reason(record_pid: int, start_time: float) -> str | None:
        """Why a registered identity is no longer live, or ``None`` while it is (``core.liveness``)."""
        return death_reason(record_pid, start_time)

    def _event(self, event_type: str, pid: int | None, workstream: str | None, detail: dict[str, Any]) -> None:
        audit.append(self.conn, timestamp=clocks.iso_utc(self.clock.now()), event_type=event_type, pid=pid,
                     workstream=workstream, detail=detail)

    def _drop_dead(self, record_id: int, pid: int, name: str, workstream: str, reason: str, **extra: Any) -> None:
        registry.delete_process(self.conn, record_id)
        self._event("CLEAN", pid, workstream, {"reason": reason, "name": name, **extra})

    # -- register -----------------------------------------------------------------------------------------
    def register(
        self, *, pid: int, name: str, workstream: str, port: int | None = None, gpu_mb: int = 0,
        repo: str | None = None, priority: int = 3, session_id: str | None = None, model: str | None = None,
        start_cmd: str | None = None, source: str = "manual", gpu_device: int | None = None,
    ) -> ProcessRecord:
        validate_port(port)
        if gpu_mb < 0:
            raise UsageError(f"GPU MB must be >= 0, got {gpu_mb}")
        if not 1 <= priority <= 5:
            raise UsageError(f"priority must be 1-5, got {priority}")
        for label, text in (("name", name), ("workstream", workstream)):
            if not text.strip():
                raise UsageError(f"{label} must not be empty")
        device = self.device_key(gpu_device)
        facts = process_facts(pid)
        if facts is None or facts.is_zombie:
            raise NotFound(f"PID {pid} is not a running process")
        repo_dir = resolve_repo(repo) if repo is not None else None
        session = session_id or f"cli-{pid}"
        os_conflict = self._os_port_conflict(port, pid) if port is not None else None

        conflict: Conflict | None = None
        with immediate(self.conn):
            conflict = self._register_locked(
                pid=pid, start_time=facts.start_time, uid=facts.uid, name=name, workstream=workstream, port=port,
                gpu_mb=gpu_mb, repo_dir=repo_dir, priority=priority, session=session, model=model,
                start_cmd=start_cmd, source=source, os_conflict=os_conflict, device=device,
            )
        if conflict is not None:
            raise conflict
        record = registry.record_by_pid(self.conn, pid)
        assert record is not None
        return record

    def _os_port_conflict(self, port: int, pid: int) -> dict[str, Any] | None:
        """A listener on ``port`` that is neither ``pid`` nor one of its descendants."""
        if not port_probe.port_in_use(port):
            return None
        listener = port_probe.find_listener(port) or {}
        owner = listener.get("pid")
        if owner is not None and (owner == pid or _is_descendant(owner, pid)):
            return None
        return listener or {"pid": None}

    def _register_locked(
        self, *, pid: int, start_time: float, uid: int | None, name: str, workstream: str, port: int | None,
        gpu_mb: int, repo_dir: str | None, priority: int, session: str, model: str | None,
        start_cmd: str | None, source: str, os_conflict: dict[str, Any] | None, device: str | None = None,
    ) -> Conflict | None:
        now_iso = clocks.iso_utc(self.clock.now())
        existing = registry.record_by_pid(self.conn, pid)
        if existing is not None:
            if existing.identity.same_process(start_time):
                return self._conflict(pid, name, workstream, "pid", f"PID {pid} is already registered as "
                                      f"{existing.name}; release it first", existing)
            self._drop_dead(existing.record_id, existing.pid, existing.name, existing.workstream, "pid_reused")

        if port is not None:
            claim = registry.port_claim(self.conn, port)
            holder = self._live_holder(claim)
            if holder is not None:
                return self._conflict(pid, name, workstream, "port",
                                      f"port {port} claimed by PID {holder.pid} ({holder.name})", holder, port=port)
            if os_conflict is not None:
                who = (f"PID {os_conflict['pid']} ({os_conflict.get('name') or 'unknown'})"
                       if os_conflict.get("pid") is not None else "another process")
                return self._conflict(pid, name, workstream, "port",
                                      f"port {port} in use by {who}, not registered with Fleet Watch", None,
                                      port=port, holder_view=guard.os_holder_view(port, os_conflict))

        if repo_dir is not None:
            for claim in registry.repo_claims_overlapping(self.conn, repo_dir, paths.ancestors(repo_dir)):
                holder = self._live_holder(claim)
                if holder is not None and holder.session_id != session:
                    via = "" if claim.key == repo_dir else f" (lock on {claim.key})"
                    return self._conflict(pid, name, workstream, "repo",
                                          f"repo {repo_dir} locked by PID {holder.pid} ({holder.name}){via}",
                                          holder, repo_dir=claim.key)

        if gpu_mb > 0:
            verdict = self._gpu_verdict(gpu_mb, device, self._budget(None))
            if not verdict["allowed"]:
                for claim in registry.gpu_claims(self.conn):
                    self._live_holder(claim)  # drops the dead, so the sums below count only live claims
                verdict = self._gpu_verdict(gpu_mb, device, self._budget(None))
            if not verdict["allowed"]:
                return self._conflict(pid, name, workstream, "gpu", verdict["reason"], None, gpu_mb=gpu_mb)

        record_id = registry.insert_process(
            self.conn, pid=pid, start_time=start_time, uid=uid, name=name, workstream=workstream,
            session_id=session, priority=priority, model=model, start_cmd=start_cmd, source=source,
            registered_at=now_iso, last_heartbeat=now_iso,
        )
        if port is not None:
            registry.add_claim(self.conn, record_id, "port", str(port), 0, now_iso)
        if repo_dir is not None:
            registry.add_claim(self.conn, record_id, "repo", repo_dir, 0, now_iso)
        if gpu_mb > 0:
            registry.add_claim(self.conn, record_id, "gpu", device or GPU_POOL, gpu_mb, now_iso)
        self._event("REGISTER", pid, workstream, {
            "name": name, "start_time": start_time, "port": port, "gpu_mb": gpu_mb, "repo_dir": repo_dir,
            "priority": priority, "session_id": session, "source": source, "gpu_device": device,
        })
        return None

    def _conflict(
        self, pid: int, name: str, workstream: str, resource: str, reason: str, holder: ProcessRecord | None,
        *, port: int | None = None, repo_dir: str | None = None, gpu_mb: int | None = None,
        holder_view: dict[str, Any] | None = None,
    ) -> Conflict:
        view = holder_view if holder is None else guard.holder_view(holder, port=port, repo_dir=repo_dir)
        self._event("CONFLICT", pid, workstream, {
            "name": name, "resource": resource, "reason": reason, "port": port, "repo_dir": repo_dir,
            "gpu_mb": gpu_mb, "holder_pid": None if view is None else view.get("pid"),
        })
        return Conflict(reason, resource=resource, holder=view)

    def _live_holder(self, claim: Claim | None) -> ProcessRecord | None:
        """The claim's holder if it is still the same live process; a dead holder is cleaned (and logged)."""
        if claim is None:
            return None
        h = claim.holder
        reason = self.death_reason(h.pid, h.start_time)
        if reason is None:
            return registry.record_by_id(self.conn, h.record_id)
        self._drop_dead(h.record_id, h.pid, h.name, h.workstream, reason)
        return None

    def _budget(self, device: str | None) -> GpuBudget:
        """The single pool (``None``: every GPU claim counts) or one configured device's budget."""
        if device is None:
            return GpuBudget(total_mb=self.settings.gpu_total_mb, reserve_mb=self.settings.gpu_reserve_mb,
                             allocated_mb=registry.gpu_allocated_mb(self.conn))
        total, reserve = self.settings.gpu_devices[device]
        return GpuBudget(total_mb=total, reserve_mb=reserve, allocated_mb=registry.gpu_allocated_mb(self.conn, device))

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

    def _gpu_verdict(self, requested: int, device: str | None, pool: GpuBudget) -> dict[str, Any]:
        """The pool must fit the claim, and so must the named device's own budget."""
        verdict = guard.check_gpu(requested, pool)
        if device is None or not verdict["allowed"]:
            return verdict if device is None else {**verdict, "device": int(device)}
        dev = guard.check_gpu(requested, self._budget(device))
        if not dev["allowed"]:
            dev["reason"] = f"GPU {device}: {dev['reason']}"
        return {**dev, "device": int(device)}

    # -- heartbeat, release, clean ------------------------------------------------------------------------
    def heartbeat(self, pid: int) -> ProcessRecord:
        with immediate(self.conn):
            record = registry.record_by_pid(self.conn, pid)
            if record is None:
                raise NotFound(f"PID {pid} is not registered")
            reason = self.death_reason(record.pid, record.start_time)
            if reason is not None:
                self._drop_dead(record.record_id, record.pid, record.name, record.workstream, reason)
                dead: NotFound | None = NotFound(f"PID {pid} is registered but that process is gone ({reason}); "
                                                 "its row was cleaned")
            else:
                dead = None
                registry.touch_heartbeat(self.conn, record.record_id, clocks.iso_utc(self.clock.now()))
        if dead is not None:
            raise dead
        return record

    def release_pid(self, pid: int) -> ProcessRecord:
        with immediate(self.conn):
            record = registry.record_by_pid(self.conn, pid)
            if record is None:
                raise NotFound(f"PID {pid} is not registered")
            registry.delete_process(self.conn, record.record_id)
            self._event("RELEASE", record.pid, record.workstream, {
                "name": record.name, "ports": list(record.ports), "repos": list(record.repos),
                "gpu_mb": record.gpu_mb,
            })
        return record

    def release_port(self, port: int) -> ProcessRecord:
        validate_port(port)
        with immediate(self.conn):
            claim = registry.port_claim(self.conn, port)
            if claim is None:
                raise NotFound(f"port {port} is not claimed")
            record = registry.record_by_id(self.conn, claim.holder.record_id)
            assert record is not None
            registry.delete_port_claim(self.conn, port)
            self._event("RELEASE", record.pid, record.workstream, {"name": record.name, "port": port})
        return record

    def clean(self) -> CleanResult:
        """Drop rows whose process is gone; log heartbeat expiry (once) for live rows gone quiet."""
        now = self.clock.now()
        result = CleanResult()
        records = registry.list_records(self.conn)
        verdicts = {r.record_id: self.death_reason(r.pid, r.start_time) for r in records}
        with immediate(self.conn):
            already = registry.stale_logged(self.conn)
            for rec in registry.list_records(self.conn):
                reason = verdicts.get(rec.record_id, self.death_reason(rec.pid, rec.start_time))
                if reason is not None:
                    self._drop_dead(rec.record_id, rec.pid, rec.name, rec.workstream, reason)
                    result.removed.append((rec, reason))
                elif (rec.record_id not in already
                      and now - clocks.parse_iso(rec.last_heartbeat) > STALE_AFTER_S):
                    registry.mark_stale_logged(self.conn, rec.record_id, clocks.iso_utc(now))
                    self._event("STALE", rec.pid, rec.workstream, {
                        "name": rec.name, "reason": "heartbeat_expired", "last_heartbeat": rec.last_heartbeat,
                    })
                    result.expired.append(rec)
        return result

    # -- guard and check ----------------------------------------------------------------------------------
    def evaluate(self, req: GuardRequest) -> GuardResult:
        """The pre-flight verdict (read-only): see ``service.preflight``."""
        from fleet_watch.service.preflight import evaluate

        return evaluate(self, req)

    def free_ports(self, requested: int | None, occupied: set[int], count: int = guard.SUGGESTION_COUNT) -> list[int]:
        """Up to ``count`` ports that no one claims and nothing listens on, best first."""
        out: list[int] = []
        for port in guard.candidate_ports(self.settings.preferred_ports, requested, occupied):
            if port_probe.port_in_use(port) is False:
                out.append(port)
                if len(out) == count:
                    break
        return out

    # -- reading ------------------------------------------------------------------------------------------
    def records(self) -> list[ProcessRecord]:
        with snapshot(self.conn):
            return registry.list_records(self.conn)

    def budget(self) -> GpuBudget:
        with snapshot(self.conn):
            return self._budget(None)

    def live_gpu_allocated_mb(self) -> int:
        """GPU memory that live registered processes claim: dead holders hold nothing. Read-only, like the guard:
        the rows of dead holders stay for ``clean`` to remove and log."""
        with snapshot(self.conn):
            claims = registry.gpu_claims(self.conn)
        return sum(c.amount_mb for c in claims if self.death_reason(c.holder.pid, c.holder.start_time) is None)

    def history(self, *, event_type: str | None, hours: float | None, limit: int) -> list[Any]:
        if event_type is not None and event_type.upper() not in chain.EVENT_TYPES:
            raise UsageError(f"unknown event type {event_type!r}; one of: {', '.join(sorted(chain.EVENT_TYPES))}")
        if hours is not None and hours < 0:
            raise UsageError("--hours must be >= 0 (0 means no time limit)")
        if limit <= 0:
            raise UsageError("--limit must be a positive integer")
        since = clocks.iso_utc(self.clock.now() - hours * 3600) if hours else None
        with snapshot(self.conn):
            return audit.query(self.conn, event_type=event_type.upper() if event_type else None, since=since,
                               limit=limit)

    def verify_chain(self) -> chain.ChainReport:
        with snapshot(self.conn):
            return chain.verify_events(audit.iter_all(self.conn), audit.head(self.conn))

    def conflicts_since(self, hours: float) -> int:
        since = clocks.iso_utc(self.clock.now() - hours * 3600)
        with snapshot(self.conn):
            return audit.count(self.conn, event_type="CONFLICT", since=since)


def detect_pool_mb() -> tuple[int, dict[str, int]]:
    """Only on first run (or a config without gpu_total_mb): NVML and sysctl stay off the guard path."""
    from fleet_watch.probes.machine import detect_pool_mb

    return detect_pool_mb()


def _is_descendant(pid: int, ancestor: int) -> bool:
    import psutil

    try:
        return any(p.pid == ancestor for p in psutil.Process(pid).parents())
    except psutil.Error:
        return False
