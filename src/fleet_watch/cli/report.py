"""``fleet report``, ``fleet changelog`` and ``fleet metrics``: the state written down for people, agents and
Prometheus."""

from __future__ import annotations

import os
from pathlib import Path

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.output import emit_json
from fleet_watch.errors import UsageError
from fleet_watch.reports.fields import oneline

MAX_LINES = 100_000


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the paths written and the changelog entry as JSON.")
def report(as_json: bool) -> int:
    """Write STATE_REPORT.md and state.json (atomically), and the changelog entry since the last state."""
    from fleet_watch.service.report import write_reports

    fleet = open_fleet()
    try:
        result = write_reports(fleet)
    finally:
        fleet.close()
    if as_json:
        emit_json({"report": str(result.report_path), "state": str(result.state_path),
                   "changelog_entry": result.changelog_entry})
        return 0
    click.echo(f"Written: {result.report_path}")
    click.echo(f"Written: {result.state_path}")
    return 0


@click.command()
@click.option("--lines", type=int, default=20, show_default=True, help="How many of the newest entries to show.")
@click.option("--json", "as_json", is_flag=True, help="The entries as a JSON array, oldest first.")
def changelog(lines: int, as_json: bool) -> int:
    """What changed between successive states: processes, claims, classes, leases, external resources, GPU."""
    from fleet_watch.config import resolve_home
    from fleet_watch.reports.changelog import describe
    from fleet_watch.service import changelog as log

    if not 1 <= lines <= MAX_LINES:
        raise UsageError(f"--lines must be from 1 to {MAX_LINES}, got {lines}")
    read = log.read_last(resolve_home(os.environ), lines)
    if read.damaged:
        click.echo(f"note: {read.damaged} damaged changelog line(s) skipped", err=True)
    if as_json:
        emit_json(read.entries)
        return 0
    if not read.exists:
        click.echo("No changelog yet. Run `fleet report`, `fleet discover` or `fleet watch` to start recording.")
        return 0
    shown = [line for line in map(describe, read.entries) if line is not None]
    for line in shown:
        click.echo(oneline(line))  # names come from the registry: one line each, no terminal escapes
    if not shown:
        click.echo("No changes recorded.")
    return 0


@click.command()
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write atomically to this *.prom file (node_exporter's textfile collector) instead of stdout.")
def metrics(textfile: Path | None) -> int:
    """The fleet as Prometheus metrics (needs the `metrics` extra: pip install 'fleet-watch[metrics]')."""
    from fleet_watch.service.metrics import gather_metrics, render, write_textfile

    fleet = open_fleet()
    try:
        data = gather_metrics(fleet)
    finally:
        fleet.close()
    if textfile is None:
        click.echo(render(data), nl=False)
        return 0
    write_textfile(textfile, data)
    return 0
