"""Every command is documented in the README and has working help; help has no side effects; the README's library
section runs and names methods that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_watch.cli import COMMANDS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_is_documented_and_has_help(fleet, fleet_home: Path, command: str) -> None:
    assert f"fleet {command}" in README
    for path in fleet_home.iterdir():
        path.unlink()
    r = fleet(command, "--help")
    assert r.returncode == 0
    assert "Usage: fleet" in r.stdout
    assert list(fleet_home.iterdir()) == []  # help created no database and no config


def test_readme_opens_with_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(quick) == 2
    assert "pip install" in quick[0]
    assert "fleet" in quick[0]
    assert "'.[test]'" in quick[1]
    assert "scripts/test.sh" in quick[1]
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert quick[1] in ci


def test_the_readme_library_section_runs_and_names_real_methods(fleet_home: Path) -> None:
    from fleet_watch.service.fleet import Fleet

    section = README.split("## Library", 1)[1].split("\n## ", 1)[0]
    snippet = section.split("```python", 1)[1].split("```", 1)[0]
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60, check=False,
                       env={**os.environ, "FLEET_WATCH_HOME": str(fleet_home)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Chain valid: True")
    facade = section.split("facade the CLI uses (", 1)[1].split(")", 1)[0]
    methods = re.findall(r"`(\w+)`", facade)
    assert len(methods) >= 5
    assert [m for m in methods if not callable(getattr(Fleet, m, None))] == []
