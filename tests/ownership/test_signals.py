"""The one signal function, on real processes this test started: escalation, identity, zombies and refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_watch.core import safety
from fleet_watch.probes import signals
from fleet_watch.probes.processes import process_facts
from fleet_watch.service.acting import rights, stop_owned
from tests.ownership.conftest import HERE, Procs, running, start_of, wait_for


def test_a_process_that_obeys_sigterm_gets_nothing_more(procs: Procs) -> None:
    proc, _port = procs.holder(obey=True)
    start = start_of(proc.pid)
    result = signals.stop(proc.pid, start, grace_s=10)
    assert (result.outcome, result.signals) == ("exited", ("SIGTERM",))
    assert not running(proc.pid, start)
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(procs: Procs) -> None:
    proc, _port = procs.holder()
    start = start_of(proc.pid)
    result = signals.stop(proc.pid, start, grace_s=0.3)
    assert (result.outcome, result.signals) == ("exited", ("SIGTERM", "SIGKILL"))
    assert result.reason == f"PID {proc.pid} exited after SIGKILL"
    assert result.waited_s >= 0.3
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_the_portable_path_escalates_the_same_way(procs: Procs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path for systems without pidfds (macOS): identity re-read before each kill(), bounded polling."""
    monkeypatch.delattr(os, "pidfd_open")
    proc, _port = procs.holder()
    start = start_of(proc.pid)
    result = signals.stop(proc.pid, start, grace_s=0.3)
    assert (result.outcome, result.signals) == ("exited", ("SIGTERM", "SIGKILL"))
    assert proc.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.parametrize("pidfd", [True, False])
def test_a_pid_whose_start_time_differs_is_never_signalled(procs: Procs, monkeypatch: pytest.MonkeyPatch,
                                                           pidfd: bool) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open")
    proc = procs.popen(["sleep", "600"])
    start = start_of(proc.pid)
    result = signals.stop(proc.pid, start - 1000, grace_s=0.1)  # the identity of an older process with this PID
    assert (result.outcome, result.signals) == ("already_gone", ())
    assert "now belongs to another process" in result.reason
    assert running(proc.pid, start)


def test_a_zombie_has_exited(procs: Procs) -> None:
    proc = procs.popen(["sleep", "600"])
    start = start_of(proc.pid)
    proc.send_signal(signal.SIGKILL)  # our own child, left unreaped: a zombie
    wait_for(lambda: (f := process_facts(proc.pid)) is not None and f.is_zombie, "the zombie")
    result = signals.stop(proc.pid, start, grace_s=0.1)
    assert (result.outcome, result.signals) == ("already_gone", ())
    assert result.reason == f"PID {proc.pid} had already exited (zombie)"
    assert result.gone


def test_a_process_that_exits_on_sigterm_into_a_zombie_counts_as_exited(procs: Procs) -> None:
    """Our own child stays a zombie after SIGTERM (nobody reaps it yet): that is an exit, not a survivor."""
    proc = procs.popen(["sleep", "600"])
    start = start_of(proc.pid)
    result = signals.stop(proc.pid, start, grace_s=10)
    assert (result.outcome, result.signals) == ("exited", ("SIGTERM",))
    assert process_facts(proc.pid) is not None  # still there, as a zombie, until we wait for it
    proc.wait(timeout=10)


def test_refusals_send_nothing(procs: Procs) -> None:
    proc = procs.popen(["sleep", "600"])
    start = start_of(proc.pid)
    # Itself and its ancestors: a child (under a shell that waits for it) asks to stop itself, then that shell.
    ask = ("import os; from fleet_watch.probes import signals; from fleet_watch.probes.processes import "
           "process_facts\nfor p in (os.getpid(), os.getppid()):\n"
           "    r = signals.stop(p, process_facts(p).start_time, grace_s=0.1); print(r.outcome, r.signals, r.reason)")
    shell = procs.popen(["bash", "-c", f'{sys.executable} -c "$0"; true', ask], stdout=subprocess.PIPE)
    assert shell.stdout is not None
    itself, ancestor = shell.stdout.readline().strip(), shell.stdout.readline().strip()
    assert itself.startswith("refused () PID ")
    assert itself.endswith(" is this Fleet Watch process itself")
    assert ancestor == (f"refused () PID {shell.pid} is an ancestor of this Fleet Watch process "
                        "(the shell or agent that ran it)")
    assert shell.wait(timeout=30) == 0
    init = signals.stop(1, start_of(1), grace_s=0.1)
    assert (init.outcome, init.reason) == ("refused", "PID 1 is init: never signalled")
    # The floor is a parameter: above this test's PID it refuses the test's own child (the CLI always uses 100).
    floor = signals.stop(proc.pid, start, grace_s=0.1, min_pid=proc.pid + 1)
    assert (floor.outcome, floor.signals) == ("refused", ())
    assert f"below {proc.pid + 1}" in floor.reason
    assert rights(False).min_pid == safety.MIN_PID == 100
    assert running(proc.pid, start)


def test_nothing_without_an_ownership_proof(procs: Procs) -> None:
    proc = procs.popen(["sleep", "600"])
    start = start_of(proc.pid)
    result = stop_owned(proc.pid, start, None, rights(False))
    assert (result.outcome, result.signals) == ("refused", ())
    assert "not Fleet Watch's" in result.reason
    assert running(proc.pid, start)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user (CI runs the suite "
                    "as root, inside a private PID namespace)")
def test_another_users_process_is_refused_unless_root_asks(procs: Procs, tmp_path: Path) -> None:
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="fleet-stubborn-"))  # the checkout may be unreadable for `nobody`
    shared.chmod(0o755)
    script = shared / "stubborn.py"
    shutil.copy(HERE / "stubborn.py", script)
    script.chmod(0o644)
    proc = procs.popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                        str(script)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip()  # listening: setpriv has switched users and exec'd
    shutil.rmtree(shared, ignore_errors=True)  # python has read it
    start = start_of(proc.pid)
    refused = signals.stop(proc.pid, start, grace_s=0.1)
    assert (refused.outcome, refused.signals) == ("refused", ())
    assert "belongs to uid 65534" in refused.reason
    assert running(proc.pid, start)
    allowed = signals.stop(proc.pid, start, grace_s=0.1, allow_other_users=True)
    assert (allowed.outcome, allowed.signals) == ("exited", ("SIGTERM", "SIGKILL"))
