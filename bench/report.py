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
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_home, fleet_cmd, installed_env, time_call, time_cli


def _in_process(fleet: Any, runs: int) -> list[tuple[str, tuple[float, float]]]:
    from fleet_watch.service.metrics import gather_metrics, render
    from fleet_watch.service.report import gather_views, write_reports

    views = gather_views(fleet)
    return [
        ("write_reports (gather, diff, render, 2 atomic writes)", time_call(lambda: write_reports(fleet), runs)),
        ("metrics: gather + render", time_call(lambda: render(gather_metrics(fleet)), runs)),
        ("metrics: render from gathered views (watch tick)",
         time_call(lambda: render(gather_metrics(fleet, views=views)), runs)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--sizes", default="0,100,1000")
    args = parser.parse_args()

    from fleet_watch.service.fleet import Fleet

    fleet_bin = fleet_cmd()
    env_base = installed_env()
    print(f"# report and metrics cost, {args.runs} runs in-process / {args.cli_runs} cold CLI runs, "
          f"{os.cpu_count()} CPUs")
    print(f"{'registered':>10}  {'what':<52} {'median ms':>10} {'p90 ms':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        with bench_home("fleet-bench-report-", size) as (home, sleepers):
            fleet = Fleet.open(home)
            for i, proc in enumerate(sleepers):
                fleet.register(pid=proc.pid, name=f"worker-{i}", workstream=f"ws-{i % 7}", ports=(20000 + i,),
                               gpu_mb=64, repos=(f"/srv/bench/repo-{i}",))
            rows = _in_process(fleet, args.runs)
            fleet.close()
            env = {**env_base, "FLEET_WATCH_HOME": str(home)}
            rows.append(("`fleet report` (cold process)", time_cli([*fleet_bin, "report"], env, args.cli_runs)))
            rows.append(("`fleet metrics` (cold process)", time_cli([*fleet_bin, "metrics"], env, args.cli_runs)))
            for label, (median, p90) in rows:
                print(f"{size:>10}  {label:<52} {median:>10.1f} {p90:>8.1f}", flush=True)
            sizes = {name: (home / name).stat().st_size for name in ("state.json", "STATE_REPORT.md")}
            print(f"{size:>10}  sizes: state.json {sizes['state.json']:,} B, STATE_REPORT.md "
                  f"{sizes['STATE_REPORT.md']:,} B", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
