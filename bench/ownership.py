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
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_home, fleet_cmd, installed_env, time_call, time_cli


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

    return [("reconcile, every chain read", time_call(lambda: reconcile(fleet), runs)),
            ("views: liveness + classes, chains where needed", time_call(views, runs))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--sizes", default="0,100,1000")
    args = parser.parse_args()

    from fleet_watch.service.fleet import Fleet

    fleet_bin = fleet_cmd()
    env_base = installed_env()
    print(f"# ownership classification cost, {args.runs} runs in-process / {args.cli_runs} cold CLI runs, "
          f"{os.cpu_count()} CPUs; half the rows stale (their chains read)")
    print(f"{'registered':>10}  {'what':<48} {'median ms':>10} {'p90 ms':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        with bench_home("fleet-bench-ownership-", size) as (home, sleepers):
            fleet = Fleet.open(home)
            for i, proc in enumerate(sleepers):
                fleet.register(pid=proc.pid, name=f"worker-{i}", workstream=f"ws-{i % 7}")
            _age_half(home, [p.pid for p in sleepers])
            rows = _in_process(fleet, args.runs)
            fleet.close()
            env = {**env_base, "FLEET_WATCH_HOME": str(home)}
            rows.append(("`fleet reconcile --json` (cold process)",
                         time_cli([*fleet_bin, "reconcile", "--json"], env, args.cli_runs)))
            rows.append(("`fleet status --json` (cold process)",
                         time_cli([*fleet_bin, "status", "--json"], env, args.cli_runs)))
            for label, (median, p90) in rows:
                print(f"{size:>10}  {label:<48} {median:>10.1f} {p90:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
