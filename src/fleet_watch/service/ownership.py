"""Each registered process's ownership class, with its evidence: the facts gathered here, the rule in
``core.ownership``.

The facts: the one liveness rule for the process and for its session lease's owner, the heartbeat stored in the
registry, the lease (``store.leases``), and the parent chain (``probes.ancestry``), read only when the class depends on
it unless a command asks for every chain (``reconcile`` and ``stale`` show them all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from fleet_watch import clock as clocks
from fleet_watch.core import liveness
from fleet_watch.core import ownership as core
from fleet_watch.models import Lease, ProcessRecord
from fleet_watch.probes.ancestry import AncestryProbe
from fleet_watch.probes.processes import death_reason
from fleet_watch.service.fleet import Fleet
from fleet_watch.store import leases as lease_store
from fleet_watch.store import registry

DeathOf = Callable[[int, float], str | None]


class Classified(NamedTuple):
    """One registered process, its verdict and the facts it came from."""

    record: ProcessRecord
    verdict: core.Verdict
    death: str | None
    lease: core.LeaseFacts | None
    chain: core.ChainFacts | None

    @property
    def classification(self) -> core.OwnershipClass:
        return self.verdict.classification

    def to_dict(self) -> dict[str, Any]:
        """The classification object of ``reconcile``, ``stale`` and ``reap`` (JSON)."""
        rec, v, chain = self.record, self.verdict, self.chain
        age = v.heartbeat_age_s
        proc = chain.process if chain else None
        return {
            "pid": rec.pid, "start_time": rec.start_time, "name": rec.name, "workstream": rec.workstream,
            "session_id": rec.session_id, "priority": rec.priority, "ports": list(rec.ports),
            "repos": list(rec.repos), "gpu_mb": rec.gpu_mb,
            "classification": v.classification, "evidence": list(v.evidence), "safe_to_reap": v.safe_to_reap,
            "last_heartbeat": rec.last_heartbeat,
            "heartbeat_age_seconds": None if age is None else round(age, 1),
            "stale_seconds": round(age, 1) if age is not None and v.stale else 0,
            "process_alive": self.death is None, "death_reason": self.death,
            "session_lease_present": self.lease is not None, "session_lease_status": v.lease_status,
            "session_lease_owner_pid": self.lease.owner_pid if self.lease else None,
            "session_lease_owner_alive": (None if self.lease is None or self.lease.owner_pid is None
                                          else self.lease.owner_death is None),
            "parent_pid": proc.ppid if proc else None,
            "process_group_id": proc.pgid if proc else None,
            "session_leader_pid": proc.sid if proc else None,
            "cgroup_unit": proc.unit if proc else None,
            "parent_chain_detached": v.chain.detached if v.chain else None,
            "managed_by": v.chain.managed_by if v.chain else None,
        }


def lease_facts(lease: Lease, death_of: DeathOf = death_reason) -> core.LeaseFacts:
    """A stored lease for the classifier: its owner's liveness by the one rule."""
    owner_death = None
    if not lease.is_closed and lease.owner_pid is not None and lease.owner_start_time is not None:
        owner_death = death_of(lease.owner_pid, lease.owner_start_time)
    return core.LeaseFacts(session_id=lease.session_id, closed=lease.is_closed, owner_pid=lease.owner_pid,
                           owner_death=owner_death)


def heartbeat_time(rec: ProcessRecord) -> float | None:
    """The stored heartbeat as epoch seconds; None when the column holds something that is not a timestamp."""
    try:
        return clocks.parse_iso(rec.last_heartbeat)
    except (TypeError, ValueError, OverflowError):
        return None


def classify_records(records: Iterable[ProcessRecord], leases: Iterable[Lease], now: float, *,
                     deaths: Mapping[int, str | None] | None = None, death_of: DeathOf = death_reason,
                     chains: AncestryProbe | None = None, every_chain: bool = False) -> list[Classified]:
    """Classify ``records`` (``deaths``: record id -> death reason where the caller already knows it)."""
    probe = chains or AncestryProbe()
    by_session = {lease.session_id: lease_facts(lease, death_of) for lease in leases}
    out: list[Classified] = []
    for rec in records:
        death = deaths[rec.record_id] if deaths is not None and rec.record_id in deaths else death_of(
            rec.pid, rec.start_time)
        beat = heartbeat_time(rec)
        lease = None if core.own_session(rec.pid, rec.session_id) else by_session.get(rec.session_id)
        facts: core.ChainFacts | None = None
        chain: core.ChainVerdict | None = None
        wanted = every_chain and death is None
        if wanted or core.needs_chain(death=death, last_heartbeat=beat, now=now, pid=rec.pid,
                                      session_id=rec.session_id, lease=lease):
            facts = probe.facts(rec.pid, rec.start_time)
            owner = lease.owner_pid if lease is not None and not lease.closed and lease.owner_death is None else None
            chain = core.parent_chain(facts, lease_owner=owner)
        verdict = core.classify(pid=rec.pid, session_id=rec.session_id, death=death, last_heartbeat=beat, now=now,
                                lease=lease, chain=chain)
        out.append(Classified(rec, verdict, death, lease, facts))
    return out


class Reconciliation(NamedTuple):
    now: float
    processes: list[Classified]
    leases: list[Lease]

    def summary(self) -> dict[str, int]:
        return core.counts([c.classification for c in self.processes])

    def stale(self) -> list[Classified]:
        return [c for c in self.processes if c.verdict.stale]

    def orphans(self) -> list[Classified]:
        return [c for c in self.processes if c.verdict.safe_to_reap]


def reconcile(fleet: Fleet, *, every_chain: bool = True, chains: AncestryProbe | None = None) -> Reconciliation:
    """Every registered process's class, read-only (one registry snapshot; no write lock, nothing signalled)."""
    now = fleet.clock.now()
    with fleet.reading() as conn:
        records = registry.list_records(conn)
        all_leases = lease_store.list_all(conn)
    return Reconciliation(now, classify_records(records, all_leases, now, chains=chains, every_chain=every_chain),
                          all_leases)


def classify_for_views(fleet: Fleet, now: float, records: Sequence[ProcessRecord],
                       alive: Mapping[int, bool | None]) -> tuple[list[Classified], list[Lease]]:
    """The views' classification: the caller's liveness verdicts reused (a dead row's reason is asked again, only for
    the evidence), the chain read only where the class depends on it."""
    with fleet.reading() as conn:
        all_leases = lease_store.list_all(conn)
    deaths: dict[int, str | None] = {}
    for rec in records:
        state = alive.get(rec.record_id)
        if state is True:
            deaths[rec.record_id] = None
        elif state is False:  # the caller's verdict stands; asked again only for its reason
            deaths[rec.record_id] = death_reason(rec.pid, rec.start_time) or liveness.DEAD_PID
    return classify_records(records, all_leases, now, deaths=deaths), all_leases
