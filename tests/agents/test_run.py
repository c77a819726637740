"""`fleet run` for real: a child that records what it saw, real signals (the suite runs in a private PID namespace,
scripts/test.sh), a real terminal for Ctrl-C, and two runs racing for one GPU device."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.helpers import bindable
from tests.conftest import Children

CHILD = Path(__file__).parent / "run_child.py"


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "FLEET_WATCH_HOME": str(home)}
    env.pop("FLEET_SESSION_ID", None)
    return env


def _wait_for(predicate: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


class Runs:
    """`fleet run` processes this test started (killed at teardown if still there)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "fleet_watch", "run", *args], env=_env(self.home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


@pytest.fixture
def runs(fleet_home: Path) -> Iterator[Runs]:
    started = Runs(fleet_home)
    try:
        yield started
    finally:
        started.close()


def test_child_registered_with_its_port_and_released_at_exit(fleet, runs: Runs, tmp_path: Path) -> None:
    go = tmp_path / "go"
    run = runs.start("--name", "dev server", "--workstream", "web", "--port", "auto", "--session-id", "s-run",
                     "--", sys.executable, str(CHILD), str(tmp_path), "--port={port}", "--exit", "5", "--go", str(go))
    (child,) = _wait_for(lambda: _records(tmp_path), "the child to start")
    port = int(child["port_env"])
    assert f"--port={port}" in child["argv"]
    assert child["session_env"] == "s-run"
    assert bindable(port)  # auto picked a port that binds (nothing listens on it: the child does not)

    status = fleet("status", "--json").json()
    (proc,) = status["processes"]
    assert (proc["pid"], proc["ports"], proc["name"], proc["session_id"]) == (child["pid"], [port], "dev server",
                                                                              "s-run")
    assert child["pid"] != run.pid  # the command itself is registered, not fleet run
    guard = fleet("guard", "--port", str(port), "--json").json()
    assert guard["checks"]["port"]["holder"]["pid"] == child["pid"]

    go.touch()
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 5, stderr
    assert f"started PID {child['pid']} on port {port}" in stderr
    assert fleet("status", "--json").json()["processes"] == []
    events = [e["event_type"] for e in fleet("history", "--json").json()]
    assert events[:2] == ["RELEASE", "REGISTER"]  # newest first


def test_denied_runs_never_start(fleet, children: Children, runs: Runs, tmp_path: Path) -> None:
    server = children.listener(0)
    held = server.bound_ports[0]  # type: ignore[attr-defined]
    assert fleet("register", "--pid", str(server.pid), "--name", "ollama", "--workstream", "x", "--port",
                 str(held)).returncode == 0
    repo = tmp_path / "repo"
    repo.mkdir()
    sleeper = children.sleeper()
    assert fleet("register", "--pid", str(sleeper.pid), "--name", "aider", "--workstream", "x", "--repo", str(repo),
                 "--session-id", "other").returncode == 0
    reserved = fleet("claim", "--port", "auto", "--session-id", "someone-else", "--json").json()["ports"][0]
    cases = {("--port", str(held)): f"claimed by PID {server.pid} (ollama)",
             ("--port", str(reserved)): "claimed by reservation 1 of session someone-else",
             ("--repo", str(repo / "src")): f"locked by PID {sleeper.pid} (aider)",
             ("--gpu", "60000"): "GPU budget exceeded"}
    for extra, why in cases.items():
        run = runs.start("--name", "n", "--workstream", "w", *extra, "--", sys.executable, str(CHILD),
                         str(tmp_path))
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 1, stderr
        assert "DENY" in stderr
        assert why in stderr
        assert "the command was not started" in stderr
        assert _records(tmp_path) == []
    r = fleet("run", "--name", "n", "--workstream", "w", "--port", "0", "--", "true")
    assert r.returncode == 2
    assert fleet("run", "--name", "n", "--workstream", "w", "--", sys.executable, "-c", "print('{port}')"
                 ).returncode == 2
    missing = fleet("run", "--name", "n", "--workstream", "w", "--", str(tmp_path / "no-such-program"))
    assert missing.returncode == 3
    # What the register after the start would refuse is refused before the start (it used to leave the child
    # running, unregistered).
    for bad in (("--priority", "9"), ("--name", "a\nb"), ("--session-id", "s\x1b[2J")):
        refused = fleet("run", "--workstream", "w", *(("--name", "n") if bad[0] != "--name" else ()), *bad, "--",
                        sys.executable, str(CHILD), str(tmp_path))
        assert refused.returncode == 2, refused.stderr
        assert _records(tmp_path) == []
    assert fleet("status", "--json").json()["process_count"] == 2  # the two the test registered, nothing else


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_are_forwarded_and_exit_codes_passed_through(fleet, runs: Runs, tmp_path: Path,
                                                             signo: signal.Signals) -> None:
    run = runs.start("--name", "job", "--workstream", "w", "--", sys.executable, str(CHILD), str(tmp_path),
                     "--go", str(tmp_path / "never"))
    (child,) = _wait_for(lambda: _records(tmp_path), "the child to start")
    _wait_for(lambda: fleet("status", "--json").json()["processes"], "the registration")
    os.kill(run.pid, signo)
    _, stderr = run.communicate(timeout=60)
    assert (tmp_path / f"{child['pid']}.signals").read_text() == f"{signo.name}\n"
    assert run.returncode == 100 + signo, stderr
    assert fleet("status", "--json").json()["processes"] == []


def test_a_child_killed_by_a_signal_exits_128_plus_n(fleet, runs: Runs, tmp_path: Path) -> None:
    run = runs.start("--name", "job", "--workstream", "w", "--", "sh", "-c", f"touch {tmp_path}/up; exec sleep 60")
    _wait_for(lambda: (tmp_path / "up").exists(), "the child to start")
    _wait_for(lambda: fleet("status", "--json").json()["processes"], "the registration")
    (proc,) = fleet("status", "--json").json()["processes"]
    os.kill(proc["pid"], signal.SIGKILL)  # the registered child (a process this test started, through fleet run)
    run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGKILL
    assert fleet("status", "--json").json()["processes"] == []


def test_ctrl_c_in_a_terminal_reaches_the_child_once(fleet_home: Path, tmp_path: Path) -> None:
    """The terminal sends SIGINT to the whole foreground group, the child included: fleet run must not send it a
    second one. A SIGTERM sent to fleet run afterwards is forwarded, so the child's log must read INT then TERM."""
    pid, master = pty.fork()
    if pid == 0:  # the child of the fork: a session leader on the pty, as a shell would be
        os.execve(sys.executable, [sys.executable, "-m", "fleet_watch", "run", "--name", "tty", "--workstream", "w",
                                   "--", sys.executable, str(CHILD), str(tmp_path), "--stay-on-int", "--go",
                                   str(tmp_path / "never")], _env(fleet_home))
    try:
        (child,) = _wait_for(lambda: _records(tmp_path), "the child to start")
        log = tmp_path / f"{child['pid']}.signals"
        os.write(master, b"\x03")
        _wait_for(lambda: log.exists() and log.read_text(), "the child to get the terminal's SIGINT")
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 100 + signal.SIGTERM
        assert log.read_text() == "SIGINT\nSIGTERM\n"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(master)


def _readline_until(proc: subprocess.Popen[str], needle: str, timeout: float = 60.0) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stderr], [], [], left)[0]:
            raise AssertionError(f"no {needle!r} in {seen!r}")
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"stderr closed before {needle!r}: {seen!r}")
        seen += line


