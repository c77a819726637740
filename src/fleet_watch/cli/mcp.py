"""``fleet mcp``: Fleet Watch as a Model Context Protocol server on stdio (the official ``mcp`` SDK, optional extra
``fleet-watch[mcp]``). The tools live in ``cli/mcp_server.py``, imported only here: ``mcp`` costs a second to import,
and ``fleet guard`` and the hooks never load it."""

from __future__ import annotations

import click

from fleet_watch.errors import Unavailable


@click.command("mcp")
def mcp_command() -> int:
    """Serve Fleet Watch's tools over MCP on stdio (guard, check, release, status, estimate, health).

    Register it with `claude mcp add --transport stdio fleet -- fleet mcp` or `codex mcp add fleet -- fleet mcp`.
    Needs the optional extra: pip install 'fleet-watch[mcp]'.
    """
    try:
        from fleet_watch.cli.mcp_server import build_server
    except ImportError as err:
        raise Unavailable(f"fleet mcp needs the MCP SDK 2.x ({err}): pip install 'fleet-watch[mcp]'") from err
    build_server().run()
    return 0
