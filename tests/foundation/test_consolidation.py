"""The bugs a new user hit (issue 8), each through the real CLI: sessions, flags, numbers, files, streams."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_watch.config import KNOWN_KEYS, load_settings
from fleet_watch.core.inputs import display_width
from fleet_watch.errors import ConfigError
from tests.conftest import Children, run_fleet


def _register(fleet, pid: int, *args: str, name: str = "w", env: dict[str, str] | None = None) -> None:  # type: ignore[no-untyped-def]
    r = fleet("register", "--pid", str(pid), "--name", name, "--workstream", "ws", *args, env=env)
    assert r.returncode == 0, r.stderr


def test_register_follows_the_session_rule(fleet, children: Children, tmp_path: Path) -> None:
    """The README's recipe: a session that locked a repo is not denied by its own lock."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"FLEET_SESSION_ID": "agent-42"}
    _register(fleet, children.sleeper().pid, "--repo", str(repo), env=env)
    assert fleet("guard", "--repo", str(repo), env=env).returncode == 0
    assert fleet("guard", "--repo", str(repo / "src"), env={"FLEET_SESSION_ID": "agent-7"}).returncode == 1
    # Claude Code exports its session id to its children: that is the session too.
    assert fleet("guard", "--repo", str(repo), env={"CLAUDE_CODE_SESSION_ID": "agent-42"}).returncode == 0


def test_release_pid_and_port_touches_only_that_process(fleet, children: Children) -> None:
    a, b = children.sleeper(), children.sleeper()
    _register(fleet, a.pid, "--port", "18301", name="a")
    _register(fleet, b.pid, "--port", "18302", name="b")
    r = fleet("release", "--pid", str(a.pid), "--port", "18302")
    assert r.returncode == 3
    assert f"not claimed by PID {a.pid}" in r.stderr
    assert fleet("status", "--json").json()["ports_claimed"] == {"18301": a.pid, "18302": b.pid}
    assert fleet("release", "--pid", str(a.pid), "--port", "18301").returncode == 0
    doc = fleet("status", "--json").json()
    assert doc["ports_claimed"] == {"18302": b.pid}
    assert doc["process_count"] == 2  # only the port went, not the process


def test_several_ports_and_repos_are_all_claimed(fleet, children: Children, tmp_path: Path) -> None:
    r1, r2 = tmp_path / "one", tmp_path / "two"
    r1.mkdir()
    r2.mkdir()
    proc = children.sleeper()
    _register(fleet, proc.pid, "--port", "18311", "--port", "18312", "--repo", str(r1), "--repo", str(r2))
    doc = fleet("status", "--json").json()
    assert doc["ports_claimed"] == {"18311": proc.pid, "18312": proc.pid}
    assert set(doc["repos_locked"]) == {str(r1), str(r2)}
    for args in (["--port", "18311"], ["--port", "18312"], ["--repo", str(r1)], ["--repo", str(r2)]):
        assert fleet("guard", *args, "--session-id", "other").returncode == 1, args


def test_update_adds_claims_to_a_registered_process(fleet, children: Children) -> None:
    a, b = children.sleeper(), children.sleeper()
    _register(fleet, a.pid, "--port", "18321", name="a")
    _register(fleet, b.pid, "--port", "18323", name="b")
    up = fleet("register", "--update", "--pid", str(a.pid), "--port", "18322", "--gpu", "1000")
    assert up.returncode == 0, up.stderr
    doc = fleet("status", "--json").json()
    assert doc["ports_claimed"] == {"18321": a.pid, "18322": a.pid, "18323": b.pid}
    assert doc["gpu_budget"]["allocated_mb"] == 1000
    # --gpu replaces the process's GPU claim; a held port still conflicts; an unknown PID is not found.
    assert fleet("register", "--update", "--pid", str(a.pid), "--gpu", "300").returncode == 0
    assert fleet("status", "--json").json()["gpu_budget"]["allocated_mb"] == 300
    taken = fleet("register", "--update", "--pid", str(a.pid), "--port", "18323")
    assert taken.returncode == 1
    assert f"port 18323 claimed by PID {b.pid} (b)" in taken.stderr
    assert fleet("register", "--update", "--pid", str(children.sleeper().pid), "--port", "18324").returncode == 3


