"""The real NVML path, for a machine with an NVIDIA driver: run it there and paste the output.

    python bench/nvml_check.py            # optional: --alloc-mb 2048 to hold GPU memory with torch/cupy

It prints what ``NvmlProbe`` reads (devices: used/free/total MB, utilisation, temperature; processes per
device), then runs one discovery cycle on a private home over the real probe and reports each workload's
GPU figure and where it came from, and the health monitor's device view and alerts. With ``--alloc-mb``
it first allocates that much GPU memory in a child process that looks like ``vllm serve`` (needs torch
or cupy), so the NVML per-process figure and the ``nvml`` source can be seen end to end.
Exit 0 when NVML answered, 1 when it did not (no driver), 2 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOLDER = r"""
import sys, time
mb = int(sys.argv[-1])
try:
    import torch
    buf = torch.empty(mb * 1024 * 1024, dtype=torch.uint8, device="cuda")
except ImportError:
    import cupy
    buf = cupy.empty(mb * 1024 * 1024, dtype=cupy.uint8)
print("ready", flush=True)
time.sleep(120)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alloc-mb", type=int, default=0)
    args = parser.parse_args()

    from fleet_watch.probes.nvml import NvmlProbe

    probe = NvmlProbe()
    devices = probe.devices()
    if devices is None:
        print("NVML: not available (no NVIDIA driver or nvidia-ml-py): devices() is None, as designed")
        return 1
    print(f"NVML devices: {len(devices)}")
    for d in devices:
        print(f"  [{d.index}] {d.name}: used {d.used_mb} / total {d.total_mb} MB, free {d.free_mb} MB, "
              f"util {d.utilization_pct}%, temp {d.temperature_c} C")
        if d.used_mb + d.free_mb > d.total_mb + 1:
            print("  CHECK FAILED: used + free exceeds total")
            return 2

    holder = None
    if args.alloc_mb:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "vllm"
            script.write_text(f"#!{sys.executable}\n{HOLDER}")
            script.chmod(0o755)
            holder = subprocess.Popen([str(script), "serve", "bench/nvml-check", "--mb", str(args.alloc_mb)],
                                      stdout=subprocess.PIPE, text=True)
            assert holder.stdout is not None
            print("holder:", holder.stdout.readline().strip(), "PID", holder.pid)
    try:
        time.sleep(1)
        procs = probe.processes()
        print(f"NVML processes: {len(procs)}")
        for p in procs:
            print(f"  device {p.device} PID {p.pid}: {p.used_mb} MB")

        from fleet_watch.service.fleet import Fleet
        from fleet_watch.service.health import gather_health
        from fleet_watch.service.watch import Watcher

        with tempfile.TemporaryDirectory() as home:
            os.environ["FLEET_WATCH_HOME"] = home
            fleet = Fleet.open(Path(home))
            tick = Watcher(fleet).watch_once(raise_errors=True)
            assert tick.result is not None
            print("discovered workloads:")
            for w in tick.result.to_dict()["workloads"]:
                print(f"  PID {w['pid']} {w['name']}: {w['gpu_mb']} MB from {w['gpu_source']} {w['gpu_devices']}")
            report = gather_health(fleet, sample_s=0.5)
            mon = report.document["gpu_memory_monitor"]
            print("health devices:", json.dumps(mon["devices"]))
            print("health alerts:", json.dumps(mon["alerts"]))
            fleet.close()
            if holder is not None:
                mine = [w for w in tick.result.to_dict()["workloads"] if w["pid"] == holder.pid]
                if not mine or mine[0]["gpu_source"] != "nvml" or mine[0]["gpu_mb"] < args.alloc_mb * 0.9:
                    print("CHECK FAILED: the holder was not seen through NVML with its allocation")
                    return 2
                print("CHECK OK: holder seen through NVML:", mine[0]["gpu_mb"], "MB")
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
