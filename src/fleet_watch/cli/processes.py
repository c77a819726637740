"""``register``, ``heartbeat``, ``release``, ``clean`` and ``status``."""

from __future__ import annotations

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.output import emit_json
from fleet_watch.errors import UsageError


@click.command()
@click.option("--pid", type=int, required=True, help="PID of a running process.")
@click.option("--name", required=True, help="Human-readable name.")
@click.option("--workstream", required=True, help="Project or workstream it belongs to.")
@click.option("--port", type=int, help="TCP port it holds.")
@click.option("--gpu", "gpu_mb", type=int, default=0, show_default=True, help="GPU memory it claims (MB).")
@click.option("--gpu-device", type=int, help="NVIDIA device index the GPU claim is on (multi-GPU machines).")
@click.option("--repo", help="Repository it writes to (locks the directory and everything inside it).")
@click.option("--priority", type=int, default=3, show_default=True, help="1 (lowest) to 5 (highest).")
@click.option("--session-id", help="Owning session (default: cli-<pid>).")
@click.option("--model", help="Model it serves.")
@click.option("--start-cmd", help="Command line that started it.")
@click.option("--json", "as_json", is_flag=True, help="Print the registered row as JSON.")
def register(pid: int, name: str, workstream: str, port: int | None, gpu_mb: int, gpu_device: int | None,
             repo: str | None, priority: int, session_id: str | None, model: str | None, start_cmd: str | None,
             as_json: bool) -> int:
    """Register a running process and its claims. Exit 1 (and a CONFLICT event) when a claim is held."""
    from fleet_watch.reports.state import process_view

    fleet = open_fleet()
    try:
        record = fleet.register(pid=pid, name=name, workstream=workstream, port=port, gpu_mb=gpu_mb, repo=repo,
                                priority=priority, session_id=session_id, model=model, start_cmd=start_cmd,
                                gpu_device=gpu_device)
    finally:
        fleet.close()
    if as_json:
        emit_json({"registered": True, "process": process_view(record, True)})
    else:
        click.echo(f"Registered PID {record.pid} ({record.name})")
    return 0


@click.command()
@click.option("--pid", type=int, required=True)
@click.option("--json", "as_json", is_flag=True)
def heartbeat(pid: int, as_json: bool) -> int:
    """Refresh the heartbeat of a registered process (exit 3 if it is not registered)."""
    fleet = open_fleet()
    try:
        record = fleet.heartbeat(pid)
    finally:
        fleet.close()
    if as_json:
        emit_json({"pid": record.pid, "name": record.name, "heartbeat": True})
    else:
        click.echo(f"Heartbeat updated for PID {record.pid} ({record.name})")
    return 0


@click.command()
@click.option("--pid", type=int, help="Release every claim of this process and forget it.")
@click.option("--port", type=int, help="Release just this port claim.")
@click.option("--json", "as_json", is_flag=True)
def release(pid: int | None, port: int | None, as_json: bool) -> int:
    """Release a process (--pid) or a single port claim (--port)."""
    if pid is None and port is None:
        raise UsageError("specify --pid or --port")
    fleet = open_fleet()
    released = []
    try:
        if pid is not None:
            rec = fleet.release_pid(pid)
            released.append({"pid": rec.pid, "name": rec.name, "ports": list(rec.ports), "repos": list(rec.repos),
                             "gpu_mb": rec.gpu_mb})
            if not as_json:
                click.echo(f"Released PID {rec.pid} ({rec.name})")
        if port is not None:
            rec = fleet.release_port(port)
            released.append({"pid": rec.pid, "name": rec.name, "port": port})
            if not as_json:
                click.echo(f"Released port {port} (was PID {rec.pid}, {rec.name})")
    finally:
        fleet.close()
    if as_json:
        emit_json({"released": released})
    return 0


@click.command()
@click.option("--json", "as_json", is_flag=True)
def clean(as_json: bool) -> int:
    """Drop rows whose process is gone (dead, zombie, or PID reused); log heartbeats past 180 s."""
    fleet = open_fleet()
    try:
        result = fleet.clean()
    finally:
        fleet.close()
    if as_json:
        emit_json({
            "removed": [{"pid": r.pid, "name": r.name, "reason": why} for r, why in result.removed],
            "heartbeat_expired": [{"pid": r.pid, "name": r.name, "last_heartbeat": r.last_heartbeat}
                                  for r in result.expired],
        })
        return 0
    for rec, why in result.removed:
        click.echo(f"Cleaned PID {rec.pid} ({rec.name}): {why.replace('_', ' ')}")
    for rec in result.expired:
        click.echo(f"Heartbeat expired: PID {rec.pid} ({rec.name}), last seen {rec.last_heartbeat}")
    if not result.removed and not result.expired:
        click.echo("No dead PIDs found.")
    return 0


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The full state document (state.json's keys).")
def status(as_json: bool) -> int:
    """Registered processes, the GPU budget and the claimed ports. Read-only."""
    from fleet_watch.service.status import gather_state

    fleet = open_fleet()
    try:
        state = gather_state(fleet)
    finally:
        fleet.close()
    if as_json:
        emit_json(state)
        return 0
    procs = state["processes"]
    if not procs:
        click.echo("No active processes.")
    else:
        click.echo(f"Active processes ({len(procs)}):")
        click.echo(f"{'PID':>7}  {'Name':<20} {'Workstream':<18} {'Ports':<12} {'GPU':>8} {'Pri':>3}  Alive")
        click.echo("-" * 80)
        for p in procs:
            ports = ",".join(map(str, p["ports"])) or "-"
            alive = {True: "yes", False: "NO", None: "?"}[p["alive"]]
            click.echo(f"{p['pid']:>7}  {p['name'][:20]:<20} {p['workstream'][:18]:<18} {ports[:12]:<12} "
                       f"{str(p['gpu_mb']) + 'MB':>8} {p['priority']:>3}  {alive}")
    budget = state["gpu_budget"]
    allocatable = budget["total_mb"] - budget["reserve_mb"]
    pct = int(100 * budget["allocated_mb"] / allocatable) if allocatable > 0 else 0
    click.echo("")
    click.echo(f"GPU: {budget['allocated_mb']}/{allocatable} MB allocated ({pct}%)")
    if state["ports_claimed"]:
        click.echo("Ports: " + ", ".join(sorted(state["ports_claimed"], key=int)))
    if state["repos_locked"]:
        click.echo("Repos: " + ", ".join(sorted(state["repos_locked"])))
    for i, e in enumerate(state["external_resources"]):  # remote instances (fleet thunder sync)
        if i == 0:
            click.echo(f"External resources ({len(state['external_resources'])}):")
        owner = f"session {e['session_id']}" if e["session_id"] else e["claim"]
        click.echo(f"  {e['provider']}:{e['id'] or e['external_id']}  {e['name'][:24]:<24} {e['status']:<10} "
                   f"{e['gpu_count'] or '?'}x {e['gpu_type'] or '-':<10} {owner}  {e['repo_dir'] or ''}".rstrip())
    return 0
