"""``fleet thunder sync|claim|heartbeat|release``: Thunder Compute instances as external resources."""

from __future__ import annotations

from typing import Any

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.output import emit_json

_ID = click.option("--id", "--uuid", "ident", required=True,
                   help="The instance's id as tnr shows it (e.g. 0) or its uuid.")


@click.group()
def thunder() -> None:
    """Thunder Compute instances (tnr) as external resources: sync, claim, heartbeat, release."""


def _label(doc: dict[str, Any]) -> str:
    return f"thunder:{doc.get('id') or doc['external_id']} ({doc['name']})"


@thunder.command()
@click.option("--json", "as_json", is_flag=True)
def sync(as_json: bool) -> int:
    """Ingest what `tnr --json status` reports; vanished instances are marked gone. A missing or failing tnr, or
    output that is not its documented list, is an error that changes nothing (exit 7)."""
    from fleet_watch.service.thunder import sync as do_sync

    fleet = open_fleet()
    try:
        result = do_sync(fleet).to_dict()
    finally:
        fleet.close()
    if as_json:
        emit_json(result)
        return 0
    click.echo(f"Synced {result['count']} Thunder instance(s): {len(result['added'])} added, "
               f"{len(result['gone'])} gone, {len(result['status_changes'])} status change(s)")
    for a in result["added"] + result["returned"]:
        click.echo(f"+ thunder:{a['id'] or a['external_id']} ({a['name']}) {a['status']}")
    for g in result["gone"]:
        released = f"; claim of session {g['released_session']} released" if g["released_session"] else ""
        click.echo(f"- thunder:{g['id'] or g['external_id']} ({g['name']}) gone{released}")
    for c in result["status_changes"]:
        click.echo(f"~ thunder:{c['id'] or c['external_id']} {c['old_status']} -> {c['new_status']}")
    return 0


@thunder.command()
@_ID
@click.option("--session-id", required=True, help="The session that owns the instance.")
@click.option("--repo", help="Repository the instance works on: locked for other sessions while the claim lives.")
@click.option("--workstream", help="Workstream (default: thunder).")
@click.option("--json", "as_json", is_flag=True)
def claim(ident: str, session_id: str, repo: str | None, workstream: str | None, as_json: bool) -> int:
    """Attach an owner session (and optionally a repo lock) to a synced instance; renew with `thunder heartbeat`
    before the claim's TTL (thunder_claim_ttl_s, default 600 s) runs out. Exit 1 when another session holds it."""
    from fleet_watch.service.thunder import claim as do_claim

    fleet = open_fleet()
    try:
        doc = do_claim(fleet, ident, session_id=session_id, repo=repo, workstream=workstream)
    finally:
        fleet.close()
    if as_json:
        emit_json(doc)
        return 0
    repo_text = f"; repo {doc['repo_dir']} locked" if doc["repo_dir"] else ""
    click.echo(f"Claimed {_label(doc)} for session {doc['session_id']}{repo_text} until {doc['claim_expires_at']}")
    return 0


@thunder.command()
@_ID
@click.option("--session-id", help="If given, must be the claiming session.")
@click.option("--json", "as_json", is_flag=True)
def heartbeat(ident: str, session_id: str | None, as_json: bool) -> int:
    """Extend a live claim by its TTL. Exit 3 when the instance is unknown, unclaimed or its claim expired."""
    from fleet_watch.service.thunder import heartbeat as do_heartbeat

    fleet = open_fleet()
    try:
        doc = do_heartbeat(fleet, ident, session_id=session_id)
    finally:
        fleet.close()
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"Heartbeat: {_label(doc)} claimed by session {doc['session_id']} until {doc['claim_expires_at']}")
    return 0


@thunder.command()
@_ID
@click.option("--session-id", help="If given, must be the claiming session.")
@click.option("--json", "as_json", is_flag=True)
def release(ident: str, session_id: str | None, as_json: bool) -> int:
    """Drop the claim and its repo lock (a gone instance's row is removed too). Exit 3 when there is no claim."""
    from fleet_watch.service.thunder import release as do_release

    fleet = open_fleet()
    try:
        doc = do_release(fleet, ident, session_id=session_id)
    finally:
        fleet.close()
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"Released {_label(doc)}" + (" (gone; removed)" if doc["removed"] else ""))
    return 0
