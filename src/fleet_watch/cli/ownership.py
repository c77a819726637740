"""``stale``, ``reconcile``, ``reap``, ``reap-sessions``, ``runaway`` and ``preempt`` (see ``docs/ownership.md``).

The first two only read. The others are dry runs unless confirmed (``--confirm``, ``--kill``), except ``preempt``,
which acts when the priority allows it; all of them signal only through ``service.acting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from fleet_watch.cli.context import current_session, open_fleet
from fleet_watch.cli.options import PORT, PRIORITY, FiniteFloat
from fleet_watch.cli.output import emit_json
from fleet_watch.clock import iso_utc
from fleet_watch.reports.fields import oneline

_OTHER_USERS = click.option("--allow-other-users", is_flag=True,
                            help="Root only: also signal processes of other users (refused otherwise).")


def _evidence(items: Sequence[str], n: int) -> str:
    return "; ".join(oneline(e) for e in items[:n])


@click.command()
@click.option("--json", "as_json", is_flag=True)
def stale(as_json: bool) -> int:
    """Registered processes whose heartbeat is older than 180 s, with their class and evidence. Read-only."""
    from fleet_watch.core.ownership import STALE_AFTER_S
    from fleet_watch.service.ownership import reconcile

    with open_fleet() as fleet:
        rec = reconcile(fleet)
    rows = rec.stale()
    if as_json:
        emit_json({"generated_utc": iso_utc(rec.now), "stale_after_seconds": STALE_AFTER_S,
                   "processes": [c.to_dict() for c in rows]})
        return 0
    if not rows:
        click.echo("No stale processes.")
    for c in rows:
        click.echo(f"PID {c.record.pid} ({oneline(c.record.name)}) — {c.classification} — heartbeat "
                   f"{c.verdict.heartbeat_age_s or 0:.0f}s ago — {_evidence(c.verdict.evidence, 3)}")
    return 0


@click.command()
@click.option("--json", "as_json", is_flag=True)
def reconcile(as_json: bool) -> int:
    """Every registered process's ownership class with its evidence. Read-only: nothing is signalled or removed."""
    from fleet_watch.service.ownership import reconcile as run

    with open_fleet() as fleet:
        rec = run(fleet)
    if as_json:
        emit_json({"generated_utc": iso_utc(rec.now), "summary": rec.summary(),
                   "processes": [c.to_dict() for c in rec.processes]})
        return 0
    if not rec.processes:
        click.echo("No registered processes.")
        return 0
    counts = ", ".join(f"{n} {k}" for k, n in rec.summary().items() if n)
    click.echo(f"Reconciliation: {counts}")
    for c in rec.processes:
        click.echo(f"PID {c.record.pid} ({oneline(c.record.name)}) — {c.classification} — "
                   f"{_evidence(c.verdict.evidence, 3)}")
    return 0


@click.command()
@click.option("--confirm", is_flag=True, help="Stop the orphan-confirmed processes and release their rows.")
@_OTHER_USERS
@click.option("--json", "as_json", is_flag=True)
def reap(confirm: bool, allow_other_users: bool, as_json: bool) -> int:
    """Orphan-confirmed processes only (all three signals). A dry run unless --confirm."""
    from fleet_watch.service.acting import rights
    from fleet_watch.service.reap import reap as run

    who = rights(allow_other_users)
    with open_fleet() as fleet:
        result = run(fleet, confirm=confirm, who=who)
    code = 1 if result.failed else 0
    if as_json:
        emit_json(result.to_dict())
        return code
    if not result.candidates:
        click.echo("No orphan-confirmed processes.")
        return code
    if not confirm:
        click.echo("Dry run. Orphan-confirmed processes:")
        for c in result.candidates:
            click.echo(f"PID {c.record.pid} ({oneline(c.record.name)}) — {_evidence(c.verdict.evidence, 3)}")
        click.echo("Run `fleet reap --confirm` to terminate and release these rows.")
        return code
    for r in result.released:
        click.echo(f"Reaped PID {r['pid']} ({oneline(r['name'])}): {', '.join(r['signals']) or 'no signal needed'}")
    for r in result.skipped:
        click.echo(f"Skipped PID {r['pid']} ({oneline(r['name'])}): {r['reason']}")
    for r in result.failed:
        click.echo(f"FAIL: PID {r['pid']} ({oneline(r['name'])}): {oneline(r['reason'])}", err=True)
    return code


