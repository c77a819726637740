"""``fleet top`` on a real pseudo-terminal (80x24): it shows a registered process, quits on ``q`` and on Ctrl-C, and
gives the terminal back as it found it; a pipe gets one plain table."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fleet_watch.reports.ownership import CLASSES
from fleet_watch.reports.top import plain_lines, screen
from tests.conftest import Children
from tests.views import sample

LEAVE_ALT_SCREEN = b"\x1b[?1049l"
SHOW_CURSOR = b"\x1b[?25h"


class Terminal:
    """A pty whose slave end is the child's stdin, stdout and stderr, and its controlling terminal."""

    def __init__(self, home: Path, *args: str, columns: int = 80, rows: int = 24) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.modes_before = termios.tcgetattr(self.slave)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env.update(FLEET_WATCH_HOME=str(home), TERM="xterm-256color")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_watch", "top", *args], stdin=self.slave, stdout=self.slave,
            stderr=self.slave, env=env, start_new_session=True, preexec_fn=_take_terminal)
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never appeared in {self.output[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # EIO: the child closed its side
                    assert self.proc.poll() is not None
                    break

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "fleet top did not quit"
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    break
        code = self.proc.wait(timeout=timeout)
        while True:  # what it wrote just before exiting may still wait in the terminal's buffer
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                return code
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: nothing left on the other side
                return code
            if not chunk:
                return code
            self.output += chunk

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)
        os.close(self.slave)


def _take_terminal() -> None:
    """In the child, after setsid: the pty becomes its controlling terminal, so Ctrl-C is a real SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def registered(fleet: Any, children: Children) -> int:
    proc = children.sleeper()
    out = fleet("register", "--pid", str(proc.pid), "--name", "pty-visible-srv", "--workstream", "demo", "--port",
                str(sample.free_port()), "--gpu", "2048")
    assert out.returncode == 0, out.stderr
    return proc.pid


@pytest.mark.parametrize("quit_with", [b"q", b"\x03"])
def test_top_shows_the_process_and_quits_restoring_the_terminal(fleet_home: Path, registered: int,
                                                                quit_with: bytes) -> None:
    term = Terminal(fleet_home, "--interval", "0.5")
    try:
        term.read_until(b"pty-visible-srv")
        term.read_until(b"live")
        term.read_until(b"2,048 / ")  # the GPU bar's figures
        term.send(quit_with)
        assert term.finish() == 0
        assert LEAVE_ALT_SCREEN in term.output
        assert term.output.rfind(SHOW_CURSOR) > term.output.rfind(b"pty-visible-srv")
        assert b"Traceback" not in term.output
        modes = termios.tcgetattr(term.slave)
        assert modes[3] & (termios.ICANON | termios.ECHO) == term.modes_before[3] & (termios.ICANON | termios.ECHO)
        assert modes == term.modes_before
    finally:
        term.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_top_quits_on_sigterm_and_sighup_too(fleet_home: Path, registered: int, sig: signal.Signals) -> None:
    term = Terminal(fleet_home, "--interval", "0.5")
    try:
        term.read_until(b"pty-visible-srv")
        term.proc.send_signal(sig)
        assert term.finish() == 0
        assert LEAVE_ALT_SCREEN in term.output
        assert termios.tcgetattr(term.slave) == term.modes_before
    finally:
        term.close()


def test_piped_top_prints_one_plain_table(fleet: Any, registered: int) -> None:
    out = fleet("top")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    row = next(line for line in out.stdout.splitlines() if "pty-visible-srv" in line)
    assert row.split()[0] == str(registered)
    assert "live" in row
    assert "GPU all: 2,048 / " in out.stdout


@pytest.mark.parametrize("interval", ["0", "0.1", "3601", "nan"])
def test_top_rejects_a_bad_interval(fleet: Any, interval: str) -> None:
    out = fleet("top", "--interval", interval)
    assert out.returncode == 2
    assert "--interval" in out.stderr


def test_the_screen_fits_80_columns_with_every_class_and_no_markup_from_names() -> None:
    records = [*sample.RECORDS[:4], sample.record(5, "[bold]x[/bold]", "ollama")]
    state = sample.state(records=records)
    console = Console(width=80, height=30, record=True, color_system=None, force_terminal=True)
    console.print(screen(state, sample.BUDGETS, height=30))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for pid, klass in zip(range(4001, 4006), CLASSES, strict=True):
        row = next(line for line in lines if line.strip().startswith(str(pid)))
        assert klass[:9] in row, (klass, row)  # the class column may be cut with an ellipsis at 80 columns
    assert "[bold]x[/bold]" in text  # shown as written, not parsed as markup
    hostile = next(line for line in lines if line.strip().startswith("4002"))
    assert "## Injected" not in text.replace(hostile, "")  # the name's line break did not start a new line
    for needle in ("GPU all", "GPU 0", "GPU 1", "Memory", "Sessions: 1 claude-code, 1 codex", "q quit"):
        assert needle in text, needle

    short = Console(width=80, height=12, record=True, color_system=None, force_terminal=True)
    short.print(screen(state, sample.BUDGETS, height=12))
    assert "… 4 more" in short.export_text()  # the list is cut to the screen's height


def test_plain_lines_list_every_class() -> None:
    lines = plain_lines(sample.state(), sample.BUDGETS)
    for pid, klass in zip(range(4001, 4006), CLASSES, strict=True):
        row = next(line for line in lines if line.strip().startswith(str(pid)))
        assert klass in row
    assert not any(line.startswith("## Injected") for line in lines)
    assert "GPU 1: 10,240 / 77,824 MB claimed (13%)" in lines
