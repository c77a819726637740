"""``fleet run``: start a command under Fleet Watch, for agents and scripts without hooks (Aider, cron, notebooks)."""

from __future__ import annotations

import click

from fleet_watch.errors import UsageError


def _port(value: str | None) -> tuple[int | None, bool]:
    if value is None:
        return None, False
    if value == "auto":
        return None, True
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise UsageError(f"--port must be a port number (1-65535) or 'auto', got {value!r}")
    return int(value), False


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--name", required=True, help="Human-readable name of what runs.")
@click.option("--workstream", required=True, help="Project or workstream it belongs to.")
@click.option("--port", "port_text", metavar="N|auto", help="Port it will bind; 'auto' picks a free one.")
@click.option("--gpu", "gpu_mb", type=int, help="GPU memory (MB) it claims; starts on one device go one at a time.")
@click.option("--gpu-device", type=int, help="NVIDIA device index of the GPU claim (multi-GPU machines).")
@click.option("--repo", help="Repository it writes to (locked for its session while it runs).")
@click.option("--model", help="Model it loads: its working set is checked (and claimed when --gpu is not given).")
@click.option("--priority", type=int, default=3, show_default=True, help="1 (lowest) to 5 (highest).")
@click.option("--session-id", help="Owning session (default: $FLEET_SESSION_ID).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(name: str, workstream: str, port_text: str | None, gpu_mb: int | None, gpu_device: int | None,
        repo: str | None, model: str | None, priority: int, session_id: str | None, command: tuple[str, ...]) -> int:
    """Run COMMAND if the guard allows it, holding its claims while it runs: fleet run --name N --workstream W
    [--port N|auto] ... -- COMMAND ARGS...

    {port} in COMMAND's arguments becomes the granted port, and PORT is set to it. Exit 1 without starting anything
    when denied; otherwise COMMAND's own exit status (128+N when signal N ended it). SIGINT, SIGTERM and SIGHUP
    are passed on to it; its claims are released when it exits.
    """
    from fleet_watch.cli.context import current_session, open_fleet
    from fleet_watch.cli.guard import human_lines
    from fleet_watch.service import run as svc

    port, auto = _port(port_text)

    def say(text: str) -> None:
        click.echo(f"fleet run: {text}", err=True)

    request = svc.RunRequest(argv=list(command), name=name, workstream=workstream, port=port, auto_port=auto,
                             gpu_mb=gpu_mb, gpu_device=gpu_device, repo=repo, model=model,
                             session_id=current_session(session_id), priority=priority)
    fleet = open_fleet()
    try:
        outcome = svc.launch(fleet, request, say)
        if isinstance(outcome, svc.Denied):
            for line in human_lines(outcome.result):
                click.echo(line, err=True)
            say("denied; the command was not started")
            return 1
        say(svc.describe_start(outcome))
        return svc.supervise(fleet, outcome, say)
    finally:
        fleet.close()
