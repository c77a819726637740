"""Fleet Watch's entries in an agent's hook settings: add them to a settings document, or take exactly them out.

Pure: a decoded settings document in, a new one out; the caller reads and writes files. Everything that is not
ours (other hooks, other matcher groups, other settings, unknown keys) is carried over untouched and in order.
Ours are recognised by their command, ``<anything>/fleet hook <agent>`` (or ``python -m fleet_watch hook
<agent>``), so that a later ``--remove`` finds them even when the path to ``fleet`` has changed since.

Shapes (ecosystem.md section 3): Claude Code ``.claude/settings.json`` and Codex ``hooks.json`` hold
``{"hooks": {Event: [{"matcher": M, "hooks": [{"type": "command", "command": C, "timeout": seconds}]}]}}``;
Gemini CLI's ``settings.json`` the same with ``BeforeTool`` and a timeout in milliseconds.
"""

from __future__ import annotations

import copy
import shlex
from typing import Any, NamedTuple

from fleet_watch.core.hookio import PRE_TOOL_EVENT, PRE_TOOL_MATCHER, Agent

# Long enough that the hook's own deadline (10 s) answers first: an agent that times a hook out runs the tool.
TIMEOUT_S = 30
# Claude Code gives SessionEnd hooks 1.5 s in all unless a hook asks for more (up to 60 s).
SESSION_END_TIMEOUT_S = 10


class BadSettings(ValueError):
    """The settings document has a shape we do not edit; the message names the key."""


class Entry(NamedTuple):
    event: str
    matcher: str | None
    handler: dict[str, Any]


def entries(agent: Agent, command: str) -> list[Entry]:
    """What ``fleet integrate <agent>`` installs: the tool hook plus the session hooks the agent has."""
    def handler(seconds: int) -> dict[str, Any]:
        if agent == "gemini":
            return {"name": "fleet-watch", "type": "command", "command": command, "timeout": seconds * 1000}
        return {"type": "command", "command": command, "timeout": seconds}

    out = [Entry(PRE_TOOL_EVENT[agent], PRE_TOOL_MATCHER[agent], handler(TIMEOUT_S)),
           Entry("SessionStart", None, handler(TIMEOUT_S))]
    if agent != "codex":  # Codex has no SessionEnd event
        out.append(Entry("SessionEnd", None, handler(SESSION_END_TIMEOUT_S)))
    return out


def is_ours(handler: object, agent: Agent) -> bool:
    """A handler that runs ``fleet hook <agent>``, whatever the path to fleet."""
    if not isinstance(handler, dict) or not isinstance(handler.get("command"), str):
        return False
    try:
        words = shlex.split(handler["command"])
    except ValueError:
        return False
    if len(words) < 3 or words[-2:] != ["hook", agent]:
        return False
    head = words[:-2]
    return head[-1].rsplit("/", 1)[-1] == "fleet" or head[-2:] == ["-m", "fleet_watch"]


def _hooks_table(doc: dict[str, Any], where: str) -> dict[str, Any] | None:
    table = doc.get("hooks")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise BadSettings(f"{where}: 'hooks' is not an object")
    return table


def _groups(table: dict[str, Any], event: str, where: str) -> list[Any]:
    groups = table.get(event, [])
    if not isinstance(groups, list):
        raise BadSettings(f"{where}: 'hooks.{event}' is not a list")
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("hooks", []), list):
            raise BadSettings(f"{where}: 'hooks.{event}[{i}]' is not a matcher group with a 'hooks' list")
    return groups


def _strip(groups: list[Any], agent: Agent) -> tuple[list[Any], int]:
    """``groups`` without our handlers; a group that only we filled goes with them. Returns the count removed."""
    out: list[Any] = []
    removed = 0
    for group in groups:
        handlers = group.get("hooks", [])
        kept = [h for h in handlers if not is_ours(h, agent)]
        removed += len(handlers) - len(kept)
        if kept or not handlers:
            out.append({**group, "hooks": kept} if len(kept) != len(handlers) else group)
    return out, removed


def _installed(groups: list[Any], agent: Agent, entry: Entry) -> bool:
    """Exactly one handler of ours, exactly as we would write it, in a group with our matcher."""
    found = [(g, h) for g in groups for h in g.get("hooks", []) if is_ours(h, agent)]
    return len(found) == 1 and found[0][1] == entry.handler and found[0][0].get("matcher") == entry.matcher


def add(doc: dict[str, Any], agent: Agent, command: str, where: str = "settings") -> dict[str, Any]:
    """``doc`` with our hooks in it (a new document; ``doc`` is not changed). Idempotent: adding twice is adding
    once, and an older entry of ours (another path to fleet, another matcher) is replaced in place of piling up."""
    if not isinstance(doc, dict):
        raise BadSettings(f"{where}: the document is not a JSON object")
    out = copy.deepcopy(doc)
    table = _hooks_table(out, where)
    if table is None:
        table = out["hooks"] = {}
    for entry in entries(agent, command):
        groups = _groups(table, entry.event, where)
        if _installed(groups, agent, entry):
            continue
        groups, _ = _strip(groups, agent)
        group: dict[str, Any] = {} if entry.matcher is None else {"matcher": entry.matcher}
        group["hooks"] = [entry.handler]
        table[entry.event] = [*groups, group]
    return out


def remove(doc: dict[str, Any], agent: Agent, where: str = "settings") -> tuple[dict[str, Any], int]:
    """``doc`` without any hook of ours, and how many were taken out. Event lists and the ``hooks`` table that
    only held ours go too; everything else stays as it was."""
    if not isinstance(doc, dict):
        raise BadSettings(f"{where}: the document is not a JSON object")
    out = copy.deepcopy(doc)
    table = _hooks_table(out, where)
    if table is None:
        return out, 0
    total = 0
    for event in list(table):
        value = table[event]
        if not isinstance(value, list) or not all(isinstance(g, dict) for g in value):
            continue  # not an event list (Gemini's "disabled" holds names): not ours to touch
        groups, removed = _strip(_groups(table, event, where), agent)
        if removed:
            total += removed
            if groups:
                table[event] = groups
            else:
                del table[event]
    if total and not table:
        del out["hooks"]
    return out, total
