"""What the servers report, joined with the claim ledger: discovery's Ollama claim, health's idle models, guard's
``reclaimable`` on a denial, and the ledger after ``fleet unload``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers.helpers import StandIns

GIB = 1024**3
BIG = {"name": "qwen2.5:32b", "model": "qwen2.5:32b", "size": 22 * GIB, "size_vram": 20 * GIB,
       "expires_at": "2099-01-01T00:00:00Z"}
SMALL = {"name": "llama3.2:3b", "model": "llama3.2:3b", "size": 11 * GIB, "size_vram": 10 * GIB}


def workload(doc: dict[str, Any], pid: int) -> dict[str, Any]:
    return next(w for w in doc["workloads"] if w["pid"] == pid)


def test_ollama_claims_what_its_models_hold_and_falls_back_when_it_does_not_answer(
        fleet: Any, stand_ins: StandIns) -> None:
    two = stand_ins.start("ollama", ["ollama", "serve"], models=[BIG, SMALL])
    empty = stand_ins.start("ollama", ["ollama", "serve"], models=[])
    hung = stand_ins.start("ollama", ["ollama", "serve"], mode="hang")
    out = fleet("discover", "--json")
    assert out.returncode == 0, out.stderr
    doc = out.json()
    assert (workload(doc, two.pid)["gpu_mb"], workload(doc, two.pid)["gpu_source"]) == (30720, "ollama_api")
    assert (workload(doc, empty.pid)["gpu_mb"], workload(doc, empty.pid)["gpu_source"]) == (0, "ollama_api")
    assert workload(doc, hung.pid)["gpu_source"] in ("estimate", "pattern_default")
    added = {a["pid"]: a for a in doc["added"]}
    assert (added[two.pid]["gpu_mb"], added[two.pid]["gpu_source"]) == (30720, "ollama_api")


def test_health_lists_idle_resident_models_as_reclaimable(fleet: Any, stand_ins: StandIns) -> None:
    ollama = stand_ins.start("ollama", ["ollama", "serve"], models=[BIG, SMALL])
    lms = stand_ins.start("lmstudio", ["lms", "server", "start", "--port", "0"])  # no VRAM figure: not listed
    out = fleet("health", "--json", "--sample-seconds", "0.2")
    assert out.returncode in (0, 8), out.stderr
    idle = out.json()["idle"]
    models = {e["model"]: e for e in idle if e.get("kind") == "model" and e["pid"] == ollama.pid}
    assert set(models) == {"qwen2.5:32b", "llama3.2:3b"}
    big = models["qwen2.5:32b"]
    assert (big["reclaimable_mb"], big["gpu_mb"], big["port"]) == (20480, 20480, ollama.port)
    assert big["command"] == f"fleet unload qwen2.5:32b --port {ollama.port}"
    assert big["expires_at"] == "2099-01-01T00:00:00Z"
    assert not [e for e in idle if e.get("kind") == "model" and e["pid"] == lms.pid]
    for e in idle:
        if e.get("kind") == "process" and e["pid"] == ollama.pid:  # its models are not counted twice
            assert e["reclaimable_mb"] == e["rss_mb"]
    text = fleet("health", "--sample-seconds", "0")
    assert f"model qwen2.5:32b (port {ollama.port}): fleet unload qwen2.5:32b --port {ollama.port}" in text.stdout


def test_guard_denial_lists_reclaimable_models_and_unload_turns_it_into_an_allow(
        fleet: Any, stand_ins: StandIns) -> None:
    ollama = stand_ins.start("ollama", ["ollama", "serve"], models=[BIG, SMALL])
    busy_llama = stand_ins.start("llama-server", ["llama-server", "-m", "/m.gguf", "--port", "0"], busy=True)
    assert fleet("discover").returncode == 0
    base = fleet("guard", "--gpu", "1", "--json").json()["state"]["gpu_budget"]["available_mb"]
    ask = base + 5000  # 5000 MB short: the largest idle model covers it

    out = fleet("guard", "--gpu", str(ask), "--json")
    assert out.returncode == 1
    gpu = out.json()["checks"]["gpu"]
    assert gpu["allowed"] is False
    mine = [r for r in gpu["reclaimable"] if r["pid"] in (ollama.pid, busy_llama.pid)]
    assert mine == [{"name": "qwen2.5:32b", "pid": ollama.pid, "port": ollama.port, "vram_mb": 20480,
                     "expires_at": "2099-01-01T00:00:00Z",
                     "command": f"fleet unload qwen2.5:32b --port {ollama.port}"}]
    # Asking for more than one model frees lists both, largest first.
    wider = fleet("guard", "--gpu", str(base + 25000), "--json").json()["checks"]["gpu"]["reclaimable"]
    assert [r["name"] for r in wider if r["pid"] == ollama.pid] == ["qwen2.5:32b", "llama3.2:3b"]

    unloaded = fleet("unload", "qwen2.5:32b", "--json")
    assert unloaded.returncode == 0, unloaded.stderr
    assert (unloaded.json()["claim_before_mb"], unloaded.json()["claim_after_mb"]) == (30720, 10240)
    after = fleet("guard", "--gpu", str(ask), "--json")
    assert after.returncode == 0, after.stdout
    assert "reclaimable" not in after.json()["checks"]["gpu"]


HTTP_CODE = ("fleet_watch.probes.servers", "fleet_watch.service.servers", "http.client", "concurrent.futures")


@pytest.mark.parametrize(("args", "allowed"), [
    (["--port", "8931", "--gpu", "10"], True),
    # Denied (a 70B model in 4 GB), with no model server registered to ask: nothing to reclaim, no HTTP code.
    (["--gpu", "1000", "--framework", "llama_cpp", "--model", "llama-3.1-70b-Q4_K_M", "--ram-mb", "4096"], False),
])
def test_the_guard_loads_the_http_code_only_to_ask_a_model_server(fleet_home: Path, args: list[str],
                                                                   allowed: bool) -> None:
    code = ("import sys\nfrom fleet_watch.cli import main\n"
            f"rc = main(['guard', *{args!r}, '--json'])\n"
            f"bad = [m for m in {HTTP_CODE!r} if m in sys.modules]\n"
            "print('LOADED', bad)\nsys.exit(rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FLEET_WATCH_HOME": str(fleet_home)})
    assert out.returncode == (0 if allowed else 1), out.stderr
    assert ('"allowed": true' in out.stdout) is allowed
    assert out.stdout.strip().endswith("LOADED []")
