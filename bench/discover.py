"""Cost of discovery and health with N idle workloads (default 100 and 1,000).

Each workload is a ``sleep`` whose command line reads like a model server (``/usr/local/bin/vllm serve
org/model-7B --port P``) and which holds a real listening socket on 127.0.0.1 (inherited from this
script), so the scan, the socket table and the registry all see N matching, listening processes.

Printed per N (CPU = user + system, this process or the measured child):
  - one discovery cycle in-process: the first (registers N rows) and the steady state (warm psutil cache,
    nothing changed: N heartbeats), median of 5;
  - ``fleet discover --json`` and ``fleet health --json --sample-seconds 1`` as fresh CLI processes;
  - ``fleet watch``: a warm Watcher's tick (discovery + monitor + sessions + idle), median of 5, and what
    that is as a share of one core at a 60 s interval (tick CPU / 60 s; the loop sleeps in between).

Run it inside a private PID namespace so only these processes are scanned:
    unshare --pid --fork --mount-proc python bench/discover.py
It signals only the processes it started.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROGRAMS = [
    "/usr/local/bin/vllm serve org/model-7B --port {port}",
    "/opt/llama.cpp/bin/llama-server -m /models/m-7b-q4_k_m.gguf --port {port}",
    "/usr/local/bin/ollama serve --port {port}",
    "/usr/bin/python3 -m mlx_lm.server --model mlx-community/m-4bit --port {port}",
    "/usr/bin/python3 -m sglang.launch_server --model-path org/m --port {port}",
]


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def spawn(n: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        port = sock.getsockname()[1]
        argv0 = PROGRAMS[i % len(PROGRAMS)].format(port=port)
        procs.append(subprocess.Popen([argv0, "3600"], executable="/bin/sleep", pass_fds=(sock.fileno(),),
                                      stdin=subprocess.DEVNULL))
        sock.close()
    return procs


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    c0, t0 = cpu_self(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_self() - c0


def cli(home: Path, *args: str) -> tuple[float, float, int]:
    env = {**os.environ, "FLEET_WATCH_HOME": str(home)}
    c0, t0 = cpu_children(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "fleet_watch", *args], env=env, capture_output=True, check=False)
    return time.perf_counter() - t0, cpu_children() - c0, out.returncode


def run(n: int) -> dict[str, object]:
    from fleet_watch.service.discovery import Discovery
    from fleet_watch.service.fleet import Fleet
    from fleet_watch.service.watch import Watcher

    procs = spawn(n)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            (home / "config.json").write_text(json.dumps({"gpu_total_mb": 10_000_000, "gpu_reserve_mb": 0}))
            fleet = Fleet.open(home)
            disc = Discovery(fleet)
            first = measure(disc.cycle)
            registered = len(fleet.records())
            steady = [measure(disc.cycle) for _ in range(5)]
            cli_discover = cli(home, "discover", "--json")
            cli_health = cli(home, "health", "--json", "--sample-seconds", "1")
            watcher = Watcher(fleet, discovery=disc)
            watcher.watch_once()
            ticks = [measure(watcher.watch_once) for _ in range(5)]
            fleet.close()
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    tick_cpu = statistics.median(t[1] for t in ticks)
    return {
        "processes": n, "registered": registered,
        "cycle_first": first, "cycle_steady": (statistics.median(s[0] for s in steady),
                                               statistics.median(s[1] for s in steady)),
        "cli_discover": cli_discover[:2], "cli_health": cli_health[:2], "health_exit": cli_health[2],
        "watch_tick": (statistics.median(t[0] for t in ticks), tick_cpu),
        "watch_pct_at_60s": 100 * tick_cpu / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,1000", help="comma-separated workload counts")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; wall / CPU in seconds")
    for n in (int(c) for c in args.counts.split(",")):
        r = run(n)

        def fmt(pair: object) -> str:
            assert isinstance(pair, tuple)
            wall, cpu = pair
            return f"wall {wall:6.3f}  cpu {cpu:6.3f}"

        print(f"\nN = {r['processes']} matching listeners ({r['registered']} registered)")
        print(f"  discovery cycle, first (registers all)   {fmt(r['cycle_first'])}")
        print(f"  discovery cycle, steady (warm, median 5) {fmt(r['cycle_steady'])}")
        print(f"  fleet discover --json (CLI process)      {fmt(r['cli_discover'])}")
        print(f"  fleet health --json (1 s sample)         {fmt(r['cli_health'])}  exit {r['health_exit']}")
        print(f"  fleet watch tick (warm, median 5)        {fmt(r['watch_tick'])}")
        print(f"  fleet watch at --interval 60             {r['watch_pct_at_60s']:.3f} % of one core")


if __name__ == "__main__":
    main()
