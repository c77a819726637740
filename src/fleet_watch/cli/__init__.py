"""The ``fleet`` entry point.

``fleet hook <agent>`` is answered without importing click: agents call it before every tool call, and click's
import alone is about half of a cold start. Everything else goes to the click application (``cli.app``: parsing,
printing, the one error funnel).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

HOOK_AGENTS = ("claude", "codex", "gemini")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "hook" and args[1] in HOOK_AGENTS:
        from fleet_watch.cli.hook_answer import run

        return run(args[1])  # type: ignore[arg-type]  # checked against HOOK_AGENTS just above
    from fleet_watch.cli.app import main as app_main

    return app_main(args)


def __getattr__(name: str) -> Any:
    """``COMMANDS`` and the error payload live in ``cli.app``; importing them from here still works."""
    import importlib

    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module("fleet_watch.cli.app"), name)
