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
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0: any free port; needs the "
                   "`metrics` extra).")
@click.option("--max-ticks", type=int, default=None, hidden=True, help="Stop after this many cycles.")
def watch(interval: float, as_json: bool, metrics_port: int | None, max_ticks: int | None) -> int:
    """Run a discovery cycle every --interval seconds; CPU figures are measured over the interval.

    Each cycle also rewrites state.json, STATE_REPORT.md and the changelog. A cycle that fails is reported and
    the next one runs; SIGTERM or SIGINT stops it cleanly (exit 0), as a service manager expects.
    """
    from fleet_watch.cli.discover import describe
    from fleet_watch.service.watch import Tick, Watcher, run_watch

    if not MIN_INTERVAL_S <= interval <= 86400:
        raise UsageError(f"--interval must be from {MIN_INTERVAL_S} to 86400 seconds, got {interval}")
    if max_ticks is not None and max_ticks < 1:
        raise UsageError("--max-ticks must be at least 1")
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be from 0 to 65535, got {metrics_port}")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    fleet = open_fleet()
    watcher = Watcher(fleet)
    server = None
    errors = 0
    if metrics_port is not None:
        from fleet_watch.service.metrics import MetricsServer

        try:
            server = MetricsServer(metrics_port)
        except BaseException:
            fleet.close()
            raise
        click.echo(f"Metrics: http://127.0.0.1:{server.port}/metrics", err=True)
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def publish(tick: Tick) -> None:
        """Hand the tick's views to the metrics endpoint; a failure here is reported, never fatal."""
        from fleet_watch.service.metrics import gather_metrics

        assert server is not None
        try:
            views = tick.report.views if tick.report is not None else None
            server.update(gather_metrics(fleet, views=views, watch_cycles=tick.number, watch_errors=errors))
        except Exception as err:  # noqa: BLE001 - the endpoint keeps the previous figures; the watch goes on
            click.echo(f"Error: metrics not updated: {type(err).__name__}: {err}", err=True)

    def on_tick(tick: Tick) -> None:
        nonlocal errors
        if tick.error:
            errors += 1
        if server is not None:
            publish(tick)
        show(tick)

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
        run_watch(interval, stop.is_set, watcher.watch_once, on_tick, stop.wait, max_ticks=max_ticks)
    finally:
        if server is not None:
            server.close()
        fleet.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not as_json:
        click.echo("Fleet Watch stopped.")
    return 0
