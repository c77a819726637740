"""register / heartbeat / release / clean through the real CLI, with real processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Children, CliResult


def _events(home: Path, event_type: str) -> list[dict[str, object]]:
    conn = sqlite3.connect(home / "registry.db")
    rows = conn.execute("SELECT pid, detail FROM events WHERE event_type = ? ORDER BY seq", (event_type,)).fetchall()
    return [{"pid": pid, **json.loads(detail)} for pid, detail in rows]


def test_register_records_identity_and_claims(fleet, fleet_home: Path, children: Children, tmp_path: Path) -> None:
    proc = children.sleeper()
    repo = tmp_path / "repo"
    repo.mkdir()
    r = fleet("register", "--pid", str(proc.pid), "--name", "vllm-7b", "--workstream", "serving", "--port", "18100",
              "--gpu", "4096", "--repo", str(repo), "--priority", "4", "--model", "qwen", "--json")
    assert r.returncode == 0, r.stderr
    row = r.json()["process"]
    assert row["pid"] == proc.pid
    assert row["ports"] == [18100]
    assert row["repos"] == [str(repo)]
    assert row["gpu_mb"] == 4096
    assert row["priority"] == 4
    assert row["session_id"] == f"cli-{proc.pid}"
    # The start time recorded is the kernel's, as psutil computes it.
    import psutil

    assert abs(row["start_time"] - psutil.Process(proc.pid).create_time()) < 0.05
    status = fleet("status", "--json").json()
    assert status["process_count"] == 1
    assert status["ports_claimed"] == {"18100": proc.pid}
    assert status["gpu_budget"]["allocated_mb"] == 4096
    assert _events(fleet_home, "REGISTER")[0]["name"] == "vllm-7b"


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (["--port", "0"], 2, "'--port': 0 is not in the range 1<=x<=65535"),
        (["--port", "70000"], 2, "'--port': 70000 is not in the range 1<=x<=65535"),
        (["--port", "abc"], 2, "abc"),
        (["--gpu", "-100"], 2, "'--gpu': -100 is not in the range"),
        (["--gpu", "99999999999999999999"], 2, "'--gpu'"),
        (["--priority", "6"], 2, "'--priority': 6 is not in the range 1<=x<=5"),
        (["--name", "  "], 2, "name must not be empty"),
        (["--name", "two\nlines"], 2, "name must not contain control characters"),
        (["--name", "x" * 100_000], 2, "name is 100000 characters long; at most 200"),
        (["--workstream", "a\x1b[31mred"], 2, "workstream must not contain control characters"),
        (["--session-id", "s\r"], 2, "must not contain control characters"),
        (["--bogus"], 2, "No such option"),
    ],
)
def test_register_validates_input(fleet, children: Children, extra: list[str], code: int, fragment: str) -> None:
    proc = children.sleeper()
    args = ["register", "--pid", str(proc.pid), "--name", "x", "--workstream", "w", *extra]
    r: CliResult = fleet(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr) < 1000  # user input is quoted truncated, never echoed whole
    assert fleet("status", "--json").json()["process_count"] == 0  # nothing half-written


def test_register_refuses_a_pid_that_is_not_running(fleet, children: Children) -> None:
    proc = children.sleeper()
    proc.kill()
    proc.wait()
    r = fleet("register", "--pid", str(proc.pid), "--name", "ghost", "--workstream", "w")
    assert r.returncode == 3
    assert "not a running process" in r.stderr


def test_conflicts_name_the_holder_and_are_logged(fleet, fleet_home: Path, children: Children, tmp_path: Path) -> None:
    a, b = children.sleeper(), children.sleeper()
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    assert fleet("register", "--pid", str(a.pid), "--name", "first", "--workstream", "w", "--port", "18200",
                 "--repo", str(repo)).returncode == 0
    port = fleet("register", "--pid", str(b.pid), "--name", "second", "--workstream", "w", "--port", "18200")
    assert port.returncode == 1
    assert port.stderr.strip() == f"Error: port 18200 claimed by PID {a.pid} (first)"
    inner = fleet("register", "--pid", str(b.pid), "--name", "second", "--workstream", "w", "--repo",
                  str(repo / "src"))
    assert inner.returncode == 1
    assert f"locked by PID {a.pid} (first)" in inner.stderr
    gpu = fleet("register", "--pid", str(b.pid), "--name", "second", "--workstream", "w", "--gpu", "60000")
    assert gpu.returncode == 1
    assert "GPU budget exceeded" in gpu.stderr
    conflicts = _events(fleet_home, "CONFLICT")
    assert [c["resource"] for c in conflicts] == ["port", "repo", "gpu"]
    assert conflicts[0]["holder_pid"] == a.pid
    assert fleet("status", "--json").json()["process_count"] == 1


def test_same_session_may_share_a_repo(fleet, children: Children, tmp_path: Path) -> None:
    a, b = children.sleeper(), children.sleeper()
    for proc in (a, b):
        r = fleet("register", "--pid", str(proc.pid), "--name", "n", "--workstream", "w", "--repo", str(tmp_path),
                  "--session-id", "agent-1")
        assert r.returncode == 0, r.stderr


def test_heartbeat_release_and_not_found(fleet, fleet_home: Path, children: Children) -> None:
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "n", "--workstream", "w",
                 "--port", "18300").returncode == 0
    assert fleet("heartbeat", "--pid", str(proc.pid)).returncode == 0
    assert fleet("heartbeat", "--pid", "999999").returncode == 3
    released = fleet("release", "--port", "18300")
    assert released.returncode == 0
    assert f"was PID {proc.pid}" in released.stdout
    assert fleet("status", "--json").json()["ports_claimed"] == {}
    assert fleet("release", "--pid", str(proc.pid)).returncode == 0
    assert fleet("release", "--pid", str(proc.pid)).returncode == 3
    assert fleet("release").returncode == 2
    assert [e["pid"] for e in _events(fleet_home, "RELEASE")] == [proc.pid, proc.pid]


def test_clean_drops_dead_zombie_and_reused_rows(fleet, fleet_home: Path, children: Children) -> None:
    dead, zombie, reused, alive = (children.sleeper() for _ in range(4))
    for i, proc in enumerate((dead, zombie, reused, alive)):
        assert fleet("register", "--pid", str(proc.pid), "--name", f"p{i}", "--workstream", "w",
                     "--port", str(18400 + i)).returncode == 0
    dead.kill()
    dead.wait()
    os.kill(zombie.pid, signal.SIGKILL)  # not reaped: stays a zombie until the fixture waits for it
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)
    # A reused PID cannot be forced; a row whose start time differs from the kernel's is the same situation.
    conn = sqlite3.connect(fleet_home / "registry.db")
    conn.execute("UPDATE processes SET start_time = start_time - 1000 WHERE pid = ?", (reused.pid,))
    conn.commit()
    conn.close()

    out = fleet("clean", "--json")
    assert out.returncode == 0
    removed = {r["pid"]: r["reason"] for r in out.json()["removed"]}
    assert removed == {dead.pid: "dead_pid", zombie.pid: "zombie", reused.pid: "pid_reused"}
    assert fleet("status", "--json").json()["ports_claimed"] == {"18403": alive.pid}
    assert fleet("history", "--verify").returncode == 0
    assert fleet("clean").stdout.strip() == "No dead PIDs found."


def test_clean_logs_heartbeat_expiry_once(fleet, fleet_home: Path, children: Children) -> None:
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "quiet", "--workstream", "w",
                 "--port", "18450").returncode == 0
    conn = sqlite3.connect(fleet_home / "registry.db")
    conn.execute("UPDATE processes SET last_heartbeat = '2020-01-01T00:00:00.000000+00:00'")
    conn.commit()
    conn.close()
    first = fleet("clean", "--json").json()
    assert [e["pid"] for e in first["heartbeat_expired"]] == [proc.pid]
    assert fleet("clean", "--json").json()["heartbeat_expired"] == []  # logged once, not every run
    stale = _events(fleet_home, "STALE")
    assert len(stale) == 1
    assert stale[0]["reason"] == "heartbeat_expired"
    # The process is alive, so it keeps its claim; a heartbeat re-arms the expiry.
    assert fleet("status", "--json").json()["ports_claimed"] == {"18450": proc.pid}
    assert fleet("heartbeat", "--pid", str(proc.pid)).returncode == 0


def test_register_asks_the_os_who_listens(fleet, children: Children) -> None:
    server = children.listener(0, argv=["vllm", "serve", "qwen"])
    port = str(server.bound_ports[0])  # type: ignore[attr-defined]
    squatter = children.sleeper()
    taken = fleet("register", "--pid", str(squatter.pid), "--name", "late", "--workstream", "w", "--port", port)
    assert taken.returncode == 1
    assert f"in use by PID {server.pid}" in taken.stderr
    # The listener itself may register the port it holds.
    ok = fleet("register", "--pid", str(server.pid), "--name", "vllm", "--workstream", "w", "--port", port)
    assert ok.returncode == 0, ok.stderr


def test_register_a_launcher_whose_child_listens(fleet, children: Children, tmp_path: Path) -> None:
    import subprocess
    import sys

    helper = Path(__file__).parent.parent / "helpers" / "listen.py"
    launcher = subprocess.Popen(["bash", "-c", f'"{sys.executable}" "{helper}" --ports 0 & wait'],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    children.procs.append(launcher)  # type: ignore[arg-type]
    assert launcher.stdout is not None
    port = launcher.stdout.readline().split()[0]
    try:
        ok = fleet("register", "--pid", str(launcher.pid), "--name", "wrapper", "--workstream", "w", "--port", port)
        assert ok.returncode == 0, ok.stderr
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)  # its own new session: the launcher and its child only