def test_gpu_starts_on_one_device_go_one_after_the_other(fleet, fleet_home: Path, runs: Runs,
                                                        tmp_path: Path) -> None:
    (fleet_home / "locks").mkdir(mode=0o700)
    held = os.open(fleet_home / "locks" / "gpu-all.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)  # as if a third start were between its decision and its registration
    go = tmp_path / "go"
    try:
        procs = [runs.start("--name", f"model-{i}", "--workstream", "w", "--gpu", "20000", "--", sys.executable,
                            str(CHILD), str(tmp_path), "--go", str(go)) for i in range(2)]
        for proc in procs:
            _readline_until(proc, "waiting for the previous start on GPU all to register its claim")
        assert _records(tmp_path) == []  # both wait: neither has decided, let alone started
    finally:
        os.close(held)
    _wait_for(lambda: len(_records(tmp_path)) == 2, "both children")
    events = fleet("history", "--type", "REGISTER", "--json").json()
    first, second = (e["pid"] for e in reversed(events))  # oldest first
    by_pid = {r["pid"]: r for r in _records(tmp_path)}
    assert first in by_pid[second]["seen_gpu_pids"]  # the second started only once the first's claim was in
    go.touch()
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0


def test_gpu_starts_that_do_not_both_fit_start_one(fleet, runs: Runs, tmp_path: Path) -> None:
    """57344 MB allocatable: two concurrent 40000 MB starts. Serialised, the second decides against a ledger that
    holds the first, and its command never starts."""
    go = tmp_path / "go"
    procs = [runs.start("--name", f"model-{i}", "--workstream", "w", "--gpu", "40000", "--", sys.executable,
                        str(CHILD), str(tmp_path), "--go", str(go)) for i in range(2)]
    _wait_for(lambda: any(p.poll() is not None for p in procs), "one run to be refused")
    refused = [p for p in procs if p.poll() is not None]
    assert len(refused) == 1
    _, stderr = refused[0].communicate(timeout=60)
    assert refused[0].returncode == 1
    assert "GPU budget exceeded" in stderr
    _wait_for(lambda: _records(tmp_path), "the other child")
    go.touch()
    for proc in procs:
        proc.communicate(timeout=60)
    assert len(_records(tmp_path)) == 1


def test_a_command_with_a_line_break_runs_and_is_recorded_on_one_line(fleet, fleet_home: Path) -> None:
    """`bash -c $'a\nb'` is a legitimate command; the registry records it with the break escaped, instead of the
    register refusing it after the child had started."""
    r = fleet("run", "--name", "two-lines", "--workstream", "w", "--", sys.executable, "-c",
              "import sys\nsys.exit(7)")
    assert r.returncode == 7, r.stderr
    events = [e["event_type"] for e in fleet("history", "--json").json()]
    assert events[:2] == ["RELEASE", "REGISTER"]
