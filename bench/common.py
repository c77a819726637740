"""What the benchmarks share: `fleet` started as an installed tool runs, and one way to time and summarise.

The benchmarks are scripts (`python bench/guard.py`); each puts this folder on ``sys.path`` to import this module.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path


def fleet_cmd() -> list[str]:
    """This environment's `fleet` console script (else ``python -m fleet_watch``)."""
    exe = shutil.which("fleet", path=str(Path(sys.executable).parent)) or shutil.which("fleet")
    return [exe] if exe else [sys.executable, "-m", "fleet_watch"]


def installed_env() -> dict[str, str]:
    """As an installed tool runs: with bytecode caching (sandboxes often set PYTHONDONTWRITEBYTECODE, which makes
    every run compile every module and adds ~30 ms that no user pays)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_p90(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


def time_call(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and p90 milliseconds of ``fn()`` in this process, after one warm-up call (imports, caches)."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return median_p90(samples)


def time_cli(cmd: list[str], env: dict[str, str], runs: int, *, ok: Collection[int] = (0,)) -> tuple[float, float]:
    """Median and p90 milliseconds of ``cmd`` as a new process each run, after one warm-up run (bytecode written,
    page cache warm). An exit status outside ``ok`` stops the benchmark with the command's output."""
    subprocess.run(cmd, env=env, capture_output=True, check=False)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, check=False)
        samples.append((time.perf_counter() - t0) * 1000)
        if proc.returncode not in ok:
            output = f"{proc.stderr.decode().strip()} {proc.stdout.decode().strip()}"
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {output}")
    return median_p90(samples)


@contextmanager
def bench_home(prefix: str, sleepers: int) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    """A private state folder (its GPU pool so large that no budget denies) and ``sleepers`` idle ``sleep``
    processes to register; at the end, every one of them killed and reaped and the folder removed."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o700)
    (home / "config.json").write_text(json.dumps({"gpu_total_mb": 10_000_000, "gpu_reserve_mb": 16384}))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.extend(subprocess.Popen(["sleep", "900"]) for _ in range(sleepers))
        yield home, procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)
