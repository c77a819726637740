"""Ownership as data for the views: each registered process's class with its evidence, and the session leases.

The views (state document, ``STATE_REPORT.md``, changelog, metrics, ``fleet top``) never classify anything
themselves: the service hands them an ``Ownership`` (``service.report.ownership_inputs``), keyed by registry row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from fleet_watch.core.ownership import (  # the README's order, most owned first; the rule is core.ownership's
    CLASSES,
    DISCONNECTED,
    EXITED,
    LIVE,
    ORPHAN_CONFIRMED,
    STALE_CANDIDATE,
    OwnershipClass,
)
from fleet_watch.core.ownership import counts as class_counts  # {class: n}, every class present

__all__ = ["CLASSES", "DISCONNECTED", "EXITED", "LIVE", "ORPHAN_CONFIRMED", "STALE_CANDIDATE", "Classification",
           "Lease", "Ownership", "class_counts"]
STALE_CLASSES = (STALE_CANDIDATE, ORPHAN_CONFIRMED)


class Classification(NamedTuple):
    """One process's class and the evidence for it (human-readable reasons, in the order they were weighed)."""

    classification: OwnershipClass  # checked by mypy at every construction
    evidence: tuple[str, ...] = ()

    @property
    def safe_to_stop(self) -> bool:
        """Only an orphan confirmed by all three signals (README ownership model) may be stopped."""
        return self.classification == ORPHAN_CONFIRMED


class Lease(NamedTuple):
    """A session lease as the views show it."""

    session_id: str
    status: str  # ACTIVE, CLOSED or OWNER_GONE (an open lease whose owner process is gone holds nothing)
    owner_pid: int | None = None
    repo_dir: str | None = None
    started_at: str | None = None
    last_heartbeat_at: str | None = None
    closed_at: str | None = None

    @property
    def is_active(self) -> bool:
        return self.status == "ACTIVE"

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "status": self.status, "owner_pid": self.owner_pid,
                "repo_dir": self.repo_dir, "started_at": self.started_at,
                "last_heartbeat_at": self.last_heartbeat_at, "closed_at": self.closed_at}


class Ownership(NamedTuple):
    """``classes``: registry row id -> classification; ``leases``: every lease, oldest first."""

    classes: Mapping[int, Classification] = MappingProxyType({})
    leases: Sequence[Lease] = ()


