"""``register``, ``heartbeat``, ``release``, ``clean`` and ``status``."""

from __future__ import annotations

from typing import Any

import click

from fleet_watch.cli.context import current_session, open_fleet
from fleet_watch.cli.options import DEVICE, MB, PID, PORT, PRIORITY
from fleet_watch.cli.output import emit_json
from fleet_watch.core.inputs import fit
from fleet_watch.errors import UsageError


@click.command()
@click.option("--pid", type=PID, required=True, help="PID of a running process.")
@click.option("--name", help="Human-readable name (required unless --update).")
@click.option("--workstream", help="Project or workstream it belongs to (required unless --update).")
@click.option("--port", "ports", type=PORT, multiple=True, help="TCP port it holds (repeat for several).")
@click.option("--gpu", "gpu_mb", type=MB, default=0, show_default=True, help="GPU memory it claims (MB).")
@click.option("--gpu-device", type=DEVICE, help="NVIDIA device index the GPU claim is on (multi-GPU machines).")
@click.option("--repo", "repos", multiple=True,
              help="Repository it writes to (locks the directory and everything inside it; repeat for several).")
@click.option("--priority", type=PRIORITY, default=3, show_default=True, help="1 (lowest) to 5 (highest).")
@click.option("--session-id", help="Owning session (default: $FLEET_SESSION_ID, the agent's session, else cli-<pid>).")
@click.option("--model", help="Model it serves.")
@click.option("--start-cmd", help="Command line that started it.")
@click.option("--update", is_flag=True, help="Add claims to a process that is already registered (--gpu replaces its "
              "GPU claim).")
@click.option("--json", "as_json", is_flag=True, help="Print the registered row as JSON.")
def register(pid: int, name: str | None, workstream: str | None, ports: tuple[int, ...], gpu_mb: int,
             gpu_device: int | None, repos: tuple[str, ...], priority: int, session_id: str | None,
             model: str | None, start_cmd: str | None, update: bool, as_json: bool) -> int:
    """Register a running process and its claims. Exit 1 (and a CONFLICT event) when a claim is held."""
    from fleet_watch.reports.state import process_view

    if not update and (name is None or workstream is None):
        raise UsageError("--name and --workstream are required (or --update to add claims to a registered PID)")
    with open_fleet() as fleet:
        record = fleet.register(pid=pid, name=name or "", workstream=workstream or "", ports=ports, gpu_mb=gpu_mb,
                                repos=repos, priority=priority, session_id=current_session(session_id), model=model,
                                start_cmd=start_cmd, gpu_device=gpu_device, update=update)
    if as_json:
        emit_json({"registered": True, "process": process_view(record, True)})
    else:
        click.echo(f"{'Updated' if update else 'Registered'} PID {record.pid} ({record.name})")
    return 0


@click.command()
@click.option("--pid", type=PID, required=True)
@click.option("--json", "as_json", is_flag=True)
def heartbeat(pid: int, as_json: bool) -> int:
    """Refresh the heartbeat of a registered process (exit 3 if it is not registered)."""
    with open_fleet() as fleet:
        record = fleet.heartbeat(pid)
    if as_json:
        emit_json({"pid": record.pid, "name": record.name, "heartbeat": True})
    else:
        click.echo(f"Heartbeat updated for PID {record.pid} ({record.name})")
    return 0


@click.command()
@click.option("--pid", type=PID, help="Release every claim of this process and forget it.")
@click.option("--port", type=PORT, help="Release just this port claim (with --pid: only if that process holds it).")
@click.option("--claim", "claim_id", type=click.IntRange(1, 2**62), help="Release a reservation (fleet claim).")
@click.option("--json", "as_json", is_flag=True)
def release(pid: int | None, port: int | None, claim_id: int | None, as_json: bool) -> int:
    """Release a process (--pid), a single port claim (--port), one port of one process (both), or a
    reservation (--claim)."""
    if pid is None and port is None and claim_id is None:
        raise UsageError("specify --pid, --port or --claim")
    if claim_id is not None and (pid is not None or port is not None):
        raise UsageError("--claim releases a reservation on its own; not with --pid or --port")
    with open_fleet() as fleet:
        if claim_id is not None:
            from fleet_watch.service import claims

            res = claims.release(fleet, claim_id)
            released: dict[str, object] = {"claim_id": res.reservation_id, "session_id": res.session_id,
                                           "ports": list(res.ports), "repos": list(res.repos)}
            text = f"Released claim {claim_id} (session {res.session_id})"
        elif port is not None:
            rec = fleet.release_port(port, pid=pid)
            released = {"pid": rec.pid, "name": rec.name, "port": port}
            text = f"Released port {port} (was PID {rec.pid}, {rec.name})"
        else:
            assert pid is not None
            rec = fleet.release_pid(pid)
            released = {"pid": rec.pid, "name": rec.name, "ports": list(rec.ports), "repos": list(rec.repos),
                        "gpu_mb": rec.gpu_mb}
            text = f"Released PID {rec.pid} ({rec.name})"
    if as_json:
        emit_json({"released": [released]})
    else:
        click.echo(text)
    return 0


