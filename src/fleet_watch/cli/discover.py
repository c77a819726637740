"""``fleet discover``: one discovery cycle, printed."""

from __future__ import annotations

from typing import Any

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.output import emit_json


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, ports)) if ports else "none"


def describe(result: dict[str, Any]) -> list[str]:
    """Human lines for one cycle's changes (shared with ``fleet watch``)."""
    lines = []
    for a in result["added"]:
        lines.append(f"+ PID {a['pid']} ({a['name']}) ports {_ports(a['ports'])}; "
                     f"GPU {a['gpu_mb']} MB from {a['gpu_source']}")
    for u in result["updated"]:
        parts = []
        if u["ports_added"] or u["ports_removed"]:
            parts.append("ports " + " ".join([*(f"+{p}" for p in u["ports_added"]),
                                             *(f"-{p}" for p in u["ports_removed"])]))
        if "gpu_mb" in u:
            parts.append(f"GPU {u['previous_gpu_mb']} -> {u['gpu_mb']} MB from {u['gpu_source']}")
        lines.append(f"~ PID {u['pid']} ({u['name']}) " + "; ".join(parts))
    for r in result["removed"]:
        lines.append(f"- PID {r['pid']} ({r['name']}) [{r['reason']}]")
    for s in result["skipped"]:
        lines.append(f"! PID {s['pid']} ({s['name']}) skipped: {s['reason']}")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the cycle's changes, workloads and sessions as JSON.")
def discover(as_json: bool) -> int:
    """Scan all processes once and make the registry true: register, update and clean discovered workloads."""
    from fleet_watch.service.watch import Watcher

    with open_fleet() as fleet:
        tick = Watcher(fleet).watch_once(raise_errors=True)
    assert tick.result is not None
    assert tick.monitor is not None
    doc = {**tick.result.to_dict(), "sessions": tick.sessions, "gpu_memory_monitor": tick.monitor}
    if as_json:
        emit_json(doc)
        return 0
    lines = describe(doc)
    for line in lines:
        click.echo(line)
    if doc["unattributed_listeners"]:
        held = ", ".join(f"{h['port']} (uid {h['uid'] if h['uid'] is not None else '?'})"
                         for h in doc["unattributed_listeners"])
        click.echo(f"Ports held by processes this user cannot inspect: {held}")
    if doc["sessions"]:
        kinds: dict[str, int] = {}
        for s in doc["sessions"]:
            kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
        click.echo("Sessions: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    if not lines:
        click.echo(f"No changes. Registry is current ({len(doc['workloads'])} workload(s), "
                   f"{doc['heartbeats']} heartbeat(s)).")
    return 0
