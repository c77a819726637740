"""Benchmark: `fleet guard --json` and `fleet status --json` as whole cold processes, at 0/100/1,000 registered.

Usage:  python bench/guard.py [--runs 25] [--sizes 0,100,1000]

For each registry size it starts that many idle `sleep` processes, registers each one (with a port, a
repo and a GPU claim, as a real fleet would have), then runs each command --runs times as a new process
and prints the median and p90 wall time. Everything it starts, it kills; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_home, fleet_cmd, installed_env, time_cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--sizes", default="0,100,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from fleet_watch.service.fleet import Fleet

    fleet_bin = fleet_cmd()
    print(f"# fleet guard / status, cold process each run, {args.runs} runs, {os.cpu_count()} CPUs")
    print(f"{'registered':>10}  {'command':<40} {'median ms':>10} {'p90 ms':>8}")
    for size in sizes:
        with bench_home("fleet-bench-guard-", size) as (home, sleepers):
            env = {**installed_env(), "FLEET_WATCH_HOME": str(home)}
            fleet = Fleet.open(home)
            for i, proc in enumerate(sleepers):
                fleet.register(pid=proc.pid, name=f"worker-{i}", workstream=f"ws-{i % 7}", ports=[20000 + i],
                               gpu_mb=64, repos=[f"/srv/bench/repo-{i}"])
            fleet.close()
            for label, extra in (
                ("guard --json --port", ["guard", "--json", "--port", "18999"]),
                ("guard --json --port --repo --gpu", ["guard", "--json", "--port", "18999", "--repo",
                                                      "/srv/bench/new", "--gpu", "1024"]),
                ("guard --json --gpu --framework --model", ["guard", "--json", "--gpu", "4096", "--framework",
                                                            "candle", "--model", "qwen2.5-7B-Q4_K_M"]),
                ("status --json", ["status", "--json"]),
                ("(python -c 'import click', for scale)", None),
            ):
                cmd = [sys.executable, "-c", "import click"] if extra is None else [*fleet_bin, *extra]
                median, p90 = time_cli(cmd, env, args.runs, ok=(0, 1))
                print(f"{size:>10}  {label:<40} {median:>10.1f} {p90:>8.1f}", flush=True)
    baseline, _ = time_cli([sys.executable, "-c", "pass"], installed_env(), args.runs, ok=(0, 1))
    with_click, _ = time_cli([sys.executable, "-c", "import click"], installed_env(), args.runs, ok=(0, 1))
    print(f"# for scale: `python -c pass` takes {baseline:.1f} ms here, `python -c 'import click'` {with_click:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
