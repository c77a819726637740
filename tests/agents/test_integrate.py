"""`fleet integrate` on real settings files that already hold other hooks and settings: merge, idempotence,
exact removal, backups, dry runs, refusal of files it does not understand, and a hook that really runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.agents.helpers import claude_bash, codex_bash, denial, gemini_shell
from tests.conftest import Children

# What each agent's file looked like before: other hooks on the same events, other settings, odd formatting.
EXISTING: dict[str, str] = {
    "claude": """{
    "permissions": {"allow": ["Bash(npm test)"], "deny": ["Read(./.env)"]},
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./lint.sh", "timeout": 5}]}],
        "PostToolUse": [{"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "prettier --write"}]}]
    },
    "model": "opus"
}
""",
    "codex": """{"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.py"}]}],
  "Stop": [{"hooks": [{"type": "command", "command": "notify.sh", "timeout": 10}]}]}}
""",
    "gemini": """{
\t"theme": "GitHub",
\t"hooks": {
\t\t"disabled": ["secret-scanner"],
\t\t"BeforeTool": [{"matcher": "write_file", "hooks": [{"name": "secret-scanner", "type": "command",
\t\t\t"command": "$GEMINI_PROJECT_DIR/.gemini/hooks/scan.sh", "timeout": 5000}]}]
\t},
\t"tools": {"enableHooks": true}
}
""",
}
FILES = {"claude": ".claude/settings.json", "codex": ".codex/hooks.json", "gemini": ".gemini/settings.json"}
EVENTS = {"claude": {"PreToolUse", "SessionStart", "SessionEnd"}, "codex": {"PreToolUse", "SessionStart"},
          "gemini": {"BeforeTool", "SessionStart", "SessionEnd"}}
TOOL_EVENT = {"claude": "PreToolUse", "codex": "PreToolUse", "gemini": "BeforeTool"}


def _ours(doc: dict[str, Any], agent: str) -> dict[str, list[tuple[str | None, dict[str, Any]]]]:
    found: dict[str, list[tuple[str | None, dict[str, Any]]]] = {}
    for event, groups in doc.get("hooks", {}).items():
        for group in groups if isinstance(groups, list) else []:
            for handler in group.get("hooks", []) if isinstance(group, dict) else []:
                if handler.get("command", "").endswith(f" hook {agent}"):
                    found.setdefault(event, []).append((group.get("matcher"), handler))
    return found


def _without_ours(doc: dict[str, Any], agent: str) -> dict[str, Any]:
    hooks = {}
    for event, groups in doc.get("hooks", {}).items():
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            hooks[event] = groups
            continue
        kept = [g for g in groups if not all(h.get("command", "").endswith(f" hook {agent}") for h in g["hooks"])]
        if kept:
            hooks[event] = kept
    return {**doc, "hooks": hooks}


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_merge_idempotence_backup_and_exact_removal(fleet, tmp_path: Path, agent: str) -> None:
    settings = tmp_path / FILES[agent]
    settings.parent.mkdir()
    settings.write_text(EXISTING[agent])
    settings.chmod(0o640)
    original = json.loads(EXISTING[agent])

    r = fleet("integrate", agent, "--project", str(tmp_path))
    assert r.returncode == 0, r.stderr
    merged = json.loads(settings.read_text())
    assert _without_ours(merged, agent) == original  # nothing of theirs changed, reordered or lost
    ours = _ours(merged, agent)
    assert set(ours) == EVENTS[agent]
    assert all(len(v) == 1 for v in ours.values())
    matcher, handler = ours[TOOL_EVENT[agent]][0]
    assert matcher is not None
    assert handler["type"] == "command"
    assert handler["timeout"] == (30000 if agent == "gemini" else 30)
    assert (settings.stat().st_mode & 0o777) == 0o640
    (backup,) = tmp_path.glob(f"{FILES[agent]}.fleet-watch-*.bak")
    assert backup.read_text() == EXISTING[agent]
    if agent == "gemini":
        assert merged["hooks"]["disabled"] == ["secret-scanner"]
        assert merged["hooks"]["BeforeTool"][0] == original["hooks"]["BeforeTool"][0]

    text = settings.read_text()
    again = fleet("integrate", agent, "--project", str(tmp_path))
    assert again.returncode == 0
    assert "already has" in again.stdout
    assert settings.read_text() == text
    assert len(list(tmp_path.glob(f"{FILES[agent]}.fleet-watch-*.bak"))) == 1  # nothing written, nothing backed up

    removed = fleet("integrate", agent, "--project", str(tmp_path), "--remove")
    assert removed.returncode == 0, removed.stderr
    assert f"removed {len(EVENTS[agent])} Fleet Watch hook(s)" in removed.stdout
    assert settings.read_text() == EXISTING[agent]  # byte for byte
    assert "has no Fleet Watch hooks" in fleet("integrate", agent, "--project", str(tmp_path), "--remove").stdout


def test_crlf_and_symlinked_settings_files_are_kept_as_they_are(fleet, tmp_path: Path) -> None:
    """A settings file with CRLF line endings keeps them, and comes back byte for byte; one that is a symlink into
    a dotfiles folder is written where it points and stays a link."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "claude.json"
    original = b'{\r\n\t"model": "opus"\r\n}\r\n'
    target.write_bytes(original)
    settings = tmp_path / "project" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.symlink_to(target)

    assert fleet("integrate", "claude", "--project", str(tmp_path / "project")).returncode == 0
    assert settings.is_symlink()
    written = target.read_bytes()
    assert b"fleet" in written
    assert written.count(b"\n") == written.count(b"\r\n")  # every line ends in CRLF, as before
    assert json.loads(written)["model"] == "opus"
    removed = fleet("integrate", "claude", "--project", str(tmp_path / "project"), "--remove")
    assert removed.returncode == 0, removed.stderr
    assert settings.is_symlink()
    assert target.read_bytes() == original


