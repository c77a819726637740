"""``fleet hook claude|codex|gemini``: one agent hook call, answered in that agent's format.

The work is in ``cli/hook_answer.py``, which ``fleet hook <agent>`` reaches without click; this command is what
``fleet --help`` and ``fleet hook --help`` show, and the path taken with extra arguments.
"""

from __future__ import annotations

import click

from fleet_watch.cli.hook_answer import run
from fleet_watch.core.hookio import AGENTS, Agent


@click.command()
@click.argument("agent", type=click.Choice(AGENTS))
def hook(agent: Agent) -> int:
    """Answer one Claude Code / Codex / Gemini CLI hook call (JSON on stdin) in that agent's format.

    PreToolUse/BeforeTool: a shell command that starts a server (ollama, vLLM, llama.cpp, MLX, SGLang, dev servers,
    anything with --port/-p/PORT=) is checked like `fleet guard`; a file write is checked against other sessions'
    repo locks. SessionStart/SessionEnd are accepted. Denies on any failure unless hooks.on_error is "warn".
    """
    return run(agent)
