"""Opening the fleet from the environment: the one place where the CLI resolves home and session."""

from __future__ import annotations

import os
import sys

from fleet_watch.core import inputs
from fleet_watch.service.fleet import Fleet

# Where an agent tells its children which session they belong to, after Fleet Watch's own variable. Claude Code
# exports its session id (the same value its hooks receive as ``session_id``); Codex and Gemini CLI export none
# (ecosystem.md, section 3.6), so their hooks pass the id from the payload.
AGENT_SESSION_VARS = ("CLAUDE_CODE_SESSION_ID",)


def open_fleet(busy_timeout_ms: int | None = None) -> Fleet:
    """The registry for this command; ``busy_timeout_ms`` overrides how long a write waits for the lock."""
    from fleet_watch.config import resolve_home

    home = resolve_home(os.environ)
    fleet = Fleet.open(home) if busy_timeout_ms is None else Fleet.open(home, busy_timeout_ms=busy_timeout_ms)
    for warning in fleet.settings.warnings:
        sys.stderr.write(f"Warning: {warning}\n")
    return fleet


def current_session(explicit: str | None) -> str | None:
    """The session rule, for every command: --session-id, else $FLEET_SESSION_ID, else the agent's own session
    variable (Claude Code's $CLAUDE_CODE_SESSION_ID), else term-$TERM_SESSION_ID, else none."""
    if explicit:
        return inputs.text("--session-id", explicit)
    for var in ("FLEET_SESSION_ID", *AGENT_SESSION_VARS):
        value = os.environ.get(var)
        if value:
            return inputs.text(f"${var}", value)
    if os.environ.get("TERM_SESSION_ID"):
        return inputs.text("$TERM_SESSION_ID", "term-" + os.environ["TERM_SESSION_ID"])
    return None
