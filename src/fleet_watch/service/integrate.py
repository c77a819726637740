"""``fleet integrate``: put Fleet Watch's hooks into an agent's settings file, or take them out, safely.

The file is read strictly (a file that is not a JSON object is refused, never overwritten), changed through
``core.agent_settings`` (which keeps everything that is not ours), backed up before it is replaced, and replaced
atomically with its mode kept. An unchanged document is not written at all.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from fleet_watch import jsonio
from fleet_watch.core import agent_settings
from fleet_watch.core.hookio import Agent
from fleet_watch.errors import UsageError

AGENT_NAMES: dict[Agent, str] = {"claude": "Claude Code", "codex": "Codex", "gemini": "Gemini CLI"}
NOTES: dict[Agent, str] = {
    "claude": "",
    "codex": "Codex runs a new command hook only after you review and trust it (/hooks in Codex).",
    "gemini": "Gemini CLI runs hooks only while its hooks system is enabled (/settings, 'Enable Hooks System').",
}


def settings_path(agent: Agent, project: str | None, environ: dict[str, str] | None = None) -> Path:
    """The agent's shared settings file: in ``project`` (its ``.claude``/``.codex``/``.gemini`` folder), or the
    user's own (``~/.claude/settings.json``, ``$CODEX_HOME/hooks.json``, ``~/.gemini/settings.json``)."""
    env = os.environ if environ is None else environ
    if project is not None:
        base = Path(project).expanduser()
        if not base.is_dir():
            raise UsageError(f"--project {project}: not a directory")
        folder = base.resolve() / {"claude": ".claude", "codex": ".codex", "gemini": ".gemini"}[agent]
    elif agent == "codex" and env.get("CODEX_HOME"):
        folder = Path(env["CODEX_HOME"]).expanduser()
    else:
        home = env.get("HOME") or str(Path.home())
        folder = Path(home) / {"claude": ".claude", "codex": ".codex", "gemini": ".gemini"}[agent]
    return folder / ("hooks.json" if agent == "codex" else "settings.json")


def fleet_command(agent: Agent) -> str:
    """The hook's command line: this installation's ``fleet``, by absolute path, so that an agent whose PATH lacks
    it still finds it (a missing command exits 127, and the agents run the tool then)."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "fleet" and os.access(script, os.X_OK):
        exe = str(script)
    else:
        beside = Path(sys.executable).parent / "fleet"
        found = str(beside) if os.access(beside, os.X_OK) else shutil.which("fleet")
        if found is None:
            return shlex.join([sys.executable, "-m", "fleet_watch", "hook", agent])
        exe = found
    return shlex.join([exe, "hook", agent])


class Change(NamedTuple):
    path: Path
    before: str | None  # None: the file did not exist
    after: str
    removed: int = 0

    @property
    def changed(self) -> bool:
        return self.before != self.after and not (self.before is None and not self.after)

    def diff(self) -> str:
        old = [] if self.before is None else self.before.splitlines(keepends=True)
        return "".join(difflib.unified_diff(old, self.after.splitlines(keepends=True),
                                            fromfile=str(self.path) if self.before is not None else "/dev/null",
                                            tofile=str(self.path)))


def _indent(text: str) -> int | str:
    """The indentation the file already uses (two spaces when there is none to copy)."""
    m = re.search(r"\n([ \t]+)\S", text)
    if m is None:
        return 2
    unit = m.group(1)
    return unit if "\t" in unit else len(unit)


def _read(path: Path) -> tuple[str | None, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, {}
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    try:
        text = raw.decode("utf-8")
        doc = jsonio.loads(text) if text.strip() else {}
    except (UnicodeDecodeError, jsonio.BadJson) as err:
        raise UsageError(f"{path} is not a JSON document ({err}); not touching it") from err
    if not isinstance(doc, dict):
        raise UsageError(f"{path} does not hold a JSON object; not touching it")
    return text, doc


def plan(agent: Agent, path: Path, *, remove: bool, command: str | None = None) -> Change:
    """What ``fleet integrate`` would write (nothing is written here)."""
    before, doc = _read(path)
    removed = 0
    try:
        if remove:
            new, removed = agent_settings.remove(doc, agent, str(path))
        else:
            new = agent_settings.add(doc, agent, command or fleet_command(agent), str(path))
    except agent_settings.BadSettings as err:
        raise UsageError(f"{err}; not touching it") from err
    if before is not None and new == doc:
        return Change(path, before, before, removed)
    if before is None and remove:
        return Change(path, None, "", 0)  # nothing there, nothing to remove: no file is created either
    after = _backup_text(path, new) if remove else None
    if after is None:
        after = json.dumps(new, indent=_indent(before or ""), ensure_ascii=False) + "\n"
        if before is not None and "\r\n" in before:
            after = after.replace("\n", "\r\n")  # the file's own line endings
    return Change(path, before, after, removed)


def _backup_text(path: Path, doc: dict[str, Any]) -> str | None:
    """The text of our newest backup that holds exactly ``doc``: removing what integrate added then gives back the
    file byte for byte, its formatting included, when nothing else changed in between."""
    backups = sorted(path.parent.glob(f"{glob.escape(path.name)}.fleet-watch-*.bak"), reverse=True)[:20]
    for backup in backups:
        try:
            text = backup.read_bytes().decode("utf-8")  # as stored: CRLF stays CRLF
            if jsonio.loads(text) == doc:
                return text
        except (OSError, UnicodeDecodeError, jsonio.BadJson):
            continue
    return None


def apply(change: Change) -> Path | None:
    """Write ``change`` (backing the old file up first); returns the backup's path, if there was a file. A settings
    file that is a symlink (into a dotfiles repository) is written where it points, and stays a link."""
    if not change.changed:
        return None
    path = Path(os.path.realpath(change.path)) if change.path.is_symlink() else change.path
    backup: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
        if change.before is not None:
            mode = path.stat().st_mode & 0o777
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            named = change.path  # backups sit beside the name the agent reads, where --remove looks for them
            backup = named.with_name(f"{named.name}.fleet-watch-{stamp}.bak")
            n = 1
            while backup.exists():
                n += 1
                backup = named.with_name(f"{named.name}.fleet-watch-{stamp}-{n}.bak")
            shutil.copy2(path, backup)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:  # the text's line endings, as they are
                fh.write(change.after)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}") from err
    return backup
