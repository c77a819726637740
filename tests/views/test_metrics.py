"""Metrics parsed back with ``prometheus_client.parser``: from the textfile and from a live scrape of a running
``fleet watch``; names, units, labels (never a PID or a session id), every ownership class, the dashboard."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet_watch.reports.metrics import MetricsData, render
from fleet_watch.reports.ownership import CLASSES
from tests.conftest import Children
from tests.views import sample

MIB = 1 << 20
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-fleet-watch.json"
FORBIDDEN_LABELS = {"pid", "session_id", "session", "start_time"}


def _parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(families: dict[str, Any], name: str) -> list[Any]:
    return list(families[name].samples)


def _check_conventions(families: dict[str, Any]) -> None:
    for name, family in families.items():
        assert name.startswith("fleet_"), name
        assert "_mb" not in name, name  # base units only
        for s in family.samples:
            assert not FORBIDDEN_LABELS & set(s.labels), (name, s.labels)
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name


def _full() -> MetricsData:
    return MetricsData(state=sample.state(), budgets=sample.BUDGETS, conflicts_total=7, version="9.9",
                       watch_cycles_total=12, watch_errors_total=1)


def test_every_class_device_and_unit_from_the_views() -> None:
    families = _parse(render(_full()))
    _check_conventions(families)
    classes = {s.labels["class"] for s in _samples(families, "fleet_processes")}
    assert classes == set(CLASSES)
    claimed = {(s.labels["name"], s.labels["device"], s.labels["class"]): s.value
               for s in _samples(families, "fleet_gpu_claimed_bytes")}
    assert claimed[("vllm-main", "0", "live")] == 40960 * MIB
    assert claimed[("orphan-server", "1", "orphan_confirmed")] == 2048 * MIB
    assert claimed[(sample.HOSTILE, "1", "disconnected")] == 8192 * MIB  # escaped by the client, parsed back whole
    allocated = {s.labels["device"]: s.value for s in _samples(families, "fleet_gpu_allocated_bytes")}
    assert allocated == {"all": 55296 * MIB, "0": 45056 * MIB, "1": 10240 * MIB}
    rss = _samples(families, "fleet_workload_resident_memory_bytes")
    assert [(s.labels, s.value) for s in rss] == [({"workstream": "research", "name": "vLLM"}, 3500 * MIB)]  # summed
    assert _samples(families, "fleet_memory_pressure_ratio")[0].value == pytest.approx(0.54)
    assert _samples(families, "fleet_memory_total_bytes")[0].value == 65536 * MIB
    assert _samples(families, "fleet_last_cycle_duration_seconds")[0].value == 0.125
    assert _samples(families, "fleet_conflicts_prevented")[0].name == "fleet_conflicts_prevented_total"
    assert _samples(families, "fleet_conflicts_prevented")[0].value == 7
    alerts = {(s.labels["type"], s.labels["severity"]) for s in _samples(families, "fleet_alerts")}
    assert alerts == {("gpu_memory_full", "warning"), ("process_over_claim", "warning")}
    sessions = {s.labels["kind"]: s.labels["classification"] for s in _samples(families, "fleet_agent_sessions")}
    assert sessions == {"claude-code": "detached_hot", "codex": "attached"}
    assert {s.labels["status"] for s in _samples(families, "fleet_session_leases")} == {"ACTIVE", "CLOSED"}
    assert _samples(families, "fleet_watch_cycle_errors")[0].value == 1
    assert _samples(families, "fleet_build_info")[0].labels == {"version": "9.9"}


def test_the_dashboard_reads_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["query"]["query"])
    rendered = {s.name for f in text_string_to_metric_families(render(_full())) for s in f.samples}
    rendered |= {f.name for f in text_string_to_metric_families(render(_full()))}
    used = {m for e in exprs for m in re.findall(r"\bfleet_[a-z_]+", e)}
    assert used, exprs
    assert used <= rendered, used - rendered
    assert {"fleet_processes", "fleet_gpu_claimed_bytes", "fleet_gpu_allocated_bytes", "fleet_memory_pressure_ratio",
            "fleet_conflicts_prevented_total", "fleet_alerts", "fleet_last_cycle_duration_seconds"} <= used
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])


def test_textfile_is_atomic_readable_by_node_exporter_and_parses(fleet: Any, fleet_home: Path,
                                                                 children: Children, tmp_path: Path) -> None:
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "srv", "--workstream", "demo", "--gpu", "3072",
                 "--port", str(sample.free_port())).returncode == 0
    target = tmp_path / "textfile" / "fleet.prom"
    target.parent.mkdir()
    out = fleet("metrics", "--textfile", str(target))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["fleet.prom"]  # no temp file left
    families = _parse(target.read_text())
    _check_conventions(families)
    claimed = _samples(families, "fleet_gpu_claimed_bytes")
    assert [(s.labels, s.value) for s in claimed] == [
        ({"workstream": "demo", "name": "srv", "device": "all", "class": "live"}, 3072 * MIB)]
    assert _samples(families, "fleet_processes")[0].labels == {"workstream": "demo", "class": "live"}
    assert "fleet_watch_cycles" not in families  # only a running watch has these
    stdout = fleet("metrics").stdout
    assert "fleet_gpu_claimed_bytes{" in stdout


@pytest.mark.parametrize(("args", "code"), [
    (["--textfile", "/nonexistent-dir/fleet.prom"], 2),
    (["--textfile", "fleet.txt"], 2),
])
def test_textfile_refusals(fleet: Any, args: list[str], code: int) -> None:
    out = fleet("metrics", *args)
    assert out.returncode == code
    assert out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_without_the_extra_metrics_is_unavailable(fleet_home: Path) -> None:
    script = ("import sys; sys.modules['prometheus_client'] = None\n"
              "from fleet_watch.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "FLEET_WATCH_HOME": str(fleet_home)}
    for args in (["metrics"], ["watch", "--metrics-port", "0", "--max-ticks", "1"]):
        out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                             timeout=60)
        assert out.returncode == 7, out.stderr
        assert "pip install 'fleet-watch[metrics]'" in out.stdout + out.stderr


def _start_watch(home: Path, children: Children, *extra: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "FLEET_WATCH_HOME": str(home)}
    watch = subprocess.Popen([sys.executable, "-m", "fleet_watch", "watch", "--interval", "0.3", "--json", *extra],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.procs.append(watch)
    assert watch.stderr is not None
    line = watch.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
    assert match, line
    return watch, int(match.group(1))


def _scrape(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return _parse(resp.read().decode())


def test_live_scrape_on_loopback_only_and_a_clean_sigterm(fleet: Any, fleet_home: Path, children: Children) -> None:
    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "srv", "--workstream", "demo", "--gpu", "1024"
                 ).returncode == 0
    watch, port = _start_watch(fleet_home, children, "--metrics-port", "0")
    try:
        _scrape_until_stopped(watch, port)
    finally:
        for pipe in (watch.stdout, watch.stderr):
            if pipe is not None:
                pipe.close()


def _scrape_until_stopped(watch: subprocess.Popen[str], port: int) -> None:
    listening = [c for c in psutil.Process(watch.pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", port)]
    deadline = time.monotonic() + 60
    while True:  # bounded: wait for the second cycle to be published
        families = _scrape(port)
        cycles = families.get("fleet_watch_cycles")
        if cycles is not None and cycles.samples[0].value >= 2:
            break
        assert time.monotonic() < deadline, "no second cycle published"
        time.sleep(0.1)
    _check_conventions(families)
    ours = [s for s in _samples(families, "fleet_gpu_claimed_bytes") if s.labels["workstream"] == "demo"]
    assert [(s.labels["name"], s.labels["class"], s.value) for s in ours] == [("srv", "live", 1024 * MIB)]
    assert _samples(families, "fleet_last_cycle_duration_seconds")[0].value > 0
    assert _samples(families, "fleet_watch_cycle_errors")[0].value == 0

    watch.send_signal(signal.SIGTERM)
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    assert "Traceback" not in err
    assert all(json.loads(line)["error"] is None for line in out.splitlines())
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_metrics_port_refusals(fleet: Any, children: Children) -> None:
    holder = children.listener(0)
    busy = holder.bound_ports[0]  # type: ignore[attr-defined]
    out = fleet("watch", "--metrics-port", str(busy), "--max-ticks", "1")
    assert out.returncode == 7
    assert f"127.0.0.1:{busy}" in out.stderr
    for bad in ("-1", "65536"):
        out = fleet("watch", "--metrics-port", bad, "--max-ticks", "1")
        assert out.returncode == 2
        assert "--metrics-port" in out.stderr
