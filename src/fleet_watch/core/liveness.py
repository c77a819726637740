"""The one liveness rule: is the process we recorded (PID *and* start time) still that process, alive?

Every caller (the guard, register, clean, discovery, health, the signal path) asks this module, so there is one
tolerance and one set of reasons. Pure: the facts come from a probe (``probes.processes``) or a scan.
"""

from __future__ import annotations

from collections.abc import Callable

from fleet_watch.models import Holder

# A start time read twice for the same process can differ by a clock tick (10 ms at USER_HZ=100, rounding in
# psutil); a reused PID cannot start within this window of the original (PIDs only come back after the whole PID
# space has cycled).
START_TIME_TOLERANCE_S = 0.05

# Why a recorded identity holds nothing any more.
DEAD_PID = "dead_pid"
ZOMBIE = "zombie"
PID_REUSED = "pid_reused"
REASONS = (DEAD_PID, ZOMBIE, PID_REUSED)


def same_start(recorded: float | None, observed: float | None) -> bool:
    """Two start times of one PID name the same process."""
    return recorded is not None and observed is not None and abs(recorded - observed) <= START_TIME_TOLERANCE_S


def death_reason(recorded_start: float, *, exists: bool, start_time: float | None, is_zombie: bool) -> str | None:
    """``None`` while the recorded process lives; else why not. A zombie has exited: it holds nothing."""
    if not exists:
        return DEAD_PID
    if not same_start(recorded_start, start_time):
        return PID_REUSED
    if is_zombie:
        return ZOMBIE
    return None


# Why a lease or a reservation holds nothing any more.
LEASE_CLOSED = "lease_closed"
OWNER_GONE = "owner_gone"
EXPIRED = "expired"


def holder_death(holder: Holder, now: float, process_death: Callable[[int, float], str | None]) -> str | None:
    """The rule for every kind of holder, ``None`` while it holds its claims:

    - a process while it lives (the process rule above, asked through ``process_death``);
    - a session lease while it is open and, when it named an owner process, while that owner lives;
    - a reservation until it expires.
    """
    if holder.kind == "reservation":
        return EXPIRED if holder.expires_at is None or holder.expires_at <= now else None
    if holder.kind == "lease":
        if holder.closed:
            return LEASE_CLOSED
        if holder.pid is not None and holder.start_time is not None and process_death(holder.pid, holder.start_time):
            return OWNER_GONE
        return None
    if holder.pid is None or holder.start_time is None:
        return DEAD_PID
    return process_death(holder.pid, holder.start_time)
