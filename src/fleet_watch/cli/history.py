"""``fleet history``: the audit trail, and ``--verify`` for the whole chain."""

from __future__ import annotations

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.options import COUNT, FiniteFloat
from fleet_watch.cli.output import emit_json
from fleet_watch.errors import IntegrityError


@click.command()
@click.option("--type", "event_type", help="Only this event type (REGISTER, RELEASE, CONFLICT, CLEAN, STALE, ...).")
@click.option("--hours", type=FiniteFloat(0, 24 * 365 * 100), default=24.0, show_default=True,
              help="Time window; 0 for all time.")
@click.option("--limit", type=COUNT, default=50, show_default=True)
@click.option("--verify", is_flag=True, help="Verify the whole hash chain; exit 6 and name the first broken event.")
@click.option("--wide", is_flag=True, help="Do not cut lines at 80 columns.")
@click.option("--json", "as_json", is_flag=True)
def history(event_type: str | None, hours: float, limit: int, verify: bool, wide: bool, as_json: bool) -> int:
    """Show the hash-chained event log, newest first."""
    from fleet_watch.reports.state import event_view

    with open_fleet() as fleet:
        if verify:
            report = fleet.verify_chain()
        else:
            events = fleet.history(event_type=event_type, hours=hours, limit=limit)
    if verify:
        brk = report.first_break
        if brk is not None:  # the one error path: one line, or one JSON object with the break named
            raise IntegrityError(f"chain broken at event {brk.seq}: {brk.reason} ({report.event_count} events verify)",
                                 extra={"valid": False, "count": report.event_count,
                                        "first_break": {"id": brk.seq, "reason": brk.reason}})
        if as_json:
            emit_json({"valid": True, "count": report.event_count, "first_break": None})
        else:
            click.echo(f"Chain valid: {report.event_count} events")
        return 0
    if as_json:
        emit_json([event_view(e) for e in events])
        return 0
    if not events:
        click.echo("No events found.")
    for ev in events:
        parts = [ev.timestamp, ev.event_type]
        if ev.pid:
            parts.append(f"PID {ev.pid}")
        if ev.workstream:
            parts.append(f"({ev.workstream})")
        detail = ", ".join(f"{k}={v}" for k, v in ev.detail.items() if v not in (None, [], "", {}))
        if detail:
            parts.append(detail)
        line = " ".join(parts)
        click.echo(line if len(line) <= 80 or wide else line[:79] + "…")
    return 0
