"""The one liveness rule: is the process we recorded (PID *and* start time) still that process, alive?

Every caller (the guard, register, clean, discovery, health, the signal path) asks this module, so there is one
tolerance and one set of reasons. Pure: the facts come from a probe (``probes.processes``) or a scan.
"""

from __future__ import annotations

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
