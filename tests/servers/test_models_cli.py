"""``fleet models`` through the real CLI, against stand-in servers started under the real programs' names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.servers.helpers import StandIns, requests_seen

GIB = 1024**3
SERVER_KEYS = {"pid", "port", "api", "url", "reachable", "version", "error"}
MODEL_KEYS = {"name", "api", "pid", "port", "vram_mb", "size_mb", "context_tokens", "expires_at", "busy"}


def set_config(home: Path, **values: Any) -> None:
    path = home / "config.json"
    doc = json.loads(path.read_text())
    doc.update(values)
    path.write_text(json.dumps(doc))


def mine(doc: dict[str, Any], *procs: Any) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Only the servers this test started (the machine may run others)."""
    pids = {p.pid for p in procs}
    servers = {s["pid"]: s for s in doc["servers"] if s["pid"] in pids}
    return servers, [m for m in doc["models"] if m["pid"] in pids]


def test_every_api_listed_with_its_models_and_broken_servers_cost_only_themselves(
        fleet: Any, stand_ins: StandIns) -> None:
    ollama = stand_ins.start("ollama", ["ollama", "serve"], models=[
        {"name": "llama3.2:3b", "model": "llama3.2:3b", "size": 3 * GIB, "size_vram": 2 * GIB, "context_length": 8192},
        {"name": "qwen3:8b", "model": "qwen3:8b", "size": 6 * GIB, "size_vram": 6 * GIB}])
    llama = stand_ins.start("llama-server", ["llama-server", "-m", "/models/qwen2.5-7b-q4_k_m.gguf", "--port", "0"],
                            busy=True)
    vllm = stand_ins.start("vllm", ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "0"])
    sglang = stand_ins.start("sglang", ["-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B",
                                        "--port", "0"])
    lms = stand_ins.start("lmstudio", ["lms", "server", "start", "--port", "0"])
    mlx = stand_ins.start("openai", ["-m", "mlx_lm.server", "--model", "mlx-community/Qwen2.5-7B-4bit", "--port",
                                     "0"])
    html = stand_ins.start("llama-server", ["llama-server", "-m", "/m.gguf", "--port", "0"], mode="html")
    hang = stand_ins.start("vllm", ["vllm", "serve", "org/hung-7B", "--port", "0"], mode="hang")
    rst = stand_ins.start("ollama", ["ollama", "serve"], mode="reset")
    loading = stand_ins.start("llama-server", ["llama-server", "-m", "/big.gguf", "--port", "0"], mode="loading")
    garbage = stand_ins.start("sglang", ["-m", "sglang.launch_server", "--model-path", "x", "--port", "0"],
                              mode="garbage")
    everyone = (ollama, llama, vllm, sglang, lms, mlx, html, hang, rst, loading, garbage)

    out = fleet("models", "--json")
    assert out.returncode == 0, out.stderr
    servers, models = mine(out.json(), *everyone)
    assert set(servers) == {p.pid for p in everyone}
    for s in servers.values():
        assert set(s) == SERVER_KEYS
    for m in models:
        assert set(m) == MODEL_KEYS
    expect = {ollama: ("ollama", True), llama: ("llama_cpp", True), vllm: ("vllm", True), sglang: ("sglang", True),
              lms: ("lmstudio", True), mlx: ("openai", True), html: ("llama_cpp", False), hang: ("vllm", False),
              rst: ("ollama", False), loading: ("llama_cpp", False), garbage: ("sglang", False)}
    for proc, (api, reachable) in expect.items():
        s = servers[proc.pid]
        assert (s["api"], s["reachable"], s["port"]) == (api, reachable, proc.port)
        assert s["url"] == f"http://127.0.0.1:{proc.port}"
        assert (s["error"] is None) == reachable
    assert servers[ollama.pid]["version"] == "0.12.3"
    assert servers[llama.pid]["version"] == "b6500-abc1234"
    assert servers[html.pid]["error"] == "answered something else: an HTML page (HTTP 200)"
    assert servers[hang.pid]["error"] == "timed out after 0.8 s"
    assert servers[rst.pid]["error"] == "connection reset by the server"
    assert servers[loading.pid]["error"] == "still loading: 503 Loading model"
    assert servers[garbage.pid]["error"].startswith("answered something else: not JSON")

    by = {(m["pid"], m["name"]): m for m in models}
    assert by[(ollama.pid, "llama3.2:3b")] | {} == {
        "name": "llama3.2:3b", "api": "ollama", "pid": ollama.pid, "port": ollama.port, "vram_mb": 2048,
        "size_mb": 3072, "context_tokens": 8192, "expires_at": "2099-06-04T14:38:31.83753-07:00", "busy": None}
    assert by[(ollama.pid, "qwen3:8b")]["vram_mb"] == 6144
    lm = by[(llama.pid, "/models/qwen2.5-7b-q4_k_m.gguf")]
    assert (lm["context_tokens"], lm["busy"], lm["size_mb"], lm["vram_mb"]) == (4096, True, 4466, None)
    vm = by[(vllm.pid, "meta-llama/Llama-3.1-8B-Instruct")]
    assert (vm["context_tokens"], vm["busy"]) == (32768, False)
    assert by[(sglang.pid, "Qwen/Qwen2.5-7B")]["busy"] is None  # --enable-metrics not given
    assert by[(lms.pid, "qwen2.5-7b-instruct")]["context_tokens"] == 4096
    assert (mlx.pid, "mlx-community/Qwen2.5-7B-4bit") in by
    assert {pid for pid, _ in by} == {ollama.pid, llama.pid, vllm.pid, sglang.pid, lms.pid, mlx.pid}

    text = fleet("models")
    assert text.returncode == 0
    assert "llama3.2:3b" in text.stdout
    assert "timed out after 0.8 s" in text.stdout
    assert "Traceback" not in text.stderr


