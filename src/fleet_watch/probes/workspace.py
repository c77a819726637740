"""Where a file belongs and who started us: the file system and process-table questions the agent hooks ask."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Processes that stand between an agent and its hook command: a shell running the hook's command line, ``env``,
# ``timeout``. The agent's own process is the first ancestor that is none of these.
_PASS_THROUGH = {"sh", "bash", "dash", "zsh", "ksh", "fish", "env", "timeout", "nohup", "fleet"}
_MAX_DEPTH = 6


def enclosing_repo(path: str) -> str:
    """The git work tree that holds ``path`` (its root: the nearest ancestor with a ``.git`` directory or file, so a
    linked worktree is its own root), else the directory ``path`` is in. ``path`` need not exist yet."""
    here = os.path.dirname(os.path.abspath(path))
    probe = here
    for _ in range(256):
        if os.path.exists(os.path.join(probe, ".git")):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return here


def write_repos(path: str) -> tuple[str, ...]:
    """What a write to ``path`` must be checked against: the git work tree that holds it (the unit agents work in),
    else the file itself (a lock covers it only from above: another session's repo further down the same folder is
    not touched). Both for the path as named and, when a symlink on the way (the file itself, or a directory
    before a ``..``) leads elsewhere, for where it really lands: an editor may write through the link or replace
    it."""
    def unit(target: str) -> str:
        tree = enclosing_repo(target)
        return tree if is_git_work_tree(tree) else os.path.abspath(target)

    named, real = unit(path), unit(os.path.realpath(path))
    return (named,) if real == named else (named, real)


def parent_pid(pid: int, proc_root: Path | None = None) -> int | None:
    """The parent of ``pid``, or None when the process is gone or unreadable."""
    if sys.platform.startswith("linux"):
        try:
            data = (proc_root or Path("/proc")).joinpath(str(pid), "stat").read_bytes()
            return int(data[data.rfind(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    import psutil

    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def agent_process(start: int | None = None) -> int | None:
    """The PID of the agent that ran this hook: our parent, skipping the shells and wrappers in between."""
    from fleet_watch.probes.processes import process_facts

    pid = os.getppid() if start is None else start
    for _ in range(_MAX_DEPTH):
        facts = process_facts(pid)
        if facts is None:
            return None
        if (facts.name or "") not in _PASS_THROUGH:
            return pid
        parent = parent_pid(pid)
        if parent is None or parent <= 1:
            return pid
        pid = parent
    return pid


def is_git_work_tree(path: str) -> bool:
    return os.path.exists(os.path.join(path, ".git"))


def free_sibling(base: str, suffix: str) -> str:
    """``<base>-<suffix>``, or ``<base>-<suffix>-N``: a path next to ``base`` that does not exist yet."""
    candidate = f"{base.rstrip('/')}-{suffix}"
    for n in range(2, 100):
        if not os.path.lexists(candidate):
            return candidate
        candidate = f"{base.rstrip('/')}-{suffix}-{n}"
    return candidate
