"""Real processes for the ownership tests: orphans (the parent exits, the child is re-parented), children of a live
parent, busy loops, holders that ignore SIGTERM, and edits of the registry's start_time and heartbeat columns.

Only what these fixtures started is ever signalled, and only by identity (PID and start time): at teardown each
process still running with its recorded start time is killed, and reaped when it is our child (inside the suite's
PID namespace every orphan is re-parented to the test process, PID 1 there).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.clock import iso_utc
from fleet_watch.core import liveness, safety
from fleet_watch.probes.processes import process_facts

HERE = Path(__file__).parent
AGENT = "fake-agent-ownership"  # the stand-in agent CLI's name: the only agent session these tests' config knows
BUSY = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass"


@pytest.fixture(autouse=True)
def pids_past_the_floor() -> None:
    """Inside the suite's private PID namespace the first processes get small PIDs, which the signal path (rightly)
    refuses (under 100). Fork short-lived processes until new PIDs are past the floor (bounded): the rule stays real,
    and these tests act on processes they start afterwards."""
    for _ in range(4 * safety.MIN_PID):
        probe = subprocess.Popen(["true"])
        probe.wait()
        if probe.pid >= safety.MIN_PID:
            return
    raise AssertionError("PIDs did not pass the floor")


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # bounded polling
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def start_of(pid: int) -> float:
    facts = process_facts(pid)
    assert facts is not None, f"PID {pid} is not running"
    return facts.start_time


def running(pid: int, start_time: float) -> bool:
    """The one liveness rule: this identity still runs (a zombie has exited)."""
    facts = process_facts(pid)
    return facts is not None and liveness.death_reason(
        start_time, exists=True, start_time=facts.start_time, is_zombie=facts.is_zombie) is None


def ppid_of(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2:].split()[1])


class Procs:
    """Processes a test started, by identity; all are stopped and reaped at teardown (and only these)."""

    def __init__(self) -> None:
        self.identities: list[tuple[int, float]] = []
        self.popens: list[subprocess.Popen[str]] = []

    def track(self, pid: int) -> int:
        self.identities.append((pid, start_of(pid)))
        return pid

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, text=True, **kw)
        self.popens.append(proc)
        self.track(proc.pid)
        return proc

    def orphan(self, command: str, *, user: str | None = None) -> int:
        """``command`` started in the background by a shell that then exits: the child is re-parented (to PID 1, or
        to a subreaper) and its session leader, the shell, is gone. Returns the child's PID."""
        prefix = f"setpriv --reuid={user} --regid={user} --clear-groups " if user else ""
        shell = subprocess.Popen(["bash", "-c", f"{prefix}{command} </dev/null >/dev/null 2>&1 & echo $!"],
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert shell.stdout is not None
        pid = int(shell.stdout.readline())
        shell.wait(timeout=30)
        shell.stdout.close()
        self.track(pid)
        wait_for(lambda: ppid_of(pid) not in (shell.pid, None), "the orphan to be re-parented")
        if user is not None:
            wait_for(lambda: getattr(process_facts(pid), "uid", None) == int(user), "setpriv to switch users")
        return pid

    def attached(self, command: str) -> tuple[subprocess.Popen[str], int]:
        """``command`` as the child of a shell that stays alive (its parent chain is attached)."""
        shell = self.popen(["bash", "-c", f"{command} </dev/null >/dev/null 2>&1 & echo $!; wait"],
                           stdout=subprocess.PIPE)
        assert shell.stdout is not None
        return shell, self.track(int(shell.stdout.readline()))

    def busy(self, *, argv0: str | None = None) -> subprocess.Popen[str]:
        """A process burning one core for up to 10 minutes."""
        if argv0:
            return self.popen(["bash", "-c", f'exec -a "$0" {shlex.quote(sys.executable)} -c {shlex.quote(BUSY)}',
                               argv0])
        return self.popen([sys.executable, "-c", BUSY])

    def holder(self, *, obey: bool = False) -> tuple[subprocess.Popen[str], int]:
        """A process listening on a free loopback port that (unless ``obey``) ignores SIGTERM; returns its port."""
        argv = [sys.executable, str(HERE / "stubborn.py"), *(["--obey"] if obey else [])]
        proc = self.popen(argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline().split()[0])

    def cleanup(self) -> None:
        for pid, start in self.identities:
            if running(pid, start):
                os.kill(pid, signal.SIGKILL)
        for proc in self.popens:
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        ours = {proc.pid for proc in self.popens}
        for pid, _ in self.identities:
            deadline = time.monotonic() + 10
            while pid not in ours and time.monotonic() < deadline:  # orphans re-parented to us: reap them
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break  # not our child: its own parent reaps it
                if done:
                    break
                time.sleep(0.02)


@pytest.fixture
def procs() -> Iterator[Procs]:
    started = Procs()
    try:
        yield started
    finally:
        started.cleanup()


class Registry:
    """Direct edits of the registry file, as the issue asks: PID reuse and stale heartbeats are simulated here."""

    def __init__(self, home: Path) -> None:
        self.path = home / "registry.db"

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()

    def age_heartbeat(self, pid: int, seconds: float) -> None:
        self.execute("UPDATE processes SET last_heartbeat = ? WHERE pid = ?", (iso_utc(time.time() - seconds), pid))

    def shift_start_time(self, pid: int, by: float = -1000.0) -> None:
        """The row now names a process that started at another time: its PID "belongs to someone else"."""
        self.execute("UPDATE processes SET start_time = start_time + ? WHERE pid = ?", (by, pid))

    def add_lease(self, session_id: str, owner_pid: int | None, *, closed: bool = False) -> None:
        """A session lease written through the store's own functions (the schema and migrations are the real ones)."""
        from fleet_watch.store import leases
        from fleet_watch.store.connection import immediate, open_db

        conn = open_db(self.path)
        try:
            with immediate(conn):
                at = iso_utc(time.time())
                owner_start = start_of(owner_pid) if owner_pid is not None else None
                lease_id = leases.insert(conn, session_id=session_id, owner_pid=owner_pid,
                                         owner_start_time=owner_start, owner_uid=os.geteuid(), at=at)
                if closed:
                    leases.close(conn, lease_id, at)
        finally:
            conn.close()

    def rows(self) -> list[tuple[int, str]]:
        conn = sqlite3.connect(self.path)
        try:
            return list(conn.execute("SELECT pid, name FROM processes ORDER BY id"))
        finally:
            conn.close()


@pytest.fixture
def registry(fleet_home: Path) -> Registry:
    return Registry(fleet_home)


@pytest.fixture
def agent_patterns(fleet_home: Path) -> None:
    """Only this test's stand-in agent counts as an agent session (never a real agent on the machine)."""
    path = fleet_home / "config.json"
    doc = json.loads(path.read_text())
    doc["session_patterns"] = [{"name": "Fake agent", "kind": "fake-agent", "process_match": f"(^|/){AGENT}(\\s|$)"}]
    path.write_text(json.dumps(doc))


@pytest.fixture
def busy_agent(tmp_path: Path) -> str:
    """An executable named like the stand-in agent that burns one core for up to 10 minutes."""
    path = tmp_path / "bin" / AGENT
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{BUSY}\n")
    path.chmod(0o755)
    return str(path)
