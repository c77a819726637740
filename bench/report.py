"""Benchmark: one report (state.json + STATE_REPORT.md + changelog entry) and one metrics render, at 0/100/1,000
registered processes.

Usage:  python bench/report.py [--runs 15] [--sizes 0,100,1000] [--cli-runs 5]

For each registry size it starts that many idle `sleep` processes and registers each one (a port, a repo and a GPU
claim, as in bench/guard.py). Then, in this process: `write_reports` (gather the state with every process's
liveness, diff against the previous state, render, write both files atomically) and the metrics (gather + render,
and the render alone from views already gathered, which is what a `fleet watch --metrics-port` tick adds). And as
cold processes: `fleet report` and `fleet metrics`. Medians and p90 in milliseconds; everything it starts, it kills.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _stats(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def _time_call(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm-up: imports done, caches filled
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return _stats(samples)


def _time_cli(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    return _stats(samples)


def _in_process(fleet: Any, runs: int) -> list[tuple[str, tuple[float, float]]]:
    from fleet_watch.service.metrics import gather_metrics, render
    from fleet_watch.service.report import gather_views, write_reports

    views = gather_views(fleet)
    return [
        ("write_reports (gather, diff, render, 2 atomic writes)", _time_call(lambda: write_reports(fleet), runs)),
        ("metrics: gather + render", _time_call(lambda: render(gather_metrics(fleet)), runs)),
        ("metrics: render from gathered views (watch tick)",
         _time_call(lambda: render(gather_metrics(fleet, views=views)), runs)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--sizes", default="0,100,1000")
    args = parser.parse_args()

    from fleet_watch.service.fleet import Fleet

    fleet_bin = shutil.which("fleet", path=str(Path(sys.executable).parent))
    fleet_cmd = [fleet_bin] if fleet_bin else [sys.executable, "-m", "fleet_watch"]
    env_base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    print(f"# report and metrics cost, {args.runs} runs in-process / {args.cli_runs} cold CLI runs, "
          f"{os.cpu_count()} CPUs")
    print(f"{'registered':>10}  {'what':<52} {'median ms':>10} {'p90 ms':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        home = Path(tempfile.mkdtemp(prefix="fleet-bench-report-"))
        home.chmod(0o700)
        (home / "config.json").write_text(json.dumps({"gpu_total_mb": 10_000_000, "gpu_reserve_mb": 16384}))
        sleepers = [subprocess.Popen(["sleep", "900"]) for _ in range(size)]
        try:
            fleet = Fleet.open(home)
            for i, proc in enumerate(sleepers):
                fleet.register(pid=proc.pid, name=f"worker-{i}", workstream=f"ws-{i % 7}", ports=(20000 + i,),
                               gpu_mb=64, repos=(f"/srv/bench/repo-{i}",))
            rows = _in_process(fleet, args.runs)
            fleet.close()
            env = {**env_base, "FLEET_WATCH_HOME": str(home)}
            rows.append(("`fleet report` (cold process)", _time_cli([*fleet_cmd, "report"], env, args.cli_runs)))
            rows.append(("`fleet metrics` (cold process)", _time_cli([*fleet_cmd, "metrics"], env, args.cli_runs)))
            for label, (median, p90) in rows:
                print(f"{size:>10}  {label:<52} {median:>10.1f} {p90:>8.1f}", flush=True)
            sizes = {name: (home / name).stat().st_size for name in ("state.json", "STATE_REPORT.md")}
            print(f"{size:>10}  sizes: state.json {sizes['state.json']:,} B, STATE_REPORT.md "
                  f"{sizes['STATE_REPORT.md']:,} B", flush=True)
        finally:
            for proc in sleepers:
                proc.kill()
            for proc in sleepers:
                proc.wait()
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
