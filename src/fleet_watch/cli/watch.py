"""``fleet watch``: discovery cycles in the foreground until SIGINT or SIGTERM. It kills nothing."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from types import FrameType

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.errors import UsageError

MIN_INTERVAL_S = 0.05  # a scan takes longer than this anyway; below it the schedule is meaningless


@click.command()
@click.option("--interval", type=float, default=60.0, show_default=True, help="Seconds between cycles.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per cycle, one per line (NDJSON).")
@click.option("--max-ticks", type=int, default=None, hidden=True, help="Stop after this many cycles.")
def watch(interval: float, as_json: bool, max_ticks: int | None) -> int:
    """Run a discovery cycle every --interval seconds; CPU figures are measured over the interval."""
    from fleet_watch.cli.discover import describe
    from fleet_watch.service.watch import Tick, Watcher, run_watch

    if not MIN_INTERVAL_S <= interval <= 86400:
        raise UsageError(f"--interval must be from {MIN_INTERVAL_S} to 86400 seconds, got {interval}")
    if max_ticks is not None and max_ticks < 1:
        raise UsageError("--max-ticks must be at least 1")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    fleet = open_fleet()
    watcher = Watcher(fleet)

    def show(tick: Tick) -> None:
        if as_json:
            sys.stdout.write(json.dumps(tick.to_dict(), default=str) + "\n")
            sys.stdout.flush()
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if tick.error:
            click.echo(f"{stamp} Error: {tick.error}", err=True)
        if tick.result is not None:
            for line in describe(tick.result.to_dict()):
                click.echo(f"{stamp} {line}")
        for a in tick.monitor["alerts"] if tick.monitor else []:
            click.echo(f"{stamp} [{a['severity']}] {a['type']}")

    try:
        if not as_json:
            click.echo(f"Fleet Watch running. Scanning every {interval:g}s. Ctrl-C to stop.")
        run_watch(interval, stop.is_set, watcher.watch_once, show, stop.wait, max_ticks=max_ticks)
    finally:
        fleet.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not as_json:
        click.echo("Fleet Watch stopped.")
    return 0
