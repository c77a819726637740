"""Ownership as data for the views: each registered process's class with its evidence, and the session leases.

The views (state document, ``STATE_REPORT.md``, changelog, metrics, ``fleet top``) never classify anything
themselves: the service hands them an ``Ownership`` (``service.report.ownership_inputs``), keyed by registry row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet_watch.core.ownership import (  # the README's order, most owned first; the rule is core.ownership's
    CLASSES,
    DISCONNECTED,
    EXITED,
    LIVE,
    ORPHAN_CONFIRMED,
    STALE_CANDIDATE,
)

__all__ = ["CLASSES", "DISCONNECTED", "EXITED", "LIVE", "ORPHAN_CONFIRMED", "STALE_CANDIDATE", "Classification",
           "Lease", "Ownership", "class_counts"]
STALE_CLASSES = (STALE_CANDIDATE, ORPHAN_CONFIRMED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """One process's class and the evidence for it (human-readable reasons, in the order they were weighed)."""

    classification: str
    evidence: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.classification not in CLASSES:
            raise ValueError(f"unknown ownership class {self.classification!r}")

    @property
    def safe_to_stop(self) -> bool:
        """Only an orphan confirmed by all three signals (README ownership model) may be stopped."""
        return self.classification == ORPHAN_CONFIRMED


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
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


@dataclass(frozen=True, slots=True)
class Ownership:
    """``classes``: registry row id -> classification; ``leases``: every lease, oldest first."""

    classes: Mapping[int, Classification] = field(default_factory=dict)
    leases: Sequence[Lease] = ()


def class_counts(classes: Sequence[str]) -> dict[str, int]:
    """{class: n} in the README's order, every class present (0 when none)."""
    counts = dict.fromkeys(CLASSES, 0)
    for c in classes:
        if c in counts:
            counts[c] += 1
    return counts
