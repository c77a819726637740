"""``fleet session start|heartbeat|ensure|close|list`` and ``fleet claim``: leases and reservations."""

from __future__ import annotations

from typing import Any

import click

from fleet_watch.cli.context import current_session, open_fleet
from fleet_watch.cli.options import DEVICE, MB, PID, PortOrAuto
from fleet_watch.cli.output import emit_json
from fleet_watch.errors import UsageError


def _session_options(fn: Any) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the lease as JSON.")(fn)
    return click.option("--session-id", help="The session (default: $FLEET_SESSION_ID, else the agent's own "
                        "session id, else term-$TERM_SESSION_ID).")(fn)


def _show(lease: dict[str, Any], verb: str, as_json: bool) -> int:
    if as_json:
        emit_json(lease)
    else:
        owner = f"owner PID {lease['owner_pid']}" if lease["owner_pid"] is not None else "no owner process"
        repo = f", repo {lease['repo_dir']}" if lease["repo_dir"] else ""
        click.echo(f"Session {lease['session_id']} {verb} ({owner}{repo})")
        if lease.get("external_released"):
            click.echo(f"Released its claims on {', '.join(lease['external_released'])}")
    return 0


@click.group()
def session() -> None:
    """Session leases: who owns a session, what repo it holds. Only the owner (or root) may renew or close one."""


@session.command()
@_session_options
@click.option("--owner-pid", type=PID, help="The session's owner process (default: the caller's parent).")
@click.option("--repo", help="Repository the session works in: other sessions are denied it.")
def start(session_id: str | None, owner_pid: int | None, repo: str | None, as_json: bool) -> int:
    """Open (or reopen) a session lease. Exit 1 when another session holds the repo."""
    from fleet_watch.service import sessions

    with open_fleet() as fleet:
        lease = sessions.start(fleet, current_session(session_id), owner_pid=owner_pid, repo=repo)
    return _show(lease, "active", as_json)


@session.command()
@_session_options
@click.option("--owner-pid", type=PID, help="The session's owner process (default: the caller's parent).")
@click.option("--repo", help="Repository the session works in.")
def ensure(session_id: str | None, owner_pid: int | None, repo: str | None, as_json: bool) -> int:
    """Idempotent start: safe to call before every action, and from several processes at once."""
    from fleet_watch.service import sessions

    with open_fleet() as fleet:
        lease = sessions.ensure(fleet, current_session(session_id), owner_pid=owner_pid, repo=repo)
    return _show(lease, "active", as_json)


@session.command()
@_session_options
def heartbeat(session_id: str | None, as_json: bool) -> int:
    """Renew a lease (exit 3 if there is none: a heartbeat never creates one)."""
    from fleet_watch.service import sessions

    with open_fleet() as fleet:
        lease = sessions.heartbeat(fleet, current_session(session_id))
    return _show(lease, "renewed", as_json)


@session.command()
@_session_options
def close(session_id: str | None, as_json: bool) -> int:
    """Close a lease: its repo and the session's reservations are released."""
    from fleet_watch.service import sessions

    with open_fleet() as fleet:
        lease = sessions.close(fleet, current_session(session_id))
    return _show(lease, "closed", as_json)


@session.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> int:
    """Every lease, open or closed, with its owner's liveness."""
    from fleet_watch.service import sessions

    with open_fleet() as fleet:
        found = sessions.list_leases(fleet)
    if as_json:
        emit_json(found)
        return 0
    if not found:
        click.echo("No session leases.")
    for lease in found:
        click.echo(f"{lease['session_id'][:40]:<40} {lease['status']:<10} owner {lease['owner_pid'] or '-'}  "
                   f"{lease['repo_dir'] or ''}")
    return 0


@click.command()
@click.option("--port", "ports", type=PortOrAuto(), multiple=True, help="A port, or `auto` for a free one that binds.")
@click.option("--repo", "repos", multiple=True, help="A repository (and everything inside it).")
@click.option("--gpu", "gpu_mb", type=MB, default=0, help="GPU memory (MB).")
@click.option("--gpu-device", type=DEVICE, help="NVIDIA device index (multi-GPU machines).")
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 7 * 24 * 3600), default=600, show_default=True,
              help="Seconds until the reservation lapses if no process takes it over.")
@click.option("--session-id", help="The session that reserves (default: the session rule).")
@click.option("--json", "as_json", is_flag=True)
def claim(ports: tuple[int | str, ...], repos: tuple[str, ...], gpu_mb: int, gpu_device: int | None, ttl_s: int,
          session_id: str | None, as_json: bool) -> int:
    """Reserve resources before a process exists. Exit 1 (and a CONFLICT event) when one is held."""
    from fleet_watch.service import claims

    if sum(1 for p in ports if p == "auto") > 1:
        raise UsageError("--port auto may be given once")
    with open_fleet() as fleet:
        res = claims.reserve(fleet, ports=[p for p in ports if isinstance(p, int)], auto_port="auto" in ports,
                             repos=repos, gpu_mb=gpu_mb, gpu_device=gpu_device, ttl_s=ttl_s,
                             session_id=current_session(session_id))
        view = claims.reservation_view(res, fleet.clock.now())
    if as_json:
        emit_json(view)
    else:
        held = [f"port {p}" for p in view["ports"]] + [f"repo {r}" for r in view["repos"]]
        held += [f"{g['mb']}MB GPU" for g in view["gpu"]]
        click.echo(f"Claim {view['claim_id']}: {', '.join(held)} for session {view['session_id']} "
                   f"until {view['expires_at']}")
    return 0
