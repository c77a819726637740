"""A writer killed with SIGKILL mid-stream leaves a sound database and a verifying chain."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet_watch import events, registry
from tests.conftest import Children

# Registers and releases its own sleeping children as fast as it can, until it is killed.
_WRITER = """
import subprocess, sys
from pathlib import Path
from fleet_watch.service.fleet import Fleet
fleet = Fleet.open(Path(sys.argv[1]))
kids = [subprocess.Popen(["sleep", "600"]) for _ in range(8)]
print("ready", flush=True)
i = 0
while i < 100000:
    kid = kids[i % len(kids)]
    fleet.register(pid=kid.pid, name=f"k{i}", workstream="stream", ports=[19000 + i % len(kids)], gpu_mb=100,
                   repos=[f"/tmp/fleet-fault/{i % len(kids)}"])
    fleet.release_pid(kid.pid)
    i += 1
"""


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.7])
def test_sigkill_mid_stream(fleet_home: Path, children: Children, delay: float) -> None:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(fleet_home)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    children.procs.append(writer)  # type: ignore[arg-type]
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    subprocess.run(["pkill", "-KILL", "-s", str(writer.pid), "sleep"], check=False)  # its own session only

    conn = sqlite3.connect(fleet_home / "registry.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    count = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert count > 2
    conn.close()
    reg = registry.connect(fleet_home)
    assert events.verify_chain(reg) == (True, count)
    # Every claim belongs to a row and every row is in the chain: at most one registration was left open.
    assert reg.execute("SELECT COUNT(*) FROM processes").fetchone()[0] <= 1
    reg.close()
