"""``fleet health``: memory pressure, agent sessions, idle workloads, GPU memory watch. Exit 8 when critical."""

from __future__ import annotations

from typing import Any

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.options import FiniteFloat
from fleet_watch.cli.output import emit_json
from fleet_watch.errors import ExitCode
from fleet_watch.reports.fields import oneline


def _memory_lines(m: dict[str, Any]) -> list[str]:
    if not m["available"]:
        return ["Memory: UNAVAILABLE (no memory telemetry on this platform)"]
    lines = [f"Memory: {m['pressure_label']} ({m['pressure_pct']}% pressure, {m['source']})",
             f"  Total: {m['total_mb']} MB | Used: {m['used_mb']} MB | Available: {m['available_mb']} MB"]
    if m.get("pageouts_per_sec") is not None:
        lines.append(f"  Page-outs: {m['pageouts_per_sec']}/s | Swap-ins: {m['swapins_per_sec']}/s "
                     f"over {m['interval_seconds']} s")
    return lines


def render(doc: dict[str, Any]) -> list[str]:
    """The text lines; every one passes through ``oneline``: command lines and folders are other processes' text."""
    return [oneline(line) for line in _lines(doc)]


def _lines(doc: dict[str, Any]) -> list[str]:
    lines = _memory_lines(doc["memory"])
    sessions = doc["sessions"]
    if sessions:
        lines.append(f"Sessions: {len(sessions)} ({sum(s['rss_mb'] for s in sessions)} MB)")
        for s in sessions:
            cpu = "-" if s["cpu_pct"] is None else f"{s['cpu_pct']}%"
            flag = " !" if s["attention"] else ""
            lines.append(f"  PID {s['pid']:<8} {s['kind']:<13} {s['classification']:<13} {s['rss_mb']:>6} MB "
                         f"CPU {cpu:>6}  {s['tty'] or '-':<10} {s['cwd'] or '-'}{flag}")
    else:
        lines.append("Sessions: none detected")
    idle = doc["idle"]
    if idle:
        lines.append(f"Idle processes: {len(idle)} ({sum(i['reclaimable_mb'] for i in idle)} MB reclaimable)")
        for i in idle:
            if i.get("kind") == "model":  # a resident model no request is using: its server can unload it
                lines.append(f"  PID {i['pid']:<8} {i['reclaimable_mb']:>6} MB  model {i['model']} "
                             f"(port {i['port']}): {i['command']}")
                continue
            tail = i["command"].rsplit("/", 1)[-1][:50]
            lines.append(f"  PID {i['pid']:<8} {i['reclaimable_mb']:>6} MB  CPU {i['cpu_pct']}%  {tail}")
    else:
        lines.append("Idle processes: none detected")
    mon = doc["gpu_memory_monitor"]
    for d in mon["devices"]:
        util = "-" if d["utilization_pct"] is None else f"{d['utilization_pct']}%"
        temp = "-" if d["temperature_c"] is None else f"{d['temperature_c']} C"
        lines.append(f"GPU {d['index']} {d['name']}: {d['used_mb']}/{d['total_mb']} MB used, {d['free_mb']} MB free, "
                     f"util {util}, temp {temp}")
    lines.append(f"GPU memory watch: {len(mon['gpu_process_footprints'])} workload(s), {len(mon['alerts'])} alert(s)")
    for a in mon["alerts"][:5]:
        detail = ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("type", "severity", "key", "pageout_rate"))
        lines.append(f"  [{a['severity']}] {a['type']}: {detail}")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print memory, sessions, idle and gpu_memory_monitor as JSON.")
@click.option("--sample-seconds", type=FiniteFloat(0, 60), default=1.0, show_default=True,
              help="Window over which CPU use and page-out rates are measured.")
def health(as_json: bool, sample_seconds: float) -> int:
    """Memory pressure, agent sessions, idle workloads and GPU memory. Exit 8 when an alert is critical."""
    from fleet_watch.service.health import gather_health

    with open_fleet() as fleet:
        if not as_json and sample_seconds > 0:
            click.echo(f"Sampling CPU and memory for {sample_seconds:g} s...", err=True)
        report = gather_health(fleet, sample_s=sample_seconds)
    if as_json:
        emit_json(report.document)
    else:
        for line in render(report.document):
            click.echo(line)
    return int(ExitCode.UNHEALTHY) if report.critical else 0
