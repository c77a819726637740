"""``fleet run``: decide with the guard, start the command only when allowed, hold its claims while it runs.

1. With a GPU claim, take the device's start lock first (``flock`` on ``<home>/locks/gpu-<device>.lock``): a model
   load is when two servers mis-size each other, so the next starter on that device decides only after the
   previous one has registered its claim and the ledger counts it.
2. Decide exactly as ``fleet guard`` does (``Fleet.evaluate``); on a denial nothing is started.
3. Start the child (``{port}`` in its arguments replaced, ``PORT`` set) and register it at once under its real
   identity (PID + start time, ``Fleet.register``). Should the registration lose a race, the child, which is ours
   and not yet told anything, is stopped and the run fails like a denial.
4. Supervise: heartbeat every ``HEARTBEAT_S``; forward SIGINT/SIGTERM/SIGHUP sent to us (a signal the terminal sent
   to the whole process group has reached the child already and is not sent twice); when the child exits, release
   everything and return its exit status (128 + N when a signal N ended it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from fleet_watch.core import inputs
from fleet_watch.errors import DatabaseError, NotFound, Unavailable, UsageError

if TYPE_CHECKING:
    from fleet_watch.models import Reservation
    from fleet_watch.service.fleet import Fleet
    from fleet_watch.service.preflight import GuardResult

HEARTBEAT_S = 30.0  # well inside the 180 s after which a heartbeat counts as expired
START_LOCK_WAIT_S = 600.0  # the longest a start waits for the previous one on its GPU device
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SI_KERNEL = 0x80  # si_code of a signal the kernel (a terminal) sent, to the whole foreground process group
Say = Callable[[str], None]


class RunRequest(NamedTuple):
    argv: list[str]
    name: str
    workstream: str
    port: int | None = None
    auto_port: bool = False
    gpu_mb: int | None = None
    gpu_device: int | None = None
    repo: str | None = None
    model: str | None = None
    session_id: str | None = None
    priority: int = 3


@dataclass(slots=True)
class Started:
    child: subprocess.Popen[bytes]
    port: int | None
    registered: bool
    notes: list[str] = field(default_factory=list)
    signal_mask: set[int | signal.Signals] = field(default_factory=set)  # to restore once the child is gone


class Denied(NamedTuple):
    result: GuardResult
    port: int | None


def validate(req: RunRequest) -> None:
    """Everything the register after the start would refuse is refused here, before anything starts."""
    if not req.argv:
        raise UsageError("give the command to run after --")
    inputs.text("--name", req.name)
    inputs.text("--workstream", req.workstream)
    inputs.priority(req.priority)
    if req.session_id is not None:
        inputs.text("--session-id", req.session_id)
    if req.model is not None:
        inputs.text("--model", req.model, max_len=inputs.MAX_PATH)
    if req.gpu_mb is not None and req.gpu_mb < 0:
        raise UsageError(f"--gpu must be >= 0, got {req.gpu_mb}")
    if req.port is None and not req.auto_port and any("{port}" in a for a in req.argv):
        raise UsageError("the command uses {port}: give --port N or --port auto")


# -- the per-device start lock ----------------------------------------------------------------------------------

@contextlib.contextmanager
def start_lock(home: Path, device: str, say: Say) -> Iterator[None]:
    """Hold the start lock of ``device`` (``all`` for the single pool). The kernel drops it if we die."""
    import fcntl

    folder = home / "locks"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder / f"gpu-{device}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise Unavailable(f"cannot open the GPU start lock in {folder}: {err.strerror}") from err
    try:
        deadline = time.monotonic() + START_LOCK_WAIT_S
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise Unavailable(f"cannot take the GPU start lock: {err.strerror}") from err
            if not announced:
                say(f"waiting for the previous start on GPU {device} to register its claim")
                announced = True
            if time.monotonic() > deadline:
                raise Unavailable(f"another start on GPU {device} held the start lock for {START_LOCK_WAIT_S:g} s")
            time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -- deciding and starting --------------------------------------------------------------------------------------

def _server_hints(argv: list[str]) -> tuple[str | None, str | None, int | None, str | None, str | None]:
    """framework, model, context, KV type and flash attention from the command line of a model server."""
    from fleet_watch.core.estimator.commandline import parse_command

    parsed = parse_command(shlex.join(argv))
    if parsed is None:
        return None, None, None, None, None
    return parsed.framework, parsed.model, parsed.ctx, parsed.kv_dtype, parsed.flash_attn


def _pick_port(fleet: Fleet, req: RunRequest) -> int:
    from fleet_watch.service.preflight import GuardRequest, evaluate

    free = evaluate(fleet, GuardRequest(session_id=req.session_id)).state["safe_ports"]
    if not free:
        raise Unavailable("--port auto: no free port found among the preferred ports and the scan after them")
    return int(free[0])


def _decide(fleet: Fleet, req: RunRequest, port: int | None) -> tuple[GuardResult, int]:
    """The guard's verdict, and the GPU MB to claim: --gpu, else the model's working set when one is named."""
    from fleet_watch.service.preflight import GuardRequest, evaluate

    framework, cmd_model, ctx, kv, flash = _server_hints(req.argv)
    model = req.model or cmd_model
    result = evaluate(fleet, GuardRequest(port=port, repo=req.repo, gpu_mb=req.gpu_mb, gpu_device=req.gpu_device,
                                         framework=framework if model else None, model=model,
                                         ctx=ctx if model else None, kv_dtype=kv if model else None,
                                         flash_attn=flash if model else None, session_id=req.session_id))
    gpu = result.checks.get("gpu") or {}
    claim = req.gpu_mb if req.gpu_mb is not None else int(gpu.get("requested_mb") or 0)
    return result, claim


def _child_env(port: int | None, session_id: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if port is not None:
        env["PORT"] = str(port)
    if session_id:
        env["FLEET_SESSION_ID"] = session_id  # the child's own fleet calls count as this session
    return env


def _spawn(argv: list[str], env: dict[str, str], mask: set[int | signal.Signals]) -> subprocess.Popen[bytes]:
    def restore_mask() -> None:  # we block the forwarded signals to wait for them; the child must not inherit that
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    try:
        # preexec_fn is safe here: fleet run has no other threads that could hold a lock across the fork.
        return subprocess.Popen(argv, env=env, preexec_fn=restore_mask)
    except FileNotFoundError as err:
        raise NotFound(f"command not found: {argv[0]}") from err
    except PermissionError as err:
        raise UsageError(f"cannot execute {argv[0]}: {err.strerror}") from err


RESERVATION_TTL_S = 120  # covers the start and the registration; an abandoned one lapses by itself


def run_session(req: RunRequest) -> str:
    """The session the run reserves and registers under: the caller's, else one of this run's own, so that the
    registration takes the reservation over (a session's register takes over its own reservations)."""
    return req.session_id or f"run-{os.getpid()}"


def hold_reservation(fleet: Fleet, req: RunRequest, port: int | None, gpu_mb: int) -> Reservation | None:
    """Reserve the run's resources before the child exists (``fleet claim``'s reservation, decided like the guard),
    so that nothing can take them between the decision and the registration: a lost race is a refusal (exit 1)
    before anything starts. None where there is nothing to hold."""
    from fleet_watch.service.claims import reserve

    if port is None and req.repo is None and not gpu_mb:
        return None
    return reserve(fleet, ports=(port,) if port is not None else (), repos=(req.repo,) if req.repo else (),
                   gpu_mb=gpu_mb, gpu_device=req.gpu_device, ttl_s=RESERVATION_TTL_S, session_id=run_session(req))


def drop_reservation(fleet: Fleet, reservation: Reservation | None) -> None:
    """Give up what is left of the reservation: the registration took it over, or the run did not start."""
    from fleet_watch.service.claims import release

    if reservation is None:
        return
    with contextlib.suppress(NotFound):  # taken over whole by the registration
        release(fleet, reservation.reservation_id)

def launch(fleet: Fleet, req: RunRequest, say: Say) -> Started | Denied:
    """Decide, and start and register the child when allowed. Once the child is started, the forwarded signals
    stay blocked (``supervise`` waits for them); until then, Ctrl-C stops a run that waits for its turn."""
    validate(req)
    device = fleet.device_key(req.gpu_device)
    serialise = bool(req.gpu_mb) or (req.gpu_mb is None and bool(req.model or _server_hints(req.argv)[1]))
    lock = start_lock(fleet.settings.home, device or "all", say) if serialise else contextlib.nullcontext()
    with lock:
        port = _pick_port(fleet, req) if req.auto_port else req.port
        result, gpu_mb = _decide(fleet, req, port)
        if not result.allowed:
            return Denied(result, port)
        reservation = hold_reservation(fleet, req, port, gpu_mb)
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [*FORWARDED, signal.SIGCHLD])
        try:
            argv = [a.replace("{port}", str(port)) for a in req.argv] if port is not None else list(req.argv)
            child = _spawn(argv, _child_env(port, run_session(req)), previous_mask)
            registered = _register(fleet, req, child, port, gpu_mb, argv)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            raise
        finally:
            drop_reservation(fleet, reservation)
    notes = [] if gpu_mb == req.gpu_mb or not gpu_mb else [f"claimed {gpu_mb}MB of GPU memory for the model"]
    return Started(child, port, registered, notes, previous_mask)


