"""The ledger: one consistent read of every claim, with each holder's liveness decided once and only on demand.

This is the one place where "does a dead holder still hold this?" is answered (no: a holder that the liveness rule
calls gone holds nothing, in every view). ``guard``, ``check``, ``register``, ``status`` and the estimator all read
claims through a ``Ledger``; the decisions over it live in ``core.guard``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fleet_watch.core import liveness, paths
from fleet_watch.models import Claim, GpuBudget, Holder
from fleet_watch.probes.processes import death_reason
from fleet_watch.store import registry

# How a process's liveness is asked: of the kernel now, or of a process table a discovery cycle just scanned.
if TYPE_CHECKING:
    from fleet_watch.core.external import ExternalLock

DeathProbe = Callable[[int, float], str | None]


def kernel_death(pid: int, start_time: float) -> str | None:
    return death_reason(pid, start_time)


class Ledger:
    __slots__ = ("_deaths", "claims", "external_locks", "external_resources", "holders", "now", "probe")

    def __init__(self, claims: list[Claim], holders: list[Holder], probe: DeathProbe = kernel_death, now: float = 0.0,
                 external_locks: list[ExternalLock] | None = None,
                 external_resources: list[dict[str, Any]] | None = None) -> None:
        self.claims, self.holders, self.probe, self.now = claims, holders, probe, now
        self.external_locks = external_locks or []  # repo locks of live external claims
        self.external_resources = external_resources or []  # state.external_resources
        self._deaths: dict[tuple[str, int], str | None] = {}

    @classmethod
    def read(cls, conn: sqlite3.Connection, now: float, probe: DeathProbe = kernel_death) -> Ledger:
        """The caller holds a read snapshot (or the write lock): every query sees one state. External claims are
        live by their own rule (present at the provider, expiry ahead of ``now``)."""
        claims, holders = registry.ledger_rows(conn)
        if not registry.has_external_resources(conn):  # the common case: no import of the external modules
            return cls(claims, holders, probe, now)
        from fleet_watch.service.external import external_repo_locks, live_external_resources

        return cls(claims, holders, probe, now, external_repo_locks(conn, now), live_external_resources(conn, now))

    # -- liveness -----------------------------------------------------------------------------------------
    def death(self, holder: Holder) -> str | None:
        """Why ``holder`` holds nothing any more (``core.liveness.holder_death``), or None. Asked once each."""
        key = holder.key
        if key not in self._deaths:
            self._deaths[key] = liveness.holder_death(holder, self.now, self.probe)
        return self._deaths[key]

    def live(self, claims: Iterable[Claim]) -> list[Claim]:
        return [c for c in claims if self.death(c.holder) is None]

    def dead_seen(self) -> list[tuple[Holder, str]]:
        """The holders found dead so far (only those some question needed): what a writer may clean."""
        by_key = {h.key: h for h in self.holders} | {c.holder.key: c.holder for c in self.claims}
        return [(by_key[key], why) for key, why in self._deaths.items() if why is not None and key in by_key]

    def live_holders(self) -> list[Holder]:
        return [h for h in self.holders if self.death(h) is None]

    # -- questions ----------------------------------------------------------------------------------------
    def port_claim(self, port: int) -> Claim | None:
        """The live claim on ``port``, if any (the database allows one row per port)."""
        key = str(port)
        return next((c for c in self.live(c for c in self.claims if c.kind == "port" and c.key == key)), None)

    def repo_locks(self, repo_dir: str) -> list[Claim]:
        """Live locks on ``repo_dir``, on a parent of it, or on anything inside it (path components, not prefixes)."""
        return self.live(c for c in self.claims
                         if c.kind == "repo" and (paths.covers(c.key, repo_dir) or paths.covers(repo_dir, c.key)))

    def gpu_claims(self, device: str | None = None) -> list[Claim]:
        """Live GPU claims on one device key, or on every device and the pool when ``device`` is None."""
        return self.live(c for c in self.claims
                         if c.kind == "gpu" and c.amount_mb > 0 and (device is None or c.key == device))

    def budget(self, total_mb: int, reserve_mb: int, device: str | None = None, *,
               exclude: Callable[[Claim], bool] | None = None) -> GpuBudget:
        """The budget counts live *firm* claims only (an estimate is shown, never enforced); ``exclude`` leaves out
        the requester's own (a process whose GPU claim is being replaced, its session's reservation)."""
        firm = [c for c in self.gpu_claims(device) if c.is_firm and not (exclude and exclude(c))]
        return GpuBudget(total_mb=total_mb, reserve_mb=reserve_mb, allocated_mb=sum(c.amount_mb for c in firm),
                         claims=tuple(firm))

    def estimated_mb(self, device: str | None = None) -> int:
        return sum(c.amount_mb for c in self.gpu_claims(device) if not c.is_firm)

    def occupied_ports(self) -> dict[int, int | None]:
        """{port: pid} over live port claims (None: held by a reservation or a lease, no process yet)."""
        return {int(c.key): c.holder.pid for c in self.live(c for c in self.claims if c.kind == "port")}

    def locked_repos(self) -> dict[str, int | None]:
        """{repo: holder PID} over live locks; ``None`` for a lock that an external resource's claim holds."""
        out: dict[str, int | None] = {lock.repo_dir: None for lock in self.external_locks}
        out.update({c.key: c.holder.pid for c in self.live(c for c in self.claims if c.kind == "repo")})
        return out

    def claims_of(self, holder: Holder) -> list[Claim]:
        return [c for c in self.claims if c.holder.key == holder.key]

