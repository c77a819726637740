"""``fleet top``: a live view that refreshes in place; ``q`` or Ctrl-C quits and the terminal is restored.

The screen is drawn on the terminal's alternate screen (no scrolling, no flicker: each refresh overwrites the
previous frame), keys are read in cbreak mode (one key at a time, Ctrl-C still a signal). SIGTERM and SIGHUP (the
ssh connection dropped) quit the same way, so the terminal modes always come back. When stdout is not a terminal
it prints one plain table and exits, like ``top -b -n 1``.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.errors import FleetError, UsageError

if TYPE_CHECKING:
    from fleet_watch.service.fleet import Fleet

QUIT_KEYS = (b"q", b"Q")


class _Quit(Exception):
    """Raised from a signal handler to leave the screen the normal way."""


@contextmanager
def _keys(fd: int | None) -> Iterator[None]:
    """cbreak mode on the terminal ``fd`` for the duration; the previous modes are restored on any exit."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        with suppress(termios.error):  # the terminal is gone (ssh dropped): nothing left to restore
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds`` for a key; True when it is a quit key."""
    if fd is None:
        time.sleep(seconds)
        return False
    ready, _, _ = select.select([fd], [], [], seconds)
    if not ready:
        return False
    data = os.read(fd, 64)
    return not data or any(k in data for k in QUIT_KEYS)  # end of input: nobody is left to press q


@click.command()
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes.")
def top(interval: float) -> int:
    """Live view: processes with their class, ports and GPU claims, GPU budget per device as bars, memory
    pressure, sessions and recent events. q or Ctrl-C quits. Prints one plain table when stdout is not a terminal."""
    from fleet_watch.service.report import gather_views

    if not 0.2 <= interval <= 3600:
        raise UsageError(f"--interval must be from 0.2 to 3600 seconds, got {interval}")
    fleet = open_fleet()
    try:
        if not sys.stdout.isatty():
            from fleet_watch.reports.top import plain_lines

            views = gather_views(fleet)
            for line in plain_lines(views.state, views.budgets):
                click.echo(line)
            return 0
        return _live(fleet, interval)
    finally:
        fleet.close()


def _live(fleet: Fleet, interval: float) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from fleet_watch.reports.top import screen
    from fleet_watch.service.report import Views, gather_views

    console = Console()
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None

    def leave(signum: int, frame: FrameType | None) -> None:
        raise _Quit

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    last: Views | None = None
    try:
        with _keys(fd), Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                             redirect_stderr=False) as live:
            while True:
                notice = None
                try:
                    last = gather_views(fleet)
                except FleetError as err:  # e.g. the registry locked past its timeout: keep the last frame
                    notice = f"not refreshed: {err.message}"
                if last is not None:
                    live.update(screen(last.state, last.budgets, height=console.size.height, refresh_s=interval,
                                       notice=notice), refresh=True)
                else:
                    live.update(Text(f"Fleet Watch: {notice} (q quits)"), refresh=True)
                if _quit_pressed(fd, interval):
                    return 0
    except (KeyboardInterrupt, _Quit):
        return 0
    except OSError as err:
        if err.errno in (errno.EIO, errno.EBADF, errno.EPIPE):  # the terminal went away (ssh dropped): done
            return 0
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
