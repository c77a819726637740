"""The ``fleet`` command: parsing, printing and exit codes, nothing else.

Subcommands are imported only when invoked, so ``fleet guard`` pays for its own imports and no one
else's. Every error reaches one funnel (``main``) that prints one line (or one JSON object under
``--json``) and picks the exit code; a traceback appears only with ``--debug`` or FLEET_WATCH_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from fleet_watch.errors import ExitCode, FleetError

# name -> (module, attribute, one-line help shown by `fleet --help` without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "status": ("fleet_watch.cli.processes", "status", "Show registered processes, GPU budget and claimed ports."),
    "guard": ("fleet_watch.cli.guard", "guard", "Pre-flight verdict for a port, repo and GPU claim (agent contract)."),
    "check": ("fleet_watch.cli.guard", "check", "The same decisions as guard, one line per resource, exit 0/1."),
    "register": ("fleet_watch.cli.processes", "register", "Register a running process and its claims, atomically."),
    "heartbeat": ("fleet_watch.cli.processes", "heartbeat", "Refresh the heartbeat of a registered process."),
    "release": ("fleet_watch.cli.processes", "release", "Release a process's claims (--pid) or one port (--port)."),
    "clean": ("fleet_watch.cli.processes", "clean", "Drop rows whose process is gone; log expired heartbeats."),
    "stale": ("fleet_watch.cli.ownership", "stale", "Registered processes whose heartbeat expired, with evidence."),
    "reconcile": ("fleet_watch.cli.ownership", "reconcile", "Every registered process's ownership class (read-only)."),
    "reap": ("fleet_watch.cli.ownership", "reap", "Stop orphan-confirmed processes (dry run unless --confirm)."),
    "reap-sessions": ("fleet_watch.cli.ownership", "reap_sessions", "Stop detached agent sessions burning CPU (dry "
                      "run unless --confirm)."),
    "runaway": ("fleet_watch.cli.ownership", "runaway", "CPU burners over a window; --kill stops the owned ones."),
    "preempt": ("fleet_watch.cli.ownership", "preempt", "Take a port from a lower-priority holder, with escalation."),
    "session": ("fleet_watch.cli.sessions", "session", "Session leases: start, heartbeat, ensure, close, list."),
    "claim": ("fleet_watch.cli.sessions", "claim", "Reserve a port (or auto), repo or GPU memory ahead of a process."),
    "estimate": ("fleet_watch.cli.estimate", "estimate", "Will a model fit? Its memory working set before launch."),
    "history": ("fleet_watch.cli.history", "history", "The hash-chained audit trail; --verify checks it."),
    "discover": ("fleet_watch.cli.discover", "discover", "Scan processes once; register, update and clean workloads."),
    "watch": ("fleet_watch.cli.watch", "watch", "Discovery cycles in the foreground until SIGINT/SIGTERM."),
    "health": ("fleet_watch.cli.health", "health", "Memory pressure, sessions, idle workloads, GPU memory watch."),
    "hook": ("fleet_watch.cli.hook", "hook", "Answer a Claude Code / Codex / Gemini CLI hook call (fails closed)."),
    "integrate": ("fleet_watch.cli.integrate", "integrate", "Install (or --remove) the hooks in an agent's settings."),
    "mcp": ("fleet_watch.cli.mcp", "mcp_command", "Serve guard, check, release, status, estimate, health over MCP."),
    "run": ("fleet_watch.cli.run", "run", "Start a command if the guard allows it; hold its claims while it runs."),
    "report": ("fleet_watch.cli.report", "report", "Write STATE_REPORT.md, state.json and the changelog entry."),
    "changelog": ("fleet_watch.cli.report", "changelog", "What changed between successive states (bounded, rotated)."),
    "top": ("fleet_watch.cli.top", "top", "Live view of processes, classes, GPU claims and sessions (q quits)."),
    "install-systemd": ("fleet_watch.cli.install", "install_systemd", "Linux: run fleet watch as a systemd user unit."),
    "uninstall-systemd": ("fleet_watch.cli.install", "uninstall_systemd", "Stop and remove the systemd user unit."),
    "install-launchd": ("fleet_watch.cli.install", "install_launchd", "macOS: run fleet watch as a LaunchAgent."),
    "uninstall-launchd": ("fleet_watch.cli.install", "uninstall_launchd", "Unload and remove the LaunchAgent."),
    "metrics": ("fleet_watch.cli.report", "metrics", "Prometheus metrics on stdout or to a node_exporter textfile."),
    "models": ("fleet_watch.cli.servers", "models", "Model servers running here and the models they hold resident."),
    "unload": ("fleet_watch.cli.servers", "unload", "Ask the server holding a model to unload it (never a signal)."),
    "thunder": ("fleet_watch.cli.thunder", "thunder", "Thunder Compute instances as external resources."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        command = getattr(importlib.import_module(spec[0]), spec[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fleet-watch", prog_name="fleet")
def cli() -> None:
    """Fleet Watch: process governance for AI workloads on a single machine."""


def _error_payload(kind: str, message: str, code: int, command: str | None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {**(extra or {}), "allowed": False, "reason": message, "error": kind, "exit_code": code}
    if command in ("guard", "check"):
        # The contract's keys too, so that an agent reading doc["checks"] fails closed instead of crashing.
        doc.update(request=None, checks={}, state=None)
    return doc


MAX_MESSAGE = 400  # an error quotes outside input; a 100,000-character argument is never echoed whole


def _report(message: str, kind: str, code: int, as_json: bool, command: str | None = None,
            extra: dict[str, Any] | None = None) -> int:
    message = " ".join(message.split("\n"))
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE - 40]}... ({len(message)} characters in all)"
    if as_json:
        from fleet_watch.cli.output import emit_json

        emit_json(_error_payload(kind, message, code, command, extra))
    else:
        click.echo(f"Error: {message}", err=True)
    return code


def _silence_stdout() -> None:
    """After a broken pipe (``fleet history | head -1``), point stdout at /dev/null so that the interpreter's
    final flush cannot fail again: the reader left, which is not an error of ours."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    # --debug works anywhere on the line (before or after the subcommand): it is taken out before click parses.
    debug = "--debug" in args or os.environ.get("FLEET_WATCH_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    command = next((a for a in args if not a.startswith("-")), None)
    try:
        result = cli.main(args=args, prog_name="fleet", standalone_mode=False)
    except FleetError as err:
        return _report(err.message, err.kind, int(err.exit_code), as_json, command, err.extra)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else "", err=True)
        return int(ExitCode.USAGE)
    except click.UsageError as err:
        message = err.format_message().splitlines()[0] if err.format_message() else "usage error"
        if err.ctx is not None and not as_json:  # one line: the error, and where the usage is
            message += f" (see '{err.ctx.command_path} --help')"
        return _report(message, "usage_error", int(ExitCode.USAGE), as_json, command)
    except click.Abort:
        return _report("aborted", "aborted", 130, as_json, command)
    except click.ClickException as err:
        return _report(err.format_message(), "error", err.exit_code, as_json, command)
    except click.exceptions.Exit as err:
        return int(err.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except SystemExit:
        # click answers a broken pipe (EPIPE while writing) with sys.exit(1) after wrapping stdout: the reader left
        # (`fleet history | head -1`), which is not a denial.
        if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):  # click's own marker for a broken pipe
            _silence_stdout()
            return 0
        raise
    except Exception as err:  # noqa: BLE001 - the funnel of last resort: one line, never a traceback
        if debug:
            import traceback

            traceback.print_exc()
        return _report(f"internal error: {type(err).__name__}: {err} (run with --debug for details)",
                       "internal_error", int(ExitCode.INTERNAL), as_json, command)
    return int(result) if isinstance(result, int) else 0