@click.command("reap-sessions")
@click.option("--confirm", is_flag=True, help="Stop every process of each detached hot session.")
@_OTHER_USERS
@click.option("--json", "as_json", is_flag=True)
def reap_sessions(confirm: bool, allow_other_users: bool, as_json: bool) -> int:
    """Your agent sessions whose launcher is gone and that burn CPU (2 s sample). A dry run unless --confirm."""
    from fleet_watch.service.acting import rights
    from fleet_watch.service.reap import reap_sessions as run

    who = rights(allow_other_users)
    with open_fleet() as fleet:
        result = run(fleet, confirm=confirm, who=who)
    code = 1 if result.failed else 0
    if as_json:
        emit_json(result.to_dict())
        return code
    if not result.candidates:
        click.echo("No detached hot sessions.")
        return code
    if not confirm:
        click.echo("Dry run. Detached hot sessions:")
        for c in result.candidates:
            click.echo(f"  PID {c.pid} ({oneline(c.kind)}) — {c.cpu_pct}% CPU — {len(c.members)} member(s) — "
                       f"{_evidence(c.evidence, 3)}")
        click.echo("Run `fleet reap-sessions --confirm` to terminate these sessions.")
        return code
    for r in result.killed:
        click.echo(f"Killed session PID {r['pid']} ({oneline(r['kind'])}) — {len(r['member_pids'])} member(s)")
    for r in result.failed:
        click.echo(f"FAIL: session PID {r['pid']} ({oneline(r['kind'])}): {oneline(r['reason'])}", err=True)
    return code


@click.command()
@click.option("--cpu-threshold", type=FiniteFloat(0, 100_000), default=90.0, show_default=True,
              help="CPU percent (100 = one core) over the whole window.")
@click.option("--sustained-seconds", type=FiniteFloat(0, 3600), default=60.0, show_default=True,
              help="The window CPU is measured over (two samples), and the least a process must have run.")
@click.option("--kill", is_flag=True, help="Stop the flagged processes that Fleet Watch registered or that belong to "
              "your agent sessions; nothing else is touched.")
@_OTHER_USERS
@click.option("--json", "as_json", is_flag=True)
def runaway(cpu_threshold: float, sustained_seconds: float, kill: bool, allow_other_users: bool,
            as_json: bool) -> int:
    """Processes burning CPU over a window. A dry run unless --kill."""
    from fleet_watch.service.acting import rights
    from fleet_watch.service.runaway import runaway as run
    from fleet_watch.service.runaway import validate

    validate(cpu_threshold, sustained_seconds, kill)  # before the window is waited out
    who = rights(allow_other_users)
    with open_fleet() as fleet:
        result = run(fleet, threshold_pct=cpu_threshold, sustained_s=sustained_seconds, kill=kill, who=who)
    code = 1 if result.failed else 0
    if as_json:
        emit_json(result.to_dict())
        return code
    if not result.flagged:
        click.echo("No runaway processes detected.")
        return code
    if not kill:
        click.echo(f"Dry run. {len(result.flagged)} runaway process(es) detected (>={cpu_threshold:g}% CPU over "
                   f"{result.window_s:.1f}s):")
        for r in result.flagged:
            owner = oneline(r["ownership"]) if r["owned"] else "not Fleet Watch's: --kill leaves it alone"
            click.echo(f"  PID {r['pid']}  {oneline(r['name'])}  CPU {r['cpu_pct']}%  "
                       f"runtime {r['runtime_seconds']:.0f}s  [{owner}]  {oneline(r['command'])[:60]}")
        click.echo("Run `fleet runaway --kill` to stop the ones Fleet Watch owns.")
        return code
    for r in result.killed:
        click.echo(f"Killed PID {r['pid']} ({oneline(r['name'])}): {', '.join(r['signals']) or 'already gone'}")
    for r in result.skipped:
        click.echo(f"Left alone PID {r['pid']} ({oneline(r['name'])}): {r['reason']}")
    for r in result.failed:
        click.echo(f"FAIL: PID {r['pid']} ({oneline(r['name'])}): {oneline(r['reason'])}", err=True)
    return code


@click.command()
@click.option("--port", type=PORT, required=True, help="The port to take.")
@click.option("--priority", type=PRIORITY, required=True, help="Your priority, 1-5: only a strictly higher one wins.")
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@click.option("--grace", type=FiniteFloat(0, 3600), default=30.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
@click.option("--session-id", help="The session the port is reserved for (default: $FLEET_SESSION_ID, the agent's "
              "session).")
@_OTHER_USERS
@click.option("--json", "as_json", is_flag=True)
def preempt(port: int, priority: int, reason: str, grace: float, session_id: str | None, allow_other_users: bool,
            as_json: bool) -> int:
    """Take a port from a lower-priority registered holder: stop it (SIGTERM, grace, SIGKILL), then reserve the port
    for your session once it is free. Exit 1 when denied or when the holder or the port does not give way."""
    from fleet_watch.service.acting import rights
    from fleet_watch.service.preempt import preempt as run

    who = rights(allow_other_users)
    with open_fleet() as fleet:
        result = run(fleet, port=port, priority=priority, reason=reason, grace_s=grace,
                     session_id=current_session(session_id), who=who)
    code = 0 if result.ok else 1
    if as_json:
        doc: dict[str, Any] = result.to_dict()
        emit_json(doc)
        return code
    if result.outcome == "denied":
        click.echo(f"DENY: {oneline(result.message)}")
    elif result.ok:
        click.echo(f"Preempted: {oneline(result.message)}")
    else:
        click.echo(f"FAIL: {oneline(result.message)}", err=True)
    return code
