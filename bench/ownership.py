"""Benchmark: the ownership classification at 0/100/1,000 registered processes.

Usage:  python bench/ownership.py [--runs 15] [--sizes 0,100,1000] [--cli-runs 5]

For each size it starts that many idle `sleep` processes (children of this script, so their parent chains are
attached) and registers each one; then it ages half of the heartbeats past 180 s (as the tests do, in SQLite), so
that those rows need their parent chain read. Measured in this process: `reconcile` with every chain read (what
`fleet reconcile` and `fleet stale` do), and the views' classification (chains read only where the class depends on
them, over liveness the caller already has, what `status`/`report` add). As cold processes: `fleet reconcile --json`
and `fleet status --json`. Medians and p90 in milliseconds; everything it starts, it kills.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
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
    fn()  # warm-up
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


def _age_half(home: Path, pids: list[int]) -> None:
    from fleet_watch.clock import iso_utc

    conn = sqlite3.connect(home / "registry.db")
    with conn:
        conn.executemany("UPDATE processes SET last_heartbeat = ? WHERE pid = ?",
                         [(iso_utc(time.time() - 600), pid) for pid in pids[::2]])
    conn.close()


def _in_process(fleet: Any, runs: int) -> list[tuple[str, tuple[float, float]]]:
    from fleet_watch.service.ledger import Ledger
    from fleet_watch.service.ownership import classify_for_views, reconcile
    from fleet_watch.store import registry

    def views() -> None:
        now = fleet.clock.now()
        with fleet.reading() as conn:
            records = registry.list_records(conn)
            ledger = Ledger.read(conn, now)
        alive = {h.record_id: ledger.death(h) is None for h in ledger.holders}
        classify_for_views(fleet, now, records, alive)

    return [("reconcile, every chain read", _time_call(lambda: reconcile(fleet), runs)),
            ("views: liveness + classes, chains where needed", _time_call(views, runs))]


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
    print(f"# ownership classification cost, {args.runs} runs in-process / {args.cli_runs} cold CLI runs, "
          f"{os.cpu_count()} CPUs; half the rows stale (their chains read)")
    print(f"{'registered':>10}  {'what':<48} {'median ms':>10} {'p90 ms':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        home = Path(tempfile.mkdtemp(prefix="fleet-bench-ownership-"))
        home.chmod(0o700)
        (home / "config.json").write_text(json.dumps({"gpu_total_mb": 10_000_000, "gpu_reserve_mb": 16384}))
        sleepers = [subprocess.Popen(["sleep", "900"]) for _ in range(size)]
        try:
            fleet = Fleet.open(home)
            for i, proc in enumerate(sleepers):
                fleet.register(pid=proc.pid, name=f"worker-{i}", workstream=f"ws-{i % 7}")
            _age_half(home, [p.pid for p in sleepers])
            rows = _in_process(fleet, args.runs)
            fleet.close()
            env = {**env_base, "FLEET_WATCH_HOME": str(home)}
            rows.append(("`fleet reconcile --json` (cold process)",
                         _time_cli([*fleet_cmd, "reconcile", "--json"], env, args.cli_runs)))
            rows.append(("`fleet status --json` (cold process)",
                         _time_cli([*fleet_cmd, "status", "--json"], env, args.cli_runs)))
            for label, (median, p90) in rows:
                print(f"{size:>10}  {label:<48} {median:>10.1f} {p90:>8.1f}", flush=True)
        finally:
            for proc in sleepers:
                proc.kill()
            for proc in sleepers:
                proc.wait()
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
