"""Benchmark: `fleet guard --json` and `fleet status --json` as whole cold processes, at 0/100/1,000 registered.

Usage:  python bench/guard.py [--runs 25] [--sizes 0,100,1000]

For each registry size it starts that many idle `sleep` processes, registers each one (with a port, a
repo and a GPU claim, as a real fleet would have), then runs each command --runs times as a new process
and prints the median and p90 wall time. Everything it starts, it kills; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _fleet_cmd() -> list[str]:
    exe = shutil.which("fleet", path=str(Path(sys.executable).parent)) or shutil.which("fleet")
    return [exe] if exe else [sys.executable, "-m", "fleet_watch"]


def _installed_env() -> dict[str, str]:
    """As an installed tool runs: with bytecode caching (sandboxes often set PYTHONDONTWRITEBYTECODE, which makes
    every run compile every module and adds ~30 ms that no user pays)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    subprocess.run(cmd, env=env, capture_output=True, check=False)  # warm-up: bytecode written, page cache warm
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, check=False)
        samples.append((time.perf_counter() - t0) * 1000)
        if proc.returncode not in (0, 1):
            output = f"{proc.stderr.decode().strip()} {proc.stdout.decode().strip()}"
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {output}")
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--sizes", default="0,100,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from fleet_watch.service.fleet import Fleet

    fleet_cmd = _fleet_cmd()
    print(f"# fleet guard / status, cold process each run, {args.runs} runs, {os.cpu_count()} CPUs")
    print(f"{'registered':>10}  {'command':<40} {'median ms':>10} {'p90 ms':>8}")
    for size in sizes:
        home = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
        home.chmod(0o700)
        (home / "config.json").write_text(json.dumps({"gpu_total_mb": 10_000_000, "gpu_reserve_mb": 16384}))
        env = {**_installed_env(), "FLEET_WATCH_HOME": str(home)}
        sleepers = [subprocess.Popen(["sleep", "900"]) for _ in range(size)]
        try:
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
                cmd = [sys.executable, "-c", "import click"] if extra is None else [*fleet_cmd, *extra]
                median, p90 = _time(cmd, env, args.runs)
                print(f"{size:>10}  {label:<40} {median:>10.1f} {p90:>8.1f}", flush=True)
        finally:
            for proc in sleepers:
                proc.kill()
            for proc in sleepers:
                proc.wait()
            shutil.rmtree(home, ignore_errors=True)
    baseline, _ = _time([sys.executable, "-c", "pass"], _installed_env(), args.runs)
    with_click, _ = _time([sys.executable, "-c", "import click"], _installed_env(), args.runs)
    print(f"# for scale: `python -c pass` takes {baseline:.1f} ms here, `python -c 'import click'` {with_click:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
