"""``fleet unload`` through the real CLI: asked of the server, confirmed gone, audited; refusals with their reasons."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.servers.helpers import StandIns, requests_seen
from tests.servers.test_models_cli import mine

GIB = 1024**3
TWO = [{"name": "llama3.2:3b", "model": "llama3.2:3b", "size": 3 * GIB, "size_vram": 2 * GIB},
       {"name": "qwen3:latest", "model": "qwen3:latest", "size": 6 * GIB, "size_vram": 6 * GIB}]


def events(home: Path, kind: str) -> list[tuple[int | None, str]]:
    conn = sqlite3.connect(home / "registry.db")
    try:
        return list(conn.execute("SELECT pid, detail FROM events WHERE event_type = ? ORDER BY seq", (kind,)))
    finally:
        conn.close()


def resident(fleet: Any, proc: Any) -> list[str]:
    _, models = mine(fleet("models", "--json").json(), proc)
    return sorted(m["name"] for m in models)


def test_ollama_unload_is_asked_confirmed_and_audited(fleet: Any, fleet_home: Path, stand_ins: StandIns) -> None:
    ollama = stand_ins.start("ollama", ["ollama", "serve"], models=TWO)
    hung = stand_ins.start("vllm", ["vllm", "serve", "org/hung", "--port", "0"], mode="hang")  # costs only itself
    out = fleet("unload", "llama3.2:3b", "--json")
    assert out.returncode == 0, out.stderr
    doc = out.json()
    assert doc == {"unloaded": True, "model": "llama3.2:3b", "api": "ollama", "pid": ollama.pid, "port": ollama.port,
                   "url": f"http://127.0.0.1:{ollama.port}", "vram_mb": 2048, "size_mb": 3072,
                   "method": "ollama_keep_alive_0", "confirmed": True, "claim_before_mb": None, "claim_after_mb": None}
    assert "POST /api/generate auth=no" in requests_seen(ollama)
    assert resident(fleet, ollama) == ["qwen3:latest"]
    assert hung.poll() is None
    (pid, detail), = events(fleet_home, "UNLOAD")
    assert pid == ollama.pid
    assert '"model":"llama3.2:3b"' in detail
    assert '"method":"ollama_keep_alive_0"' in detail
    history = fleet("history", "--type", "unload", "--json")
    assert history.returncode == 0
    assert [(e["event_type"], e["detail"]["model"]) for e in history.json()] == [("UNLOAD", "llama3.2:3b")]
    assert fleet("history", "--verify").returncode == 0

    # The tag is optional, as for `ollama stop`; the text form says what was freed.
    text = fleet("unload", "qwen3")
    assert text.returncode == 0, text.stderr
    assert f"Unloaded qwen3:latest from Ollama on port {ollama.port} (PID {ollama.pid}): 6144 MB" in text.stdout
    assert resident(fleet, ollama) == []


def test_unknown_model_exits_3_and_names_silent_servers(fleet: Any, stand_ins: StandIns) -> None:
    stand_ins.start("ollama", ["ollama", "serve"], models=TWO)
    broken = stand_ins.start("ollama", ["ollama", "serve"], mode="html")
    out = fleet("unload", "no-such-model", "--json")
    assert out.returncode == 3
    reason = out.json()["reason"]
    assert reason.startswith("model 'no-such-model' is not resident on any model server here")
    assert f"PID {broken.pid} port {broken.port}" in reason
    assert fleet("unload", "llama3.2:3b", "--port", "1").returncode == 3


def test_servers_without_an_unload_api_exit_1_with_the_process_alternative(fleet: Any, stand_ins: StandIns) -> None:
    llama = stand_ins.start("llama-server", ["llama-server", "-m", "/models/q.gguf", "--port", "0"])
    vllm = stand_ins.start("vllm", ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "0"])
    out = fleet("unload", "/models/q.gguf", "--json")
    assert out.returncode == 1
    reason = out.json()["reason"]
    assert "router mode" in reason
    assert f"fleet preempt --port {llama.port}" in reason
    out = fleet("unload", "meta-llama/Llama-3.1-8B-Instruct")
    assert out.returncode == 1
    assert "--enable-sleep-mode" in out.stderr
    assert out.stderr.count("\n") == 1
    for proc in (llama, vllm):
        assert not [line for line in requests_seen(proc) if line.startswith("POST")]


def test_router_lmstudio_and_vllm_sleep_unload(fleet: Any, stand_ins: StandIns) -> None:
    router = stand_ins.start("llama-server", ["llama-server", "--models-dir", "/models", "--port", "0"], models=[
        {"id": "a:Q4_K_M", "status": {"value": "loaded", "args": ["llama-server", "-c", "4096"]}},
        {"id": "b:Q8_0", "status": {"value": "loaded", "args": []}}])
    lms = stand_ins.start("lmstudio", ["lms", "server", "start", "--port", "0"])
    vllm = stand_ins.start("vllm", ["vllm", "serve", "org/m-7B", "--enable-sleep-mode", "--port", "0"])

    assert fleet("unload", "a:Q4_K_M").returncode == 0
    assert "POST /models/unload auth=no" in requests_seen(router)
    assert resident(fleet, router) == ["b:Q8_0"]

    assert fleet("unload", "qwen2.5-7b-instruct").returncode == 0
    assert "POST /api/v1/models/unload auth=no" in requests_seen(lms)
    assert resident(fleet, lms) == []

    out = fleet("unload", "org/m-7B", "--json")
    assert out.returncode == 0, out.stderr
    assert out.json()["method"] == "vllm_sleep"
    assert "POST /sleep?level=1 auth=no" in requests_seen(vllm)
    assert resident(fleet, vllm) == []


def test_a_model_on_two_servers_needs_a_port(fleet: Any, stand_ins: StandIns) -> None:
    first = stand_ins.start("ollama", ["ollama", "serve"], models=TWO)
    second = stand_ins.start("ollama", ["ollama", "serve"], models=TWO)
    out = fleet("unload", "qwen3:latest")
    assert out.returncode == 2
    assert "choose one with --port" in out.stderr
    assert fleet("unload", "qwen3:latest", "--port", str(second.port)).returncode == 0
    assert resident(fleet, first) == ["llama3.2:3b", "qwen3:latest"]
    assert resident(fleet, second) == ["llama3.2:3b"]


def test_bad_arguments_are_usage_errors(fleet: Any) -> None:
    assert fleet("unload", "x", "--port", "70000").returncode == 2
    assert fleet("unload", " ").returncode == 2
    assert fleet("unload").returncode == 2


def test_an_unload_that_does_not_happen_is_an_error_and_not_audited(fleet: Any, fleet_home: Path,
                                                                     stand_ins: StandIns) -> None:
    stubborn = stand_ins.start("ollama", ["ollama", "serve"], models=TWO, mode="stubborn")
    out = fleet("unload", "llama3.2:3b", "--json")
    assert out.returncode == 7
    assert "accepted the unload but still lists llama3.2:3b" in out.json()["reason"]
    assert resident(fleet, stubborn) == ["llama3.2:3b", "qwen3:latest"]
    assert events(fleet_home, "UNLOAD") == []
