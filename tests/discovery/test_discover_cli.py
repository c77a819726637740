"""``fleet discover`` against real processes listening on real loopback ports, through the real CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Children, PortHolds
from tests.discovery.servers import Servers, command


def _events(home: Path, event_type: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(home / "registry.db")
    try:
        rows = conn.execute("SELECT pid, detail FROM events WHERE event_type = ? ORDER BY seq", (event_type,))
        return [{"pid": pid, **json.loads(detail)} for pid, detail in rows]
    finally:
        conn.close()


def _claims(home: Path) -> dict[int, dict[str, Any]]:
    conn = sqlite3.connect(home / "registry.db")
    try:
        out: dict[int, dict[str, Any]] = {}
        for pid, source in conn.execute("SELECT pid, source FROM processes"):
            out[pid] = {"source": source, "ports": set(), "gpu": {}}
        for pid, kind, key, amount in conn.execute(
            "SELECT p.pid, c.kind, c.key, c.amount_mb FROM claims c JOIN processes p ON p.id = c.process_id"
        ):
            if kind == "port":
                out[pid]["ports"].add(int(key))
            elif kind == "gpu":
                out[pid]["gpu"][key] = amount
        return out
    finally:
        conn.close()


def test_discover_registers_exactly_the_servers_with_all_their_ports(fleet: Any, fleet_home: Path, servers: Servers,
                                                                    children: Children) -> None:
    vllm = servers.program("vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "0", "--port", "0",
                           "--port", "0")
    ollama = servers.program("ollama", "serve", "--port", "0")
    llama = servers.program("llama-server", "-m", "/models/qwen2.5-7b-instruct-q4_k_m.gguf", "--port", "0")
    mlx = servers.module("mlx_lm.server", "--model", "mlx-community/Qwen2.5-7B-Instruct-4bit", "--port", "0")
    sglang = servers.module("sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B", "--port", "0")
    # Not workloads: an idle process, and a search whose command line merely mentions a server.
    children.sleeper()
    decoy = subprocess.Popen(["grep", "-c", "import time; time.sleep(120)", "/usr/bin/ollama serve"],
                             executable=sys.executable)
    children.procs.append(decoy)  # type: ignore[arg-type]
    expected = {p.pid: set(p.bound_ports) for p in (vllm, ollama, llama, mlx, sglang)}  # type: ignore[attr-defined]
    assert len(expected[vllm.pid]) == 3

    out = fleet("discover", "--json")
    assert out.returncode == 0, out.stderr
    doc = out.json()
    assert {a["pid"]: set(a["ports"]) for a in doc["added"]} == expected
    names = {a["pid"]: a["name"] for a in doc["added"]}
    assert names[vllm.pid] == "vLLM"
    assert names[ollama.pid] == "Ollama"
    assert names[mlx.pid] == "MLX-LM server"
    for a in doc["added"]:
        assert a["gpu_source"] in ("estimate", "pattern_default")
        assert a["gpu_mb"] > 0
    workloads = {w["pid"]: w for w in doc["workloads"]}
    assert workloads[vllm.pid]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert workloads[llama.pid]["model"] == "/models/qwen2.5-7b-instruct-q4_k_m.gguf"

    claims = _claims(fleet_home)
    assert {pid: c["ports"] for pid, c in claims.items()} == expected
    assert all(c["source"] == "discover" for c in claims.values())
    registers = _events(fleet_home, "REGISTER")
    assert sorted(e["pid"] for e in registers) == sorted(expected)
    assert all(e["source"] == "discover" and e["gpu_source"] for e in registers)

    again = fleet("discover", "--json").json()
    assert again["added"] == again["updated"] == again["removed"] == []
    assert again["heartbeats"] == len(expected)
    assert len(_events(fleet_home, "REGISTER")) == len(expected)  # one event per change, not per cycle

    human = fleet("discover")
    assert human.returncode == 0
    assert "No changes. Registry is current" in human.stdout


def test_discover_follows_port_changes_and_cleans_up_after_exit(fleet: Any, fleet_home: Path,
                                                               servers: Servers) -> None:
    server = servers.program("vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--port", "0")
    first = server.bound_ports[0]  # type: ignore[attr-defined]
    assert fleet("discover", "--json").json()["added"][0]["ports"] == [first]

    second = int(command(server, "open"))
    doc = fleet("discover", "--json").json()
    assert doc["updated"] == [{"pid": server.pid, "name": "vLLM", "ports": sorted([first, second]),
                               "ports_added": [second], "ports_removed": []}]
    assert command(server, f"close {first}") == f"closed {first}"
    doc = fleet("discover", "--json").json()
    assert doc["updated"][0]["ports_removed"] == [first]
    assert _claims(fleet_home)[server.pid]["ports"] == {second}
    updates = _events(fleet_home, "UPDATE")
    assert [(u["ports_added"], u["ports_removed"]) for u in updates] == [([second], []), ([], [first])]

    human = fleet("discover")
    assert "No changes" in human.stdout

    server.kill()
    server.wait(timeout=10)
    doc = fleet("discover", "--json").json()
    assert doc["removed"] == [{"pid": server.pid, "name": "vLLM", "reason": "dead_pid", "ports": [second],
                               "registered_by": "discover"}]
    assert _claims(fleet_home) == {}
    cleans = _events(fleet_home, "CLEAN")
    assert [(c["pid"], c["reason"], c["source"]) for c in cleans] == [(server.pid, "dead_pid", "discover")]
    # The port is free again for anyone: guard agrees.
    assert fleet("guard", "--port", str(second), "--json").json()["allowed"] is True


def test_port_claimed_by_another_live_process_is_skipped_with_one_conflict_event(
        fleet: Any, fleet_home: Path, servers: Servers, children: Children, free_ports: PortHolds) -> None:
    port = free_ports.take()
    owner = children.sleeper()
    assert fleet("register", "--pid", str(owner.pid), "--name", "planned", "--workstream", "ops",
                 "--port", str(port)).returncode == 0
    free_ports.release(port)  # the squatter binds it itself
    squatter = servers.program("llama-server", "-m", "/models/m.gguf", "--port", str(port))

    doc = fleet("discover", "--json").json()
    assert doc["added"] == []
    assert doc["skipped"][0]["pid"] == squatter.pid
    assert f"port {port} claimed by PID {owner.pid}" in doc["skipped"][0]["reason"]
    fleet("discover", "--json")
    conflicts = [e for e in _events(fleet_home, "CONFLICT") if e.get("source") == "discover"]
    assert len(conflicts) == 1
    assert conflicts[0]["pid"] == squatter.pid
    assert conflicts[0]["port"] == port
    # The manual row is untouched and kept alive (heartbeat), the squatter is not registered.
    assert set(_claims(fleet_home)) == {owner.pid}

    human = fleet("discover")
    assert f"! PID {squatter.pid} (llama.cpp server) skipped: port {port} claimed by PID {owner.pid}" in human.stdout


def test_manual_rows_of_dead_processes_are_cleaned_and_live_ones_heartbeated(fleet: Any, fleet_home: Path,
                                                                            children: Children) -> None:
    live = children.sleeper()
    dead = children.sleeper()
    for proc in (live, dead):
        assert fleet("register", "--pid", str(proc.pid), "--name", "job", "--workstream", "w").returncode == 0
    dead.kill()
    dead.wait(timeout=10)
    doc = fleet("discover", "--json").json()
    assert [(r["pid"], r["reason"], r["registered_by"]) for r in doc["removed"]] == [(dead.pid, "dead_pid", "manual")]
    assert doc["heartbeats"] == 1
    assert set(_claims(fleet_home)) == {live.pid}


def test_ipv6_loopback_listener_is_seen(fleet: Any, servers: Servers) -> None:
    server = servers.program("text-generation-launcher", "--model-id", "bigscience/bloom-560m", "--host", "::1",
                             "--port", "0")
    doc = fleet("discover", "--json").json()
    assert {a["pid"]: a["ports"] for a in doc["added"]} == {server.pid: server.bound_ports}  # type: ignore[attr-defined]
    assert doc["added"][0]["name"] == "HF TGI"


def test_a_damaged_model_on_a_command_line_does_not_stop_discovery(fleet: Any, servers: Servers,
                                                                   tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"num_hidden_layers": 1000000000, "hidden_size": 64, '
                                        '"num_attention_heads": 4, "quantization": {"bits": "abc"}}')
    bad = servers.program("vllm", "serve", str(broken), "--port", "0")
    good = servers.program("llama-server", "-m", "/models/qwen2.5-0.5b-instruct-q8_0.gguf", "--port", "0")
    out = fleet("discover", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    added = {a["pid"]: a for a in out.json()["added"]}
    assert set(added) == {bad.pid, good.pid}
    assert added[bad.pid]["gpu_source"] == "pattern_default"  # no estimate from a damaged file, no crash
    assert added[good.pid]["gpu_source"] == "estimate"