def test_round_deadline_comes_from_config(fleet: Any, fleet_home: Path, stand_ins: StandIns) -> None:
    set_config(fleet_home, server_api_timeout_s=0.3)
    hang = stand_ins.start("ollama", ["ollama", "serve"], mode="hang")
    good = stand_ins.start("ollama", ["ollama", "serve"])
    servers, _ = mine(fleet("models", "--json").json(), hang, good)
    assert servers[hang.pid]["error"] == "timed out after 0.3 s"
    assert servers[good.pid]["reachable"] is True


def test_api_key_per_port_never_shown_logged_or_stored(fleet: Any, fleet_home: Path, stand_ins: StandIns) -> None:
    secret = "sk-fleet-test-9f8e7d6c5b4a"
    guarded = stand_ins.start("llama-server", ["llama-server", "-m", "/m.gguf", "--api-key", secret, "--port", "0"])
    other = stand_ins.start("llama-server", ["llama-server", "-m", "/n.gguf", "--port", "0"])
    servers, _ = mine(fleet("models", "--json").json(), guarded, other)
    assert servers[guarded.pid]["error"] == "needs an API key (401): add it to server_api_keys in config.json"

    set_config(fleet_home, server_api_keys={str(guarded.port): "wrong-key"})
    servers, _ = mine(fleet("models", "--json").json(), guarded)
    assert servers[guarded.pid]["error"] == "API key rejected (401): check server_api_keys"

    set_config(fleet_home, server_api_keys={str(guarded.port): secret})
    out = fleet("models", "--json")
    servers, models = mine(out.json(), guarded, other)
    assert servers[guarded.pid]["reachable"] is True
    assert [m["name"] for m in models if m["pid"] == guarded.pid] == ["/m.gguf"]
    # The key went to its own port only, and nowhere else.
    assert all(line.endswith("auth=no") for line in requests_seen(other))
    assert any(line.endswith("auth=yes") for line in requests_seen(guarded))
    text = fleet("models")
    fleet("discover", "--json")
    fleet("status", "--json")
    for blob in (out.stdout, out.stderr, text.stdout, text.stderr):
        assert secret not in blob
    for path in fleet_home.iterdir():
        if path.name != "config.json" and path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_bad_config_is_a_one_line_error_naming_the_key(fleet: Any, fleet_home: Path) -> None:
    for value, key in ((["k"], "server_api_keys"), ({"http": "k"}, "server_api_keys.http"),
                       ({"8080": 5}, "server_api_keys.8080"), ({"8080": "a\nb"}, "server_api_keys.8080")):
        set_config(fleet_home, server_api_keys=value)
        out = fleet("models", "--json")
        assert out.returncode == 4, out.stderr
        doc = out.json()
        assert doc["error"] == "config_error"
        assert key in doc["reason"]
        assert "a\nb" not in doc["reason"]
    set_config(fleet_home, server_api_keys={}, server_api_timeout_s="1")
    out = fleet("models")
    assert out.returncode == 4
    assert "server_api_timeout_s" in out.stderr
    assert out.stderr.count("\n") == 1
