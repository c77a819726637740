"""Benchmark: `fleet claim` and `fleet session ensure` against `fleet register`, as whole cold processes.

Usage:  python bench/claims.py [--runs 25]

Each run is a new process against one registry holding 100 registered processes. `register` registers a fresh
idle child each run (and the bench releases it untimed); `claim` reserves a port in the 21000s with a new
session each run; `session ensure` renews one lease owned by this bench. Medians and p90s in ms. The target: claim
and ensure within 10 % of register. Everything it starts, it kills; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_home, fleet_cmd, installed_env, median_p90


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()

    from fleet_watch.service.fleet import Fleet

    fleet = fleet_cmd()
    with bench_home("fleet-bench-claims-", 100) as (home, procs):
        env = {**installed_env(), "FLEET_WATCH_HOME": str(home)}
        with Fleet.open(home) as f:
            for i, proc in enumerate(list(procs)):
                f.register(pid=proc.pid, name=f"worker-{i}", workstream="ws", ports=[20000 + i], gpu_mb=64)
        subprocess.run([*fleet, "session", "ensure", "--session-id", "bench"], env=env, check=True,
                       capture_output=True)
        times: dict[str, list[float]] = {"register": [], "claim": [], "session ensure": []}
        for i in range(args.runs + 1):  # the first round warms bytecode and the page cache, untimed
            kid = subprocess.Popen(["sleep", "900"])
            procs.append(kid)  # killed with the others at the end
            samples = {
                "register": _timed([*fleet, "register", "--pid", str(kid.pid), "--name", f"k{i}", "--workstream",
                                    "bench", "--port", str(22000 + i)], env),
                "claim": _timed([*fleet, "claim", "--port", str(21000 + i), "--session-id", f"s{i}"], env),
                "session ensure": _timed([*fleet, "session", "ensure", "--session-id", "bench"], env),
            }
            subprocess.run([*fleet, "release", "--pid", str(kid.pid)], env=env, capture_output=True, check=False)
            if i:
                for name, ms in samples.items():
                    times[name].append(ms)
        reg, _ = median_p90(list(times["register"]))
        print(f"{'command (100 registered)':<28} {'median ms':>10} {'p90 ms':>8} {'vs register':>12}")
        for name, samples_ in times.items():
            median, p90 = median_p90(samples_)
            print(f"{name:<28} {median:>10.1f} {p90:>8.1f} {100 * (median / reg - 1):>+11.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
