"""``fleet models`` (what the model servers hold) and ``fleet unload`` (give one back)."""

from __future__ import annotations

import time
from typing import Any

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.output import emit_json


def _mb(value: Any) -> str:
    return "-" if value is None else str(value)


def _expires(value: str | None, now: float) -> str:
    from fleet_watch.core.servers import expires_in_s

    left = expires_in_s(value, now)
    if left is None:
        return "-" if value is None else value[:25]
    if left > 10 * 365 * 86400:
        return "never"
    if left <= 0:
        return "now"
    minutes, seconds = divmod(int(left), 60)
    hours, minutes = divmod(minutes, 60)
    return f"in {hours}h{minutes:02d}m" if hours else f"in {minutes}m{seconds:02d}s"


def render(doc: dict[str, Any], now: float) -> list[str]:
    servers, models = doc["servers"], doc["models"]
    if not servers:
        return ["No model servers running."]
    lines = [f"Model servers ({len(servers)}):",
             f"  {'PORT':>5}  {'PID':>7}  {'API':<9}  {'VERSION':<12}  STATUS"]
    for s in servers:
        status = "ok" if s["reachable"] else s["error"]
        lines.append(f"  {_mb(s['port']):>5}  {s['pid']:>7}  {s['api']:<9}  {(s['version'] or '-')[:12]:<12}  {status}")
    if not models:
        lines.append("Resident models: none")
        return lines
    lines.append(f"Resident models ({len(models)}):")
    lines.append(f"  {'NAME':<32}  {'API':<9}  {'PORT':>5}  {'VRAM MB':>8}  {'SIZE MB':>8}  {'CONTEXT':>7}  "
                 f"{'BUSY':<4}  EXPIRES")
    for m in models:
        busy = {True: "yes", False: "no", None: "-"}[m["busy"]]
        lines.append(f"  {m['name'][:32]:<32}  {m['api']:<9}  {_mb(m['port']):>5}  {_mb(m['vram_mb']):>8}  "
                     f"{_mb(m['size_mb']):>8}  {_mb(m['context_tokens']):>7}  {busy:<4}  "
                     f"{_expires(m['expires_at'], now)}")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help='Print {"servers": [...], "models": [...]}.')
def models(as_json: bool) -> int:
    """Ask every model server running here (Ollama, llama-server, vLLM, SGLang, LM Studio, OpenAI-compatible) what it
    holds. A server that hangs or answers oddly gets an error, never the listing."""
    from fleet_watch.service.servers import inventory

    fleet = open_fleet()
    try:
        doc = inventory(fleet.settings).to_dict()
    finally:
        fleet.close()
    if as_json:
        emit_json(doc)
    else:
        for line in render(doc, time.time()):
            click.echo(line)
    return 0


@click.command()
@click.argument("name")
@click.option("--port", type=int, help="The server's port, when more than one holds the model.")
@click.option("--json", "as_json", is_flag=True)
def unload(name: str, port: int | None, as_json: bool) -> int:
    """Ask the server that holds model NAME to unload it, confirm it is gone, log UNLOAD.

    Exit 3 when no server holds NAME, 1 when its server cannot unload over its API (stop the process instead)."""
    from fleet_watch.service.unload import unload as do_unload

    fleet = open_fleet()
    try:
        done = do_unload(fleet, name, port)
    finally:
        fleet.close()
    doc = done.to_dict()
    if as_json:
        emit_json(doc)
        return 0
    freed = f": {doc['vram_mb']} MB of GPU memory freed" if doc["vram_mb"] else ""
    click.echo(f"Unloaded {doc['model']} from {done.server.name} on port {doc['port']} (PID {doc['pid']}){freed}")
    if doc["claim_before_mb"] is not None:
        click.echo(f"  GPU claim of PID {doc['pid']}: {doc['claim_before_mb']} -> {doc['claim_after_mb']} MB")
    return 0
