"""Opening the fleet from the environment: the one place where the CLI resolves home and session."""

from __future__ import annotations

import os

from fleet_watch.service.fleet import Fleet


def open_fleet() -> Fleet:
    from fleet_watch.config import resolve_home

    return Fleet.open(resolve_home(os.environ))


def current_session(explicit: str | None) -> str | None:
    """--session-id, else FLEET_SESSION_ID, else term-$TERM_SESSION_ID, else none."""
    if explicit:
        return explicit
    if os.environ.get("FLEET_SESSION_ID"):
        return os.environ["FLEET_SESSION_ID"]
    if os.environ.get("TERM_SESSION_ID"):
        return "term-" + os.environ["TERM_SESSION_ID"]
    return None