def test_check_says_no_on_stdout(fleet, children: Children) -> None:
    proc = children.sleeper()
    _register(fleet, proc.pid, "--port", "18331", name="holder")
    r = subprocess.run([sys.executable, "-m", "fleet_watch", "check", "--port", "18331"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, env=os.environ, check=False)
    assert r.returncode == 1
    assert "TAKEN" in r.stdout


@pytest.mark.parametrize("args", [
    ["history", "--hours", "nan"],
    ["history", "--hours", "inf"],
    ["history", "--hours", "-1"],
    ["history", "--limit", "99999999999999999999"],
    ["register", "--pid", "-3", "--name", "x", "--workstream", "w"],
    ["register", "--pid", "99999999999999999999", "--name", "x", "--workstream", "w"],
    ["guard", "--gpu", "99999999999999999999"],
    ["guard", "--port", "8000", "--gpu-device", "-1"],
    ["health", "--sample-seconds", "nan"],
    ["watch", "--interval", "nan"],
])
def test_non_finite_and_out_of_range_numbers_are_usage_errors(fleet, args: list[str]) -> None:
    r = fleet(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    flag = next(a for a in args if a.startswith("--") and a not in ("--name", "--workstream"))
    assert flag in r.stderr or "--" in r.stderr
    j = fleet(*args, "--json")
    assert j.returncode == 2
    assert j.json()["exit_code"] == 2


def test_a_broken_pipe_is_not_a_denial(fleet, children: Children, fleet_home: Path) -> None:
    for i in range(3):
        _register(fleet, children.sleeper().pid, name=f"p{i}")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head -1`) has already gone
    try:
        r = subprocess.run([sys.executable, "-m", "fleet_watch", "history"], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "FLEET_WATCH_HOME": str(fleet_home)},
                           check=False)
    finally:
        os.close(write_end)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


def test_debug_works_after_the_subcommand(fleet) -> None:
    assert fleet("status", "--debug").returncode == 0
    assert fleet("--debug", "status").returncode == 0


def test_unknown_config_keys_are_named_with_the_nearest_known_one(fleet, fleet_home: Path) -> None:
    (fleet_home / "config.json").write_text(json.dumps({"gpu_total_mb": 65536, "gpu_reserve_mb": 8192,
                                                       "prefered_ports": [9000]}))
    r = fleet("status")
    assert r.returncode == 0
    assert "unknown key 'prefered_ports' is ignored (did you mean 'preferred_ports'?)" in r.stderr


_WRONG_TYPES = {
    "gpu_total_mb": "lots", "gpu_reserve_mb": "x", "preferred_ports": {"a": 1}, "physical_ram_mb": "8G",
    "patterns": "llama", "session_patterns": 3, "idle_patterns": "uvicorn", "idle_cpu_threshold": "low",
    "pressure_thresholds": [70, 85], "gpu_estimator": "candle", "gpu_devices": [1, 2],
    "gpu_pageout_thrash_threshold": "high", "changelog_max_bytes": "1MB", "server_api_keys": ["key"],
    "server_api_timeout_s": "fast", "thunder_tnr_timeout_s": None, "thunder_claim_ttl_s": 1.5, "hooks": "warn",
}


def test_every_config_key_has_a_wrong_type_case() -> None:
    assert set(_WRONG_TYPES) == set(KNOWN_KEYS)


@pytest.mark.parametrize("key", sorted(_WRONG_TYPES))
def test_a_wrong_type_for_any_config_key_is_exit_4_naming_it(tmp_path: Path, key: str) -> None:
    doc = {"gpu_total_mb": 65536, key: _WRONG_TYPES[key]}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=key):
        load_settings(tmp_path, lambda: 65536)


def test_a_wrong_threshold_type_is_exit_4_for_health(fleet, fleet_home: Path) -> None:
    (fleet_home / "config.json").write_text(json.dumps({"gpu_total_mb": 65536,
                                                       "gpu_pageout_thrash_threshold": "high"}))
    r = fleet("health", "--json", "--sample-seconds", "0")
    assert r.returncode == 4, r.stdout
    assert "gpu_pageout_thrash_threshold" in r.json()["reason"]


def test_status_fits_80_columns_with_wide_names_and_says_what_the_total_is(fleet, children: Children) -> None:
    _register(fleet, children.sleeper().pid, "--port", "18341", name="模型服务器-qwen-大模型-推理服务")
    _register(fleet, children.sleeper().pid, "--port", "18342", name="plain")
    lines = fleet("status").stdout.splitlines()
    assert all(display_width(line) <= 80 for line in lines), lines
    rows = [line for line in lines if "1834" in line and not line.startswith("Ports")]
    starts = {display_width(row[: row.index("ws")]) for row in rows}
    assert len(starts) == 1, rows  # the workstream column lines up whatever the name's characters
    assert any("MB total -" in line and "MB reserve" in line for line in lines)


def test_health_says_that_it_samples(fleet) -> None:
    r = fleet("health", "--sample-seconds", "0.1")
    assert "Sampling CPU and memory for 0.1 s" in r.stderr


# -- a registry this user may read but not write --------------------------------------------------------------

@pytest.fixture
def shared_home(fleet, children: Children) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """A state directory owned by root (mode 0755, files 0644), as another user would meet it."""
    base = Path(tempfile.mkdtemp(prefix="fleet-shared-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"gpu_total_mb": 65536, "gpu_reserve_mb": 8192}))
    proc = children.sleeper()
    assert run_fleet("register", "--pid", str(proc.pid), "--name", "shared", "--workstream", "w", "--port", "18351",
                     home=home).returncode == 0
    home.chmod(0o755)
    for f in home.iterdir():
        f.chmod(0o644)
    try:
        yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _as_nobody(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "fleet_watch", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "FLEET_WATCH_HOME": str(home), "HOME": "/nonexistent"})


def _nobody_can_run_fleet() -> bool:
    """Root, setpriv, and a checkout whose virtual environment the user `nobody` can read (true in CI's clone)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            "import fleet_watch"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _nobody_can_run_fleet(), reason="needs root, setpriv, and a checkout that the user nobody "
                    "can read, to run a command as another user")
def test_read_commands_work_on_a_registry_this_user_cannot_write(shared_home: Path) -> None:
    status = _as_nobody(shared_home, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["ports_claimed"]["18351"] > 0
    guard = _as_nobody(shared_home, "guard", "--port", "18351", "--json")
    assert guard.returncode == 1, guard.stderr
    assert json.loads(guard.stdout)["checks"]["port"]["holder"]["name"] == "shared"
    assert _as_nobody(shared_home, "history").returncode == 0
    # Writing says why in one line, with its own exit code; the files stay as they were.
    write = _as_nobody(shared_home, "register", "--pid", "1", "--name", "x", "--workstream", "w")
    assert write.returncode in (3, 5), write.stderr
    assert "Traceback" not in write.stderr
    assert oct((shared_home).stat().st_mode & 0o777) == "0o755"


# -- the audit chain verified while a writer appends ----------------------------------------------------------

_APPENDER = """
import subprocess, sys
from pathlib import Path
from fleet_watch.service.fleet import Fleet
kid = subprocess.Popen(["sleep", "600"])
with Fleet.open(Path(sys.argv[1])) as fleet:
    for i in range(100000):
        fleet.register(pid=kid.pid, name=f"k{i}", workstream="w")
        fleet.release_pid(kid.pid)
        if i == 0:
            print("ready", flush=True)
"""


def test_verify_is_one_snapshot_under_a_concurrent_writer(fleet_home: Path, children: Children) -> None:
    from fleet_watch import events, registry

    writer = subprocess.Popen([sys.executable, "-c", _APPENDER, str(fleet_home)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    children.procs.append(writer)  # type: ignore[arg-type]
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    conn = registry.connect(fleet_home)
    try:
        seen = 0
        for _ in range(60):  # each verify races the writer's next append
            valid, count = events.verify_chain(conn)
            assert valid, f"intact chain reported broken at {count} events"
            seen = max(seen, count)
        assert seen > 0
        db = sqlite3.connect(fleet_home / "registry.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    finally:
        conn.close()
        writer.kill()
        writer.wait(timeout=10)
        subprocess.run(["pkill", "-KILL", "-s", str(writer.pid), "sleep"], check=False)  # its own session only


@pytest.mark.parametrize("args", [["guard", "--port", "9" * 100_000], ["status", "--bogus-" + "x" * 100_000],
                                  ["register", "--pid", "1", "--name", "n", "--workstream", "w" * 100_000]])
def test_huge_arguments_are_not_echoed_whole(fleet, args: list[str]) -> None:
    r = fleet(*args)
    assert r.returncode == 2
    assert len(r.stderr) < 1000
    j = fleet(*args, "--json")
    assert len(j.stdout) < 1500
    assert j.json()["exit_code"] == 2


def test_history_fits_80_columns_unless_wide(fleet, children: Children) -> None:
    _register(fleet, children.sleeper().pid, "--port", "18361", "--repo", "/srv/a/very/long/path/" + "x" * 60,
              name="a-rather-long-process-name")
    lines = fleet("history").stdout.splitlines()
    assert lines
    assert all(display_width(line) <= 80 for line in lines), lines
    assert any(display_width(line) > 80 for line in fleet("history", "--wide").stdout.splitlines())
