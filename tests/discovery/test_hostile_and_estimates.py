"""Discovery over hostile command lines, and GPU figures that are guesses: shown, never enforced (issue 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Children
from tests.discovery.servers import Servers
from tests.helpers.audit import events


def _trainer(children: Children, folder: Path) -> subprocess.Popen[str]:
    """A CPU-only `python train_thing.py`, as an experiment pattern sees it."""
    script = folder / "train_thing.py"
    script.write_text("import time\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(script)], text=True)
    children.procs.append(proc)
    return proc


def test_a_model_path_too_long_for_the_os_costs_one_estimate_not_the_cycle(fleet: Any, servers: Servers) -> None:
    odd = servers.program("llama-server", "-m", "a" * 300 + ".gguf", "--port", "0")
    normal = servers.program("vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "0")
    r = fleet("discover", "--json")
    assert r.returncode == 0, r.stderr
    added = {a["pid"]: a for a in r.json()["added"]}
    assert set(added) >= {odd.pid, normal.pid}
    assert added[odd.pid]["gpu_source"] == "pattern_default"  # listed, with the reason its figure is a guess
    watch = fleet("watch", "--interval", "0.05", "--max-ticks", "2", "--json")
    assert watch.returncode == 0
    assert all(json.loads(line)["error"] is None for line in watch.stdout.splitlines())


def test_pattern_defaults_are_estimates_that_deny_nothing(fleet: Any, fleet_home: Path, children: Children,
                                                           tmp_path: Path) -> None:
    (fleet_home / "config.json").write_text(json.dumps({"gpu_total_mb": 12000, "gpu_reserve_mb": 1000}))
    a, b = _trainer(children, tmp_path), _trainer(children, tmp_path)
    r = fleet("discover", "--json")
    assert r.returncode == 0, r.stderr
    sources = {x["pid"]: x["gpu_source"] for x in r.json()["added"]}
    assert sources == {a.pid: "pattern_default", b.pid: "pattern_default"}
    doc = fleet("status", "--json").json()
    assert doc["gpu_budget"]["allocated_mb"] == 0
    assert doc["gpu_budget"]["available_mb"] == 11000
    assert {p["pid"]: (p["gpu_mb"], p["gpu_basis"]) for p in doc["processes"]} == {
        a.pid: (8192, "estimate"), b.pid: (8192, "estimate")}
    assert "estimates, not enforced: 16384 MB" in fleet("status").stdout
    assert fleet("guard", "--gpu", "1").returncode == 0
    assert fleet("guard", "--gpu", "11000").returncode == 0
    est = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--ram-mb", "24000", "--json")
    assert est.json()["fits"] is True


def test_reservations_are_firm_and_an_overcommit_is_said_out_loud(fleet: Any, fleet_home: Path, children: Children,
                                                                 tmp_path: Path) -> None:
    (fleet_home / "config.json").write_text(json.dumps({
        "gpu_total_mb": 12000, "gpu_reserve_mb": 1000,
        "patterns": [{"name_template": "Trainer", "process_match": r"train_thing\.py", "workstream": "exp",
                      "gpu_mb_reserved": 8000}],
    }))
    _trainer(children, tmp_path)
    _trainer(children, tmp_path)
    assert fleet("discover").returncode == 0
    doc = fleet("status", "--json").json()
    assert doc["gpu_budget"]["allocated_mb"] == 16000
    assert doc["gpu_budget"]["available_mb"] == -5000
    assert "OVERCOMMITTED by 5000 MB" in fleet("status").stdout
    assert [e["over_mb"] for e in events(fleet_home, "GPU_OVERCOMMIT")] == [5000]
    health = fleet("health", "--json", "--sample-seconds", "0")
    alerts = [a for a in health.json()["gpu_memory_monitor"]["alerts"] if a["type"] == "gpu_budget_overcommitted"]
    assert alerts
    assert alerts[0]["over_mb"] == 5000
    denied = fleet("guard", "--gpu", "1", "--json").json()
    assert denied["allowed"] is False
    assert "error" not in denied, denied
    assert "PID" in denied["checks"]["gpu"]["reason"]
    assert "8000MB" in denied["checks"]["gpu"]["reason"]
    assert fleet("discover").returncode == 0  # the next cycle does not log the same overcommit again
    assert len(events(fleet_home, "GPU_OVERCOMMIT")) == 1


_EXEC_AS = """
import os, sys, time
argv = [a.encode("utf-8", "surrogateescape") for a in sys.argv[1:]]
os.execv(sys.executable, [argv[0], b"-c", b"import time; time.sleep(120)", *argv[1:]])
"""


def test_a_command_line_that_is_not_utf8_costs_nothing(fleet: Any, children: Children) -> None:
    """A model server whose argv holds bytes that are not UTF-8: it is registered, its command line escaped; it
    used to abort the whole cycle (SQLite refuses lone surrogates) and every watch tick after it."""
    proc = subprocess.Popen([sys.executable, "-c", _EXEC_AS, "llama-server", "--alias", "x\udcff", "--port", "0"])
    children.procs.append(proc)  # type: ignore[arg-type]
    r = fleet("discover", "--json")
    assert r.returncode == 0, r.stderr
    added = {a["pid"]: a for a in r.json()["added"]}
    assert proc.pid in added
    shown = next(p for p in fleet("status", "--json").json()["processes"] if p["pid"] == proc.pid)
    assert "\\xff" in shown["start_cmd"]


def test_a_model_file_with_absurd_sizes_costs_one_estimate_not_the_cycle(fleet: Any, servers: Servers,
                                                                        tmp_path: Path) -> None:
    from tests.estimator.conftest import llama_meta, llama_tensors, write_gguf

    huge = tmp_path / "huge-Q4_0.gguf"
    write_gguf(huge, "llama", llama_meta("llama", 2, 256, 4, 2, 512),
               [*llama_tensors(2, 256, 4, 2, 512, 1024, matrix="F16"), ("extra.weight", (2**40, 2**40, 2**40), "F32")],
               sparse_size=1 << 20)
    refused = fleet("estimate", "--model", str(huge), "--json")
    assert refused.returncode == 2, refused.stdout
    assert "more than any model has" in refused.json()["reason"]
    odd = servers.program("llama-server", "-m", str(huge), "--port", "0")
    r = fleet("discover", "--json")
    assert r.returncode == 0, r.stderr
    assert {a["pid"]: a for a in r.json()["added"]}[odd.pid]["gpu_source"] == "pattern_default"
