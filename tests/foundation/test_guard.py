"""fleet guard and fleet check: the exact JSON contract, OS-aware ports, nested repos, and fail-closed errors."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Children, PortHolds
from tests.helpers.ports import bindable

TOP_KEYS = {"allowed", "request", "checks", "state"}
REQUEST_KEYS = {"port", "repo_dir", "gpu_mb", "framework", "model"}
PORT_KEYS = {"allowed", "reason", "holder", "suggested_ports"}
REPO_KEYS = {"allowed", "reason", "holder"}
GPU_KEYS = {"allowed", "reason", "detail", "requested_mb", "available_mb", "suggested_max_mb"}
STATE_KEYS = {"process_count", "occupied_ports", "safe_ports", "locked_repos", "gpu_budget", "external_resources"}
BUDGET_KEYS = {"total_mb", "reserve_mb", "allocated_mb", "available_mb"}


def test_exact_key_sets(fleet, tmp_path: Path, free_ports: PortHolds) -> None:
    r = fleet("guard", "--port", str(free_ports.take()), "--repo", str(tmp_path), "--gpu", "1024", "--json")
    assert r.returncode == 0, r.stderr
    doc = r.json()
    assert set(doc) == TOP_KEYS
    assert set(doc["request"]) == REQUEST_KEYS
    assert set(doc["checks"]) == {"port", "repo", "gpu"}
    assert set(doc["checks"]["port"]) == PORT_KEYS
    assert set(doc["checks"]["repo"]) == REPO_KEYS
    assert set(doc["checks"]["gpu"]) == GPU_KEYS
    assert set(doc["state"]) == STATE_KEYS
    assert set(doc["state"]["gpu_budget"]) == BUDGET_KEYS
    assert doc["state"]["gpu_budget"] == {"total_mb": 65536, "reserve_mb": 8192, "allocated_mb": 0,
                                          "available_mb": 57344}
    assert doc["request"]["repo_dir"] == str(tmp_path.resolve())
    assert doc["allowed"] is True


def test_unregistered_listener_denies_with_its_pid(fleet, children: Children) -> None:
    server = children.listener(0)
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    r = fleet("guard", "--port", str(port), "--json")
    assert r.returncode == 1
    check = r.json()["checks"]["port"]
    assert check["allowed"] is False
    assert "not registered" in check["reason"]
    assert check["holder"]["pid"] == server.pid
    assert check["holder"]["kind"] == "unregistered"
    assert check["suggested_ports"]
    assert all(bindable(p) for p in check["suggested_ports"])
    assert port not in check["suggested_ports"]


def test_ipv6_only_listener_is_seen(fleet, children: Children) -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback; the probe's IPv6 path cannot be tested")
    server = children.listener(0, host="::1")
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    r = fleet("guard", "--port", str(port), "--json")
    assert r.returncode == 1
    assert r.json()["checks"]["port"]["holder"]["pid"] == server.pid


def test_registered_holder_denies_and_dead_holder_does_not(fleet, children: Children, free_ports: PortHolds) -> None:
    proc = children.sleeper()
    port = free_ports.take()
    reg = fleet("register", "--pid", str(proc.pid), "--name", "canary", "--workstream", "w", "--port", str(port))
    assert reg.returncode == 0, reg.stderr
    r = fleet("guard", "--port", str(port), "--json")
    assert r.returncode == 1
    holder = r.json()["checks"]["port"]["holder"]
    assert (holder["pid"], holder["name"], holder["port"]) == (proc.pid, "canary", port)
    check = fleet("check", "--port", str(port))
    assert check.returncode == 1
    assert f"PID {proc.pid} (canary)" in check.stdout  # one stream: a refusal is not hidden by 2>/dev/null
    proc.kill()
    proc.wait()
    # guard and check agree that a dead holder holds nothing, and neither writes.
    assert fleet("guard", "--port", str(port), "--json").json()["allowed"] is True
    assert fleet("check", "--port", str(port)).returncode == 0


@pytest.mark.parametrize(
    ("locked", "asked", "denied"),
    [("repo", "repo", True), ("repo", "repo/src/deep", True), ("repo/src", "repo", True),
     ("repo", "repo2", False), ("repo", "other", False), ("repo", "link-to-repo", True)],
)
def test_repo_locks_cover_nested_and_symlinked_paths(
    fleet, children: Children, tmp_path: Path, locked: str, asked: str, denied: bool
) -> None:
    for d in ("repo/src/deep", "repo2", "other"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    (tmp_path / "link-to-repo").symlink_to(tmp_path / "repo")
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "writer", "--workstream", "w",
                 "--repo", str(tmp_path / locked)).returncode == 0
    g = fleet("guard", "--repo", str(tmp_path / asked), "--json")
    c = fleet("check", "--repo", str(tmp_path / asked))
    assert g.json()["allowed"] is (not denied)
    assert (g.returncode, c.returncode) == ((1, 1) if denied else (0, 0))
    if denied:
        assert g.json()["checks"]["repo"]["holder"]["pid"] == proc.pid
        assert g.json()["state"]["locked_repos"] == [str((tmp_path / locked).resolve())]


def test_same_session_is_allowed_through_flag_and_env(fleet, children: Children, tmp_path: Path) -> None:
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "w", "--workstream", "w", "--repo", str(tmp_path),
          "--session-id", "sess-1").returncode == 0
    assert fleet("guard", "--repo", str(tmp_path), "--session-id", "sess-1").returncode == 0
    assert fleet("guard", "--repo", str(tmp_path), env={"FLEET_SESSION_ID": "sess-1"}).returncode == 0
    assert fleet("guard", "--repo", str(tmp_path), "--session-id", "sess-2").returncode == 1


def test_gpu_budget_is_a_sum_over_live_claims(fleet, children: Children) -> None:
    a, b = children.sleeper(), children.sleeper()
    assert fleet("register", "--pid", str(a.pid), "--name", "a", "--workstream", "w", "--gpu", "30000").returncode == 0
    assert fleet("register", "--pid", str(b.pid), "--name", "b", "--workstream", "w", "--gpu", "20000").returncode == 0
    g = fleet("guard", "--gpu", "8000", "--json").json()
    assert g["allowed"] is False
    assert g["checks"]["gpu"]["available_mb"] == 7344
    assert g["checks"]["gpu"]["suggested_max_mb"] == 7344
    assert fleet("check", "--gpu", "8000").returncode == 1
    assert fleet("guard", "--gpu", "7344").returncode == 0  # equality fits
    a.kill()
    a.wait()
    g = fleet("guard", "--gpu", "8000", "--json").json()
    assert g["allowed"] is True
    assert g["state"]["gpu_budget"]["allocated_mb"] == 20000
    assert fleet("check", "--gpu", "8000").returncode == 0
    b.kill()
    b.wait()
    # Every view counts live holders only, also when no request needs the room (no --gpu here).
    assert fleet("guard", "--port", "18777", "--json").json()["state"]["gpu_budget"]["allocated_mb"] == 0
    assert fleet("status", "--json").json()["gpu_budget"]["allocated_mb"] == 0
    assert fleet("status", "--json").json()["process_count"] == 0


def test_human_output(fleet, children: Children) -> None:
    server = children.listener(0)
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    r = fleet("guard", "--port", str(port), "--gpu", "1024")
    lines = r.stdout.splitlines()
    assert r.returncode == 1
    assert lines[0] == "DENY"
    assert lines[1].startswith(f"Port: port {port} in use by PID {server.pid}")  # the port named once per line
    assert lines[-1].count(str(port)) <= 1
    assert lines[1].count(f"Port {port}") == 0
    assert any(line.startswith("  Suggested ports: ") for line in lines)
    assert "GPU 1024MB: available (57344MB free)" in lines
    assert "GPU budget: 57344MB available, 0MB claimed" in lines
    assert all(len(line) <= 80 for line in lines), lines


@pytest.mark.parametrize(
    ("args", "code", "kind"),
    [
        (["--port", "abc"], 2, "usage_error"),
        (["--port", "0"], 2, "usage_error"),
        (["--port", "65536"], 2, "usage_error"),
        (["--gpu", "-5"], 2, "usage_error"),
        (["--gpu", "1.5"], 2, "usage_error"),
        (["--no-such-flag"], 2, "usage_error"),
        (["--repo", ""], 2, "usage_error"),
    ],
)
def test_bad_input_fails_closed_with_json(fleet, args: list[str], code: int, kind: str) -> None:
    r = fleet("guard", *args, "--json")
    assert r.returncode == code
    doc = json.loads(r.stdout)
    assert doc["allowed"] is False
    assert doc["error"] == kind
    assert doc["reason"]
    assert "Traceback" not in r.stderr


def test_corrupt_database_fails_closed(fleet, fleet_home: Path) -> None:
    assert fleet("status").returncode == 0
    for suffix in ("-wal", "-shm"):
        Path(str(fleet_home / "registry.db") + suffix).unlink(missing_ok=True)
    (fleet_home / "registry.db").write_bytes(b"this is not a database" * 200)
    r = fleet("guard", "--port", "8000", "--json")
    assert r.returncode == 5
    doc = r.json()
    assert doc["allowed"] is False
    assert doc["error"] == "database_error"
    assert "corrupt" in doc["reason"]
    plain = fleet("guard", "--port", "8000")
    assert plain.returncode == 5
    assert plain.stdout == ""
    assert plain.stderr.count("\n") == 1


def test_corrupt_config_fails_closed(fleet, fleet_home: Path) -> None:
    (fleet_home / "config.json").write_text('{"gpu_total_mb": 8192,')
    r = fleet("guard", "--gpu", "1", "--json")
    assert r.returncode == 4
    assert r.json()["allowed"] is False
    assert "config.json" in r.json()["reason"]


def test_locked_database_fails_closed(fleet, fleet_home: Path) -> None:
    assert fleet("status").returncode == 0
    holder = sqlite3.connect(fleet_home / "registry.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, 'x')")
    try:
        r = fleet("guard", "--port", "8000", "--json", timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode == 5
    assert r.json()["allowed"] is False
    assert "locked" in r.json()["reason"]


def test_guard_takes_no_write_lock(fleet, fleet_home: Path, children: Children) -> None:
    """While another writer holds the write lock, guard still answers at once (WAL readers never wait)."""
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "w", "--workstream", "w",
                 "--port", "18700").returncode == 0
    writer = sqlite3.connect(fleet_home / "registry.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        r = fleet("guard", "--port", "18700", "--json")
        c = fleet("check", "--port", "18700")
        s = fleet("status", "--json")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert r.returncode == 1
    assert r.json()["checks"]["port"]["holder"]["pid"] == proc.pid
    assert c.returncode == 1
    assert s.returncode == 0


def test_check_needs_a_resource_and_never_tracebacks(fleet) -> None:
    r = fleet("check")
    assert r.returncode == 2
    assert "specify --port, --repo or --gpu" in r.stderr


def test_unknown_command_and_version(fleet) -> None:
    assert fleet("frobnicate").returncode == 2
    v = fleet("--version")
    assert v.returncode == 0
    from importlib.metadata import version

    assert version("fleet-watch") in v.stdout  # one source: pyproject.toml, through the installed metadata


def test_state_dir_from_env(tmp_path: Path, children: Children) -> None:
    from tests.conftest import run_fleet

    home = tmp_path / "elsewhere"
    assert run_fleet("status", home=home).returncode == 0
    assert (home / "registry.db").exists()
    assert not (Path(os.environ.get("HOME", "/root")) / "elsewhere").exists()


def test_an_unregistered_listener_is_named_from_proc_as_psutil_names_it(children: Children) -> None:
    """The guard names an unregistered listener from /proc (no psutil import on the denial path); psutil, the
    reference, must agree on the PID and the start time."""
    import psutil

    from fleet_watch.probes.ports import _linux_listener

    server = children.listener(0)
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    found = _linux_listener(port, Path("/proc"))
    assert found is not None
    assert found["pid"] == server.pid
    assert abs(found["start_time"] - psutil.Process(server.pid).create_time()) < 0.05
    ref = [c.pid for c in psutil.net_connections(kind="tcp")
           if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    assert ref == [server.pid]