def test_removal_keeps_what_the_user_changed_since(fleet, tmp_path: Path) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(EXISTING["claude"])
    assert fleet("integrate", "claude", "--project", str(tmp_path)).returncode == 0
    doc = json.loads(settings.read_text())
    doc["model"] = "sonnet"
    doc["hooks"]["PreToolUse"][-1]["hooks"].append({"type": "command", "command": "audit.sh"})
    settings.write_text(json.dumps(doc))
    assert fleet("integrate", "claude", "--project", str(tmp_path), "--remove").returncode == 0
    after = json.loads(settings.read_text())
    assert after["model"] == "sonnet"
    assert _ours(after, "claude") == {}
    # our group held a handler of theirs too: the group stays, with theirs alone in it
    assert after["hooks"]["PreToolUse"][-1]["hooks"] == [{"type": "command", "command": "audit.sh"}]
    assert "SessionStart" not in after["hooks"]


def test_new_files_user_level_and_codex_home(fleet, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "CODEX_HOME": str(tmp_path / "codex-home")}
    assert fleet("integrate", "claude", "--user", env=env).returncode == 0
    assert fleet("integrate", "gemini", env=env).returncode == 0  # --user is the default
    assert fleet("integrate", "codex", "--user", env=env).returncode == 0
    assert set(_ours(json.loads((home / ".claude/settings.json").read_text()), "claude")) == EVENTS["claude"]
    assert set(_ours(json.loads((home / ".gemini/settings.json").read_text()), "gemini")) == EVENTS["gemini"]
    assert set(_ours(json.loads((tmp_path / "codex-home/hooks.json").read_text()), "codex")) == EVENTS["codex"]
    assert list(home.rglob("*.bak")) == []  # nothing existed, nothing to back up
    assert fleet("integrate", "claude", "--user", "--remove", env=env).returncode == 0
    assert json.loads((home / ".claude/settings.json").read_text()) == {}


def test_dry_run_prints_a_diff_and_writes_nothing(fleet, tmp_path: Path) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(EXISTING["claude"])
    r = fleet("integrate", "claude", "--project", str(tmp_path), "--dry-run")
    assert r.returncode == 0
    assert r.stdout.startswith(f"--- {settings}\n+++ {settings}\n")
    assert '+                        "command": ' in r.stdout
    assert settings.read_text() == EXISTING["claude"]
    assert list(settings.parent.iterdir()) == [settings]
    r = fleet("integrate", "codex", "--project", str(tmp_path), "--dry-run")
    assert r.stdout.startswith("--- /dev/null\n")
    assert not (tmp_path / ".codex").exists()


@pytest.mark.parametrize(("content", "removable"), [
    ("{not json", False), ("[]", False), ('{"hooks": []}', False),
    ('{"hooks": {"PreToolUse": {}}}', True), ('{"hooks": {"PreToolUse": ["x"]}}', True)])
def test_files_it_does_not_understand_are_left_alone(fleet, tmp_path: Path, content: str, removable: bool) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(content)
    r = fleet("integrate", "claude", "--project", str(tmp_path))
    assert r.returncode == 2
    assert "not touching it" in r.stderr
    r = fleet("integrate", "claude", "--project", str(tmp_path), "--remove")
    # an event list it cannot read holds nothing of ours: --remove has nothing to take out of it
    assert r.returncode == (0 if removable else 2), r.stderr
    assert settings.read_text() == content
    assert list(settings.parent.iterdir()) == [settings]


def test_usage_errors(fleet, tmp_path: Path) -> None:
    assert fleet("integrate", "claude", "--project", str(tmp_path), "--user").returncode == 2
    assert fleet("integrate", "claude", "--project", str(tmp_path / "missing")).returncode == 2
    assert fleet("integrate", "cursor", "--project", str(tmp_path)).returncode == 2


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_the_installed_command_is_a_working_hook(fleet, fleet_home: Path, children: Children, tmp_path: Path,
                                                 agent: str) -> None:
    """Run the command line exactly as written into the settings, the way the agent runs it (a shell)."""
    assert fleet("integrate", agent, "--project", str(tmp_path)).returncode == 0
    doc = json.loads((tmp_path / FILES[agent]).read_text())
    command = _ours(doc, agent)[TOOL_EVENT[agent]][0][1]["command"]
    server = children.listener(0)
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    make = {"claude": claude_bash, "codex": codex_bash, "gemini": gemini_shell}[agent]
    payload = make(f"uvicorn app:app --port {port}")
    proc = subprocess.run(["sh", "-c", command], input=json.dumps(payload), capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "FLEET_WATCH_HOME": str(fleet_home)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    reason = denial(agent, proc.stdout)
    assert reason is not None
    assert f"port {port} in use by PID {server.pid}" in reason
