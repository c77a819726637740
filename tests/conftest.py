"""Shared fixtures: a private state directory per test, the real CLI as a subprocess, real children.

Tests that start processes only ever signal the processes they started themselves; `.ci/run` runs the
whole suite inside a private PID namespace (unshare --pid --fork --mount-proc) as a second fence.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HELPERS = Path(__file__).parent / "helpers"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def fleet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh FLEET_WATCH_HOME with a fixed, machine-independent GPU pool (written as a user config)."""
    home = tmp_path / "fleet-home"
    home.mkdir(mode=0o700)
    (home / "config.json").write_text(json.dumps({"gpu_total_mb": 65536, "gpu_reserve_mb": 8192}))
    monkeypatch.setenv("FLEET_WATCH_HOME", str(home))
    monkeypatch.delenv("FLEET_SESSION_ID", raising=False)
    monkeypatch.delenv("TERM_SESSION_ID", raising=False)
    return home


def run_fleet(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 60,
              input: str | None = None) -> CliResult:
    """Run the real ``fleet`` CLI (``python -m fleet_watch``) as a child process."""
    full_env = {**os.environ, "FLEET_WATCH_HOME": str(home), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "fleet_watch", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, input=input)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def fleet(fleet_home: Path):  # type: ignore[no-untyped-def]
    """A ``run_fleet`` bound to this test's home."""

    def _run(*args: str, **kw: Any) -> CliResult:
        return run_fleet(*args, home=fleet_home, **kw)

    return _run


class Children:
    """Processes this test started; all are killed and reaped at teardown (and only these)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def sleeper(self, *argv0_and_args: str, seconds: float = 120) -> subprocess.Popen[str]:
        """A real idle process (optionally with a made-up command line, via exec -a)."""
        if argv0_and_args:
            cmd = ["bash", "-c", f'exec -a "$0" sleep {seconds}', *argv0_and_args[:1]]
        else:
            cmd = ["sleep", str(seconds)]
        proc = subprocess.Popen(cmd, text=True)
        self.procs.append(proc)
        return proc

    def listener(self, *ports: int, argv: list[str] | None = None, host: str = "127.0.0.1") -> subprocess.Popen[str]:
        """A real process listening on ``ports`` (0 = any free port); prints the bound ports, then idles.

        ``argv`` makes the command line look like a model server: ``[python, listen.py, *argv]``.
        """
        cmd = [sys.executable, str(HELPERS / "listen.py"), "--host", host,
               "--ports", ",".join(map(str, ports)), *(argv or [])]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.bound_ports = [int(p) for p in line.split()]  # type: ignore[attr-defined]
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


class PortHolds:
    """Ports reserved for a test without listening on them: each is bound (SO_REUSEADDR, never listen()) by this
    test process until released, so no other process can take it in between (a bind-close-return helper races
    with everything else on the machine), while Fleet Watch's own bind probe still sees it as free."""

    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}

    def take(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        self.socks[port] = sock
        return port

    def release(self, port: int) -> None:
        """Hand the port to a program of the test that must bind it itself."""
        self.socks.pop(port).close()

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()


@pytest.fixture
def free_ports() -> Iterator[PortHolds]:
    holds = PortHolds()
    try:
        yield holds
    finally:
        holds.close()


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.cleanup()


@pytest.fixture
def servers(children: Children, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Fake model servers and agent CLIs with real listeners (``tests/discovery/servers.py``)."""
    from tests.discovery.servers import Servers

    # A neutral folder name: the test's own name must not leak into the fake command lines.
    started = Servers(children, tmp_path_factory.mktemp("srv"))
    try:
        yield started
    finally:
        started.close()

