"""``fleet watch``: cycles until SIGINT/SIGTERM, clean exit, CPU over the interval, kills nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.probes.scan import ProcessScanner
from fleet_watch.service.watch import run_watch
from tests.conftest import Children
from tests.discovery.servers import Servers


def test_watch_ticks_as_ndjson_with_cpu_over_the_interval(fleet: Any, servers: Servers) -> None:
    server = servers.program("vllm", "serve", "Qwen/Qwen2.5-0.5B", "--port", "0")
    out = fleet("watch", "--interval", "0.5", "--max-ticks", "4", "--json")
    assert out.returncode == 0, out.stderr
    ticks = [json.loads(line) for line in out.stdout.splitlines()]
    assert [t["tick"] for t in ticks] == [1, 2, 3, 4]
    assert [a["pid"] for a in ticks[0]["discovery"]["added"]] == [server.pid]
    assert ticks[1]["discovery"]["added"] == []
    assert ticks[1]["discovery"]["heartbeats"] == 1
    assert ticks[0]["interval_seconds"] is None
    assert ticks[2]["interval_seconds"] > 0
    assert ticks[0]["idle"] == []  # no rate yet on the first tick
    # Measured over the interval, not the process lifetime. CPU time comes in 10 ms clock ticks (2% of a 0.5 s
    # interval), so one stray tick on a loaded machine can hide the server from one cycle, not from all three.
    seen = [i for t in ticks[1:] for i in t["idle"] if i["pid"] == server.pid]
    assert seen, [t["idle"] for t in ticks]
    assert all(i["cpu_pct"] <= 1.0 for i in seen)
    assert server.poll() is None  # watch observes; it killed nothing


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_stops_cleanly_on_signal(fleet_home: Path, servers: Servers, children: Children,
                                       sig: signal.Signals) -> None:
    server = servers.program("llama-server", "-m", "/m/x.gguf", "--port", "0")
    env = {**os.environ, "FLEET_WATCH_HOME": str(fleet_home)}
    watch = subprocess.Popen([sys.executable, "-m", "fleet_watch", "watch", "--interval", "30"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.procs.append(watch)
    assert watch.stdout is not None
    assert watch.stderr is not None
    assert watch.stdout.readline().startswith("Fleet Watch running. Scanning every 30s.")
    line = watch.stdout.readline()
    assert re.match(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \+ PID {server.pid} \(llama.cpp server\)", line), line
    watch.send_signal(sig)  # arrives while it waits for the next tick: it must not wait 30 s
    rest, err = watch.communicate(timeout=20)
    assert watch.returncode == 0, err
    assert rest.strip().endswith("Fleet Watch stopped.")
    assert "Traceback" not in err
    assert server.poll() is None


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf", "1e-320", "0.01", "86401", "abc"])
def test_watch_rejects_a_bad_interval(fleet: Any, interval: str) -> None:
    out = fleet("watch", "--interval", interval, "--max-ticks", "2")
    assert out.returncode == 2
    assert "--interval" in out.stderr


def test_run_watch_only_schedules() -> None:
    clock = [0.0]
    waits: list[float] = []
    ticks: list[int] = []

    def tick() -> int:
        clock[0] += 0.25  # each tick takes a quarter of a second
        return len(ticks) + 1

    def wait(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    n = run_watch(1.0, lambda: len(ticks) >= 4, tick, ticks.append, wait, now=lambda: clock[0])
    assert n == 4
    assert ticks == [1, 2, 3, 4]
    assert waits == [0.75, 0.75, 0.75, 0.75]  # a fixed grid: tick time does not drift the schedule
    assert run_watch(1.0, lambda: False, tick, ticks.append, wait, max_ticks=2, now=lambda: clock[0]) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a server that an unprivileged child cannot read "
                    "(CI runs the suite as root, inside a private PID namespace)")
def test_without_root_other_users_listeners_are_reported_as_held(servers: Servers) -> None:
    """The real scanner in a child that dropped to ``nobody``: our (root) server's socket cannot be
    attributed to its PID, yet its port is seen, held by uid 0, from /proc/net/tcp."""
    import psutil  # loaded before dropping privileges: the interpreter's own files are root-only here

    server = servers.program("vllm", "serve", "m", "--port", "0")
    port = server.bound_ports[0]  # type: ignore[attr-defined]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            found, complete = ProcessScanner().listeners()
            procs = {p.pid: p for p in ProcessScanner().processes()}
            me = procs.get(server.pid)
            doc = {"listeners": [[x.port, x.address, x.pid, x.uid] for x in found], "complete": complete,
                   "server_cmdline": None if me is None else me.cmdline}
            os.write(write_end, json.dumps(doc).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    doc = json.loads(data)
    assert [port, "127.0.0.1", None, 0] in doc["listeners"]
    assert "vllm serve m" in doc["server_cmdline"]  # command lines stay readable without root
    assert psutil.Process(server.pid).is_running()
