"""40 real CLI processes racing for one resource: exactly one winner, the budget holds, the chain verifies."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet_watch import events, registry
from tests.conftest import Children
from tests.helpers.racers import racer_script

RACERS = 40

_RACER = racer_script("fleet_watch.cli.processes", "fleet_watch.service.fleet")


def _race(home: Path, tmp_path: Path, arg_lists: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    gate = tmp_path / "gate"
    ready = [tmp_path / f"ready-{i}" for i in range(len(arg_lists))]
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(gate), str(flag), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for flag, args in zip(ready, arg_lists, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition (every racer has imported), not a guess at how long that takes
    gate.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _verify(home: Path) -> tuple[bool, int]:
    conn = registry.connect(home)
    try:
        return events.verify_chain(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("resource", ["port", "repo"])
def test_exactly_one_winner(fleet_home: Path, tmp_path: Path, children: Children, resource: str) -> None:
    sleepers = [children.sleeper() for _ in range(RACERS)]
    target = ["--port", "18900"] if resource == "port" else ["--repo", str(tmp_path)]
    results = _race(fleet_home, tmp_path, [
        ["register", "--pid", str(p.pid), "--name", f"r{i}", "--workstream", "race", *target]
        for i, p in enumerate(sleepers)
    ])
    codes = sorted(r.returncode for r in results)  # a racer that waited past the lock timeout would be a 5
    assert codes == [0] + [1] * (RACERS - 1), [r.stderr for r in results if r.returncode not in (0, 1)]
    assert all("Traceback" not in r.stderr for r in results)
    conn = sqlite3.connect(fleet_home / "registry.db")
    assert conn.execute("SELECT COUNT(*) FROM claims WHERE kind = ?", (resource,)).fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM events WHERE event_type = 'CONFLICT'").fetchone()[0] == RACERS - 1
    assert conn.execute("SELECT COUNT(*) FROM events WHERE event_type = 'REGISTER'").fetchone()[0] == 1
    assert _verify(fleet_home) == (True, RACERS)


def test_gpu_budget_never_exceeded(fleet_home: Path, tmp_path: Path, children: Children) -> None:
    sleepers = [children.sleeper() for _ in range(RACERS)]
    results = _race(fleet_home, tmp_path, [
        ["register", "--pid", str(p.pid), "--name", f"g{i}", "--workstream", "race", "--gpu", "10000"]
        for i, p in enumerate(sleepers)
    ])
    winners = [r for r in results if r.returncode == 0]
    odd = [(r.returncode, r.stderr) for r in results if r.returncode and "GPU budget exceeded" not in r.stderr]
    assert odd == []
    assert len(winners) == 5  # 57344 MB allocatable / 10000 MB each
    conn = sqlite3.connect(fleet_home / "registry.db")
    allocated = conn.execute("SELECT SUM(amount_mb) FROM claims WHERE kind = 'gpu'").fetchone()[0]
    assert allocated == 50000 <= 65536 - 8192
    assert _verify(fleet_home) == (True, RACERS)
