"""Benchmark: `fleet claim` and `fleet session ensure` against `fleet register`, as whole cold processes.

Usage:  python bench/claims.py [--runs 25]

Each run is a new process against one registry holding 100 registered processes. `register` registers a fresh
idle child each run (and the bench releases it untimed); `claim` reserves a port in the 21000s with a new
session each run; `session ensure` renews one lease owned by this bench. Medians and p90s in ms. The target: claim
and ensure within 10 % of register. Everything it starts, it kills; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from guard import _fleet_cmd, _installed_env


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
    return elapsed


def _summary(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()

    from fleet_watch.service.fleet import Fleet

    fleet = _fleet_cmd()
    home = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    home.chmod(0o700)
    (home / "config.json").write_text(json.dumps({"gpu_total_mb": 10_000_000, "gpu_reserve_mb": 16384}))
    env = {**_installed_env(), "FLEET_WATCH_HOME": str(home)}
    base = [subprocess.Popen(["sleep", "900"]) for _ in range(100)]
    kids: list[subprocess.Popen[bytes]] = []
    try:
        with Fleet.open(home) as f:
            for i, proc in enumerate(base):
                f.register(pid=proc.pid, name=f"worker-{i}", workstream="ws", ports=[20000 + i], gpu_mb=64)
        subprocess.run([*fleet, "session", "ensure", "--session-id", "bench"], env=env, check=True,
                       capture_output=True)
        times: dict[str, list[float]] = {"register": [], "claim": [], "session ensure": []}
        for i in range(args.runs + 1):  # the first round warms bytecode and the page cache, untimed
            kid = subprocess.Popen(["sleep", "900"])
            kids.append(kid)
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
        reg, _ = _summary(list(times["register"]))
        print(f"{'command (100 registered)':<28} {'median ms':>10} {'p90 ms':>8} {'vs register':>12}")
        for name, samples_ in times.items():
            median, p90 = _summary(samples_)
            print(f"{name:<28} {median:>10.1f} {p90:>8.1f} {100 * (median / reg - 1):>+11.1f}%")
    finally:
        for proc in (*base, *kids):
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