def _register(fleet: Fleet, req: RunRequest, child: subprocess.Popen[bytes], port: int | None, gpu_mb: int,
              argv: list[str]) -> bool:
    """Register the child; False when it was gone before it could be (its exit status still counts)."""
    try:
        fleet.register(pid=child.pid, name=req.name, workstream=req.workstream,
                       ports=(port,) if port is not None else (), gpu_mb=gpu_mb,
                       repos=(req.repo,) if req.repo is not None else (), priority=req.priority,
                       session_id=run_session(req), model=req.model, start_cmd=_recorded(argv), source="run",
                       gpu_device=req.gpu_device)
        return True
    except NotFound:
        return False
    except BaseException:
        _stop(child)  # ours, started a moment ago, identified by the Popen handle we hold: never left unregistered
        raise


def _recorded(argv: list[str]) -> str:
    """The command as the registry records it: one line, within the start command's limit."""
    return inputs.one_line(shlex.join(argv))[:32768]


def _stop(child: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# -- supervising ------------------------------------------------------------------------------------------------

def exit_status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def supervise(fleet: Fleet, started: Started, say: Say) -> int:
    """Heartbeat and forward signals until the child exits; then release its claims and return its status."""
    child = started.child
    beating = started.registered
    next_beat = time.monotonic() + HEARTBEAT_S
    try:
        while child.poll() is None:
            wait = max(0.0, min(next_beat - time.monotonic(), 1.0))
            info = _wait_signal(wait)
            if info is not None and info[0] != signal.SIGCHLD and child.poll() is None:
                signo, from_kernel = info
                if not from_kernel:
                    child.send_signal(signo)  # ours: the Popen handle, not yet reaped, so the PID is still its
            if beating and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_S
                beating = _heartbeat(fleet, child.pid, say)
        return exit_status(child.returncode)
    finally:
        _release(fleet, child.pid, started.registered, say)
        _drain()  # a signal that came as the child exited was for the child: it must not end us now
        signal.pthread_sigmask(signal.SIG_SETMASK, started.signal_mask)


def _drain() -> None:
    for _ in range(64):
        pending = signal.sigpending() & {*FORWARDED, signal.SIGCHLD}
        if not pending:
            return
        signal.sigwait(pending)


def _wait_signal(timeout: float) -> tuple[int, bool] | None:
    """The next blocked signal (number, sent by the kernel to the whole group?), or None after ``timeout``."""
    if hasattr(signal, "sigtimedwait"):
        info = signal.sigtimedwait([*FORWARDED, signal.SIGCHLD], timeout)
        return None if info is None else (info.si_signo, info.si_code == _SI_KERNEL)
    # macOS has no sigtimedwait: poll the pending set (no sender information: forward them all).
    deadline = time.monotonic() + timeout
    while True:
        pending = signal.sigpending()
        for signo in FORWARDED:
            if signo in pending:
                signal.sigwait([signo])
                return int(signo), False
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _heartbeat(fleet: Fleet, pid: int, say: Say) -> bool:
    try:
        fleet.heartbeat(pid)
        return True
    except NotFound:
        say(f"PID {pid} is no longer registered (released or cleaned elsewhere); heartbeats stop")
        return False
    except DatabaseError as err:
        say(f"heartbeat failed, will retry: {err}")
        return True


def _release(fleet: Fleet, pid: int, registered: bool, say: Say) -> None:
    if not registered:
        return
    try:
        fleet.release_pid(pid)
    except NotFound:
        pass  # released or cleaned elsewhere meanwhile
    except DatabaseError as err:
        say(f"could not release PID {pid} ({err}); `fleet clean` drops it now that it has exited")


def describe_start(started: Started) -> str:
    where = f" on port {started.port}" if started.port is not None else ""
    return f"started PID {started.child.pid}{where}" + "".join(f"; {n}" for n in started.notes)