@click.command()
@click.option("--json", "as_json", is_flag=True)
def clean(as_json: bool) -> int:
    """Drop rows whose process is gone (dead, zombie, or PID reused); log heartbeats past 180 s."""
    with open_fleet() as fleet:
        result = fleet.clean()
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

    with open_fleet() as fleet:
        state = gather_state(fleet)
    if as_json:
        emit_json(state)
        return 0
    for line in status_lines(state):
        click.echo(line)
    return 0


def status_lines(state: dict[str, Any]) -> list[str]:
    """The text view, at most 80 columns whatever the names hold (wide characters count twice)."""
    procs = state["processes"]
    lines: list[str] = []
    if not procs:
        lines.append("No registered processes.")
    else:
        live = sum(1 for p in procs if p["alive"] is not False)
        lines.append(f"Registered processes ({live} live" + (f", {len(procs) - live} gone)" if live < len(procs)
                                                            else ")") + ":")
        lines.append(f"{'PID':>7}  {fit('Name', 20)} {fit('Workstream', 14)} {fit('Ports', 11)} {'GPU':>9} Pri  "
                     "Alive")
        lines.append("-" * 77)
        for p in procs:
            ports = ",".join(map(str, p["ports"])) or "-"
            alive = {True: "yes", False: "NO", None: "?"}[p["alive"]]
            gpu = f"{p['gpu_mb']}MB" + ("~" if p.get("gpu_basis") == "estimate" else "")
            lines.append(f"{p['pid']:>7}  {fit(p['name'], 20)} {fit(p['workstream'], 14)} {fit(ports, 11)} "
                         f"{gpu:>9} {p['priority']:>3}  {alive}")
    budget = state["gpu_budget"]
    allocatable = budget["total_mb"] - budget["reserve_mb"]
    pct = int(100 * budget["allocated_mb"] / allocatable) if allocatable > 0 else 0
    lines.append("")
    lines.append(f"GPU: {budget['allocated_mb']} of {allocatable} MB claimed ({pct}%); {allocatable} MB = "
                 f"{budget['total_mb']} MB total - {budget['reserve_mb']} MB reserve")
    if budget["available_mb"] < 0:
        lines.append(f"  OVERCOMMITTED by {-budget['available_mb']} MB: measured use exceeds the budget")
    estimated = [p for p in procs if p["alive"] is not False and p.get("gpu_basis") == "estimate" and p["gpu_mb"]]
    if estimated:
        lines.append(f"  ~ estimates, not enforced: {sum(p['gpu_mb'] for p in estimated)} MB "
                     f"({len(estimated)} process{'es' if len(estimated) > 1 else ''} without a measurement)")
    if state["ports_claimed"]:
        claimed = sorted(state["ports_claimed"].items(), key=lambda item: int(item[0]))
        lines.append("Ports: " + ", ".join(p if pid is not None else f"{p} (reserved)" for p, pid in claimed))
    for repo, pid in sorted(state["repos_locked"].items()):
        lines.append(f"Repo: {repo}" + ("" if pid is not None else " (session lease, reservation or remote claim)"))
    leases = [x for x in state.get("session_leases") or [] if x.get("status") == "ACTIVE"]
    if leases:
        lines.append(f"Session leases: {len(leases)} active (`fleet session list`)")
    for i, e in enumerate(state["external_resources"]):  # remote instances (fleet thunder sync)
        if i == 0:
            lines.append(f"External resources ({len(state['external_resources'])}):")
        owner = f"session {e['session_id']}" if e["session_id"] else e["claim"]
        lines.append(f"  {e['provider']}:{e['id'] or e['external_id']}  {fit(e['name'], 24)} {e['status']:<10} "
                     f"{e['gpu_count'] or '?'}x {e['gpu_type'] or '-':<10} {owner}  {e['repo_dir'] or ''}".rstrip())
    return lines
