"""The one way Fleet Watch signals a process: ``stop(pid, start_time, ...)``.

Only an identity (PID *and* start time) is ever signalled, never a bare PID:

- On Linux the process is opened as a pidfd (``os.pidfd_open``), its start time is read again *after* opening, and
  every signal goes through that descriptor (``signal.pidfd_send_signal``). A pidfd names one process for good: if
  the PID is recycled after the re-check, the signal fails with ESRCH instead of reaching the newcomer. The exit is
  awaited by polling the descriptor (it turns readable when the process exits; a zombie has exited).
- Elsewhere (or on a kernel without pidfds) the identity is re-read immediately before each ``os.kill``, and the exit
  is awaited by bounded polling.

Before anything, ``core.safety.refusal`` is asked: never PID 1, a PID under ``min_pid`` (100 for every command),
this process or any of its ancestors, or another user's process (unless root *and* ``allow_other_users``).
SIGTERM first, then SIGKILL after the grace period; the result says what was sent and what happened. Whether Fleet
Watch may act on the process at all (it registered it, or it belongs to the user's agent session) is the caller's
question, asked before calling this.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable, Collection
from typing import NamedTuple

from fleet_watch.core import liveness, safety
from fleet_watch.probes.ancestry import own_ancestors
from fleet_watch.probes.processes import ProcessFacts, process_facts

KILL_WAIT_S = 5.0  # after SIGKILL: an exit takes milliseconds unless the process is stuck in the kernel (D state)
POLL_S = 0.05  # the portable path's polling step

# Outcomes
EXITED = "exited"  # it was signalled and is gone (or a zombie)
ALREADY_GONE = "already_gone"  # dead, a zombie or its PID reused before any signal: nothing was sent
REFUSED = "refused"  # the safety rule forbids it: nothing was sent
SURVIVED = "survived"  # still running after SIGKILL and the wait
FAILED = "failed"  # the kernel refused the signal (EPERM) or another OS error


class StopResult(NamedTuple):
    pid: int
    start_time: float
    outcome: str
    signals: tuple[str, ...]  # the signals actually delivered, in order
    reason: str  # one line: what happened, or why nothing was sent
    waited_s: float = 0.0

    @property
    def gone(self) -> bool:
        """The process no longer runs (whether or not we signalled it)."""
        return self.outcome in (EXITED, ALREADY_GONE)

    def to_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "start_time": self.start_time, "outcome": self.outcome, "signals": list(self.signals),
                "reason": self.reason, "waited_s": round(self.waited_s, 3)}


def _death(start_time: float, facts: ProcessFacts | None) -> str | None:
    if facts is None:
        return liveness.death_reason(start_time, exists=False, start_time=None, is_zombie=False)
    return liveness.death_reason(start_time, exists=True, start_time=facts.start_time, is_zombie=facts.is_zombie)


_GONE_TEXT = {liveness.DEAD_PID: "was no longer running", liveness.ZOMBIE: "had already exited (zombie)",
              liveness.PID_REUSED: "now belongs to another process (start time differs): not signalled"}


def _gone(pid: int, start_time: float, why: str, sent: tuple[str, ...] = (), waited: float = 0.0) -> StopResult:
    if sent:
        return StopResult(pid, start_time, EXITED, sent, f"PID {pid} exited after {sent[-1]}", waited)
    return StopResult(pid, start_time, ALREADY_GONE, sent, f"PID {pid} {_GONE_TEXT.get(why, why)}", waited)


def stop(pid: int, start_time: float, *, grace_s: float, kill_wait_s: float = KILL_WAIT_S,
         min_pid: int = safety.MIN_PID, allow_other_users: bool = False,
         ancestors: Collection[int] | None = None, monotonic: Callable[[], float] = time.monotonic) -> StopResult:
    """SIGTERM, up to ``grace_s`` for the exit, then SIGKILL and up to ``kill_wait_s``; see the module docstring."""
    facts = process_facts(pid)
    why = _death(start_time, facts)
    if why is not None:
        return _gone(pid, start_time, why)
    assert facts is not None
    refused = safety.refusal(pid, target_uid=facts.uid, own_pid=os.getpid(),
                             own_ancestors=own_ancestors() if ancestors is None else ancestors,
                             euid=os.geteuid(), allow_other_users=allow_other_users, min_pid=min_pid)
    if refused is not None:
        return StopResult(pid, start_time, REFUSED, (), refused)
    if sys.platform.startswith("linux") and hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return _gone(pid, start_time, liveness.DEAD_PID)
        except OSError:
            fd = -1  # no pidfds on this kernel (ENOSYS) or not allowed: the portable path
        if fd >= 0:
            try:
                return _stop_pidfd(fd, pid, start_time, grace_s, kill_wait_s, monotonic)
            finally:
                os.close(fd)
    return _stop_portable(pid, start_time, grace_s, kill_wait_s, monotonic)


def _stop_pidfd(fd: int, pid: int, start_time: float, grace_s: float, kill_wait_s: float,
                monotonic: Callable[[], float]) -> StopResult:
    # The descriptor is open: re-read the identity now. If it still matches, the pidfd names the recorded process.
    why = _death(start_time, process_facts(pid))
    if why is not None:
        return _gone(pid, start_time, why)
    began = monotonic()
    sent: list[str] = []
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:  # it exited since the last check: nothing reached anyone else
            return StopResult(pid, start_time, EXITED if sent else ALREADY_GONE, tuple(sent),
                              f"PID {pid} exited before {sig.name} was delivered", monotonic() - began)
        except OSError as err:
            return StopResult(pid, start_time, FAILED, tuple(sent),
                              f"{sig.name} to PID {pid} failed: {err.strerror or err}", monotonic() - began)
        sent.append(sig.name)
        if _pidfd_exited(fd, wait_s):
            return StopResult(pid, start_time, EXITED, tuple(sent), f"PID {pid} exited after {sig.name}",
                              monotonic() - began)
    return _survived(pid, start_time, tuple(sent), kill_wait_s, monotonic() - began)


def _survived(pid: int, start_time: float, sent: tuple[str, ...], kill_wait_s: float, waited: float) -> StopResult:
    return StopResult(pid, start_time, SURVIVED, sent,
                      f"PID {pid} still runs {kill_wait_s:g}s after SIGKILL (stuck in the kernel?)", waited)


def _pidfd_exited(fd: int, timeout_s: float) -> bool:
    """Wait (bounded) for the pidfd to turn readable: the process has exited (a zombie counts)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


def _stop_portable(pid: int, start_time: float, grace_s: float, kill_wait_s: float,
                   monotonic: Callable[[], float]) -> StopResult:
    began = monotonic()
    sent: list[str] = []
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        why = _death(start_time, process_facts(pid))  # immediately before kill(): the identity again
        if why is not None:
            return _gone(pid, start_time, why, tuple(sent), monotonic() - began)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return _gone(pid, start_time, liveness.DEAD_PID, tuple(sent), monotonic() - began)
        except OSError as err:
            return StopResult(pid, start_time, FAILED, tuple(sent),
                              f"{sig.name} to PID {pid} failed: {err.strerror or err}", monotonic() - began)
        sent.append(sig.name)
        deadline = monotonic() + wait_s
        while True:  # bounded: until the exit or the deadline
            if _death(start_time, process_facts(pid)) is not None:
                return StopResult(pid, start_time, EXITED, tuple(sent), f"PID {pid} exited after {sig.name}",
                                  monotonic() - began)
            if monotonic() >= deadline:
                break
            time.sleep(POLL_S)
    return _survived(pid, start_time, tuple(sent), kill_wait_s, monotonic() - began)
