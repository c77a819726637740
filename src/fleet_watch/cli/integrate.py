"""``fleet integrate claude|codex|gemini``: install (or remove) Fleet Watch's hooks in an agent's settings."""

from __future__ import annotations

import click

from fleet_watch.core.hookio import AGENTS, Agent
from fleet_watch.errors import UsageError


@click.command()
@click.argument("agent", type=click.Choice(AGENTS))
@click.option("--project", "project", metavar="DIR", help="The project's shared settings (DIR/.claude/settings.json, "
              "DIR/.codex/hooks.json, DIR/.gemini/settings.json).")
@click.option("--user", "user", is_flag=True, help="Your own settings for every project (the default).")
@click.option("--remove", is_flag=True, help="Take out exactly the hooks that integrate added.")
@click.option("--dry-run", is_flag=True, help="Print the change as a diff; write nothing.")
def integrate(agent: Agent, project: str | None, user: bool, remove: bool, dry_run: bool) -> int:
    """Write Fleet Watch's hooks into an agent's settings: every shell command and file write is checked with
    `fleet hook <agent>` first. Merges with what is there, changes nothing twice, backs the file up."""
    from fleet_watch.service import integrate as svc

    if project is not None and user:
        raise UsageError("give --project DIR or --user, not both")
    path = svc.settings_path(agent, project)
    change = svc.plan(agent, path, remove=remove)
    name = svc.AGENT_NAMES[agent]
    if dry_run:
        if change.changed:
            click.echo(change.diff(), nl=False)
        else:
            click.echo(f"{name}: {path} already {'has no Fleet Watch hooks' if remove else 'has the Fleet Watch hooks'}"
                       "; nothing to change")
        return 0
    if not change.changed:
        click.echo(f"{name}: {path} already {'has no Fleet Watch hooks' if remove else 'has the Fleet Watch hooks'}")
        return 0
    backup = svc.apply(change)
    saved = f" (backup: {backup})" if backup is not None else ""
    if remove:
        click.echo(f"{name}: removed {change.removed} Fleet Watch hook(s) from {path}{saved}")
    else:
        click.echo(f"{name}: {'created' if change.before is None else 'updated'} {path}{saved}")
        if svc.NOTES[agent]:
            click.echo(f"Note: {svc.NOTES[agent]}")
    return 0
