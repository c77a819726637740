"""Plain values shared by every layer: identities, holders, claims, events. No I/O here.

A resource that someone holds exclusively (a port, a repository) or out of a budget (GPU memory) is a
``Claim``. Whoever holds it is a ``Holder``: today a registered process, identified by PID *and* start
time; the same shape will carry session leases, reservations and external resources later.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

ClaimKind = Literal["port", "repo", "gpu"]

# Where a GPU figure comes from. Only a firm claim counts against the budget and can deny anyone: one registered
# explicitly ("declared"), measured (NVML, the Apple footprint, a server's own report) or configured by the user as a
# reservation. An "estimate" (the estimator's figure, a pattern's default) is shown, never enforced.
ClaimBasis = Literal["declared", "measured", "reserved", "estimate"]
FIRM_BASES: frozenset[str] = frozenset({"declared", "measured", "reserved"})

# The single GPU pool used where a machine has one device or none (the README's ledger).
GPU_POOL = "all"


HolderKind = Literal["process", "lease", "reservation"]


class Holder(NamedTuple):
    """Who holds a claim: a registered process (PID and start time), a session lease (its owner process, if it
    named one), or a reservation made before any process exists (it holds until ``expires_at``). ``record_id`` is
    the row in the holder's own table: ``key`` tells holders of different kinds apart."""

    record_id: int
    pid: int | None
    start_time: float | None
    name: str
    workstream: str
    session_id: str
    priority: int
    kind: HolderKind = "process"
    expires_at: float | None = None  # reservations
    closed: bool = False  # leases

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.record_id)

    def describe(self) -> str:
        if self.kind == "reservation":
            return f"reservation {self.record_id} of session {self.session_id}"
        if self.kind == "lease":
            owner = f", owner PID {self.pid}" if self.pid is not None else ""
            return f"session {self.session_id} (lease{owner})"
        return f"PID {self.pid} ({self.name})"


class Lease(NamedTuple):
    """A session's lease: who owns the session (a process, when one was named), what repo it holds, and whether it
    is still open. A closed lease, or one whose owner is gone, holds nothing."""

    lease_id: int
    session_id: str
    owner_pid: int | None
    owner_start_time: float | None
    owner_uid: int | None
    repo: str | None
    started_at: str
    last_heartbeat: str
    closed_at: str | None = None

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None


class Reservation(NamedTuple):
    """Resources held before a process exists (``fleet claim``), until ``expires_at`` or until released."""

    reservation_id: int
    session_id: str
    uid: int | None
    created_at: str
    expires_at: float
    ports: tuple[int, ...] = ()
    repos: tuple[str, ...] = ()
    gpu: tuple[tuple[str, int], ...] = ()


class Claim(NamedTuple):
    kind: ClaimKind
    key: str  # the port number, the resolved repo path, or the GPU device ("all" for the single pool)
    holder: Holder
    amount_mb: int = 0  # only GPU claims are budgeted
    basis: ClaimBasis = "declared"
    claim_id: int = 0

    @property
    def is_firm(self) -> bool:
        return self.basis in FIRM_BASES


class ProcessRecord(NamedTuple):
    """One registered process and everything it claims."""

    record_id: int
    pid: int
    start_time: float
    uid: int | None
    name: str
    workstream: str
    session_id: str
    priority: int
    model: str | None
    start_cmd: str | None
    source: str
    registered_at: str
    last_heartbeat: str
    ports: tuple[int, ...] = ()
    repos: tuple[str, ...] = ()
    gpu: tuple[tuple[str, int], ...] = ()  # (device, MB)
    gpu_basis: ClaimBasis | None = None  # how the GPU figure was obtained; None without a GPU claim

    @property
    def gpu_mb(self) -> int:
        return sum(mb for _, mb in self.gpu)


class Event(NamedTuple):
    """One audit-trail entry as stored. ``detail`` is a JSON object."""

    seq: int
    timestamp: str
    event_type: str
    pid: int | None
    workstream: str | None
    detail: dict[str, object]
    prev_hash: str = ""
    hash: str = ""


class GpuBudget(NamedTuple):
    total_mb: int
    reserve_mb: int
    allocated_mb: int
    claims: tuple[Claim, ...] = ()  # the live firm claims that make up allocated_mb, when known

    @property
    def allocatable_mb(self) -> int:
        return self.total_mb - self.reserve_mb

    @property
    def available_mb(self) -> int:
        return self.total_mb - self.reserve_mb - self.allocated_mb

    def to_dict(self) -> dict[str, int]:
        return {
            "total_mb": self.total_mb,
            "reserve_mb": self.reserve_mb,
            "allocated_mb": self.allocated_mb,
            "available_mb": self.available_mb,
        }
