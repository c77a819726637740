"""``fleet install-systemd`` / ``install-launchd`` and their ``uninstall-*``: keep ``fleet watch`` always on."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from fleet_watch.cli.output import emit_json
from fleet_watch.service.install import Host, Outcome


def _host() -> Host:
    """This machine and user, and how to start this very `fleet` (absolute: a service manager has no PATH of
    ours): the `fleet` script next to this Python (a venv or pipx), else this Python with ``-m fleet_watch``."""
    import pwd

    from fleet_watch.config import HOME_ENV, resolve_home

    script = shutil.which("fleet", path=str(Path(sys.executable).parent))
    argv = (os.path.abspath(script),) if script else (os.path.abspath(sys.executable), "-m", "fleet_watch")
    user_home = Path.home()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or user_home / ".config")
    env = {HOME_ENV: str(resolve_home(os.environ))} if os.environ.get(HOME_ENV) else {}
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = os.environ.get("USER") or str(os.getuid())
    return Host(platform=sys.platform, user=user, uid=os.getuid(), user_home=user_home, config_home=config_home,
                fleet_argv=argv, env=env, path_env=os.environ.get("PATH") or "/usr/bin:/bin:/usr/sbin:/sbin")


def _show(outcome: Outcome, as_json: bool, verb: str) -> int:
    if as_json:
        emit_json(outcome.to_dict())
        return 0
    click.echo(f"{verb}: {outcome.path}")
    for argv in outcome.commands:
        click.echo(f"Ran: {' '.join(argv)}")
    for note in outcome.notes:
        click.echo(f"Note: {note}")
    return 0


_interval = click.option("--interval", type=float, default=60.0, show_default=True,
                         help="Seconds between the watch's cycles.")
_output = click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
                       help="Only write the file here (any platform); install and load nothing.")
_json = click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")


@click.command("install-systemd")
@_interval
@_output
@click.option("--no-enable", is_flag=True, help="Write the unit but do not enable or start it.")
@_json
def install_systemd(interval: float, output: Path | None, no_enable: bool, as_json: bool) -> int:
    """Linux: a systemd user unit running `fleet watch`, enabled with systemctl --user enable --now."""
    from fleet_watch.service.install import install_systemd as install

    return _show(install(_host(), interval=interval, output=output, enable=not no_enable), as_json, "Written")


@click.command("uninstall-systemd")
@_json
def uninstall_systemd(as_json: bool) -> int:
    """Stop and disable the unit that install-systemd wrote, then remove it."""
    from fleet_watch.service.install import uninstall_systemd as uninstall

    return _show(uninstall(_host()), as_json, "Removed")


@click.command("install-launchd")
@_interval
@_output
@click.option("--no-load", is_flag=True, help="Write the plist but do not load it.")
@_json
def install_launchd(interval: float, output: Path | None, no_load: bool, as_json: bool) -> int:
    """macOS: a LaunchAgent running `fleet watch`, loaded with launchctl bootstrap gui/$UID."""
    from fleet_watch.service.install import install_launchd as install

    return _show(install(_host(), interval=interval, output=output, load=not no_load), as_json, "Written")


@click.command("uninstall-launchd")
@_json
def uninstall_launchd(as_json: bool) -> int:
    """Unload the LaunchAgent that install-launchd wrote, then remove its plist (logs are kept)."""
    from fleet_watch.service.install import uninstall_launchd as uninstall

    return _show(uninstall(_host()), as_json, "Removed")
