"""What the model servers on this machine hold, asked of their own APIs (``fleet models``, discovery's Ollama figure,
health's idle models, guard's reclaimable list).

The servers are found the way discovery finds workloads (one process-table scan, the same patterns, the OS listener
table for their ports), then asked in one parallel round over loopback with a short deadline
(``probes.servers``); ``core.server_apis`` reads what they said. A hung, broken or key-protected server costs at most
the deadline and gets an ``error``; it never costs the listing.

Config keys read here (validated, a wrong type is a ``ConfigError`` naming the key): ``server_api_keys`` (``{"<port>":
"<key>"}``: sent as ``Authorization: Bearer`` to that port only, never printed, logged or stored) and
``server_api_timeout_s`` (default 0.8 s per round).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fleet_watch.config import Settings
from fleet_watch.core import discovery as dcore
from fleet_watch.core import server_apis
from fleet_watch.core import servers as core
from fleet_watch.probes import servers as http
from fleet_watch.probes.nvml import GpuProbe
from fleet_watch.probes.scan import Listener, ProcInfo


# -- config ---------------------------------------------------------------------------------------------------------
def api_keys(settings: Settings) -> dict[int, str]:
    """``server_api_keys`` (validated in ``config``): port -> key, never printed."""
    return dict(settings.server_api_keys)


def api_timeout_s(settings: Settings) -> float:
    return settings.server_api_timeout_s


# -- finding the servers --------------------------------------------------------------------------------------------
class Target(NamedTuple):
    """A server process and where to ask it."""

    pid: int
    start_time: float | None
    api: str
    name: str
    workstream: str
    argv: tuple[str, ...]
    endpoints: tuple[core.Endpoint, ...]
    error: str | None = None  # why it is not asked at all


def targets_of(workloads: Iterable[dcore.Workload], procs: Iterable[ProcInfo], listeners: Iterable[Listener],
               *, apis: frozenset[str] | None = None) -> list[Target]:
    """The model servers among discovery's workloads (``apis``: only these), with their own listening ports."""
    argv = {p.pid: p.argv for p in procs}
    own: dict[int, dict[int, set[str]]] = {}
    holders: dict[int, set[int | None]] = {}
    for lst in listeners:
        holders.setdefault(lst.port, set()).add(lst.pid)
        if lst.pid is not None:
            own.setdefault(lst.pid, {}).setdefault(lst.port, set()).add(lst.address)
    out: list[Target] = []
    for w in workloads:
        api = core.api_for(w.cmdline)
        if api is None or (apis is not None and api not in apis):
            continue
        args = argv.get(w.pid) or tuple(w.cmdline.split())
        mine = own.get(w.pid, {})
        # Only a server that listens nowhere yet needs to know which ports other processes hold.
        others = set() if mine else {port for port, pids in holders.items()
                                     if any(p is not None and p != w.pid for p in pids)}
        endpoints, why = core.candidate_endpoints(api, args, mine, others)
        out.append(Target(pid=w.pid, start_time=w.start_time, api=api, name=w.name, workstream=w.pattern.workstream,
                          argv=tuple(args), endpoints=endpoints, error=why))
    return out


def scan_targets(settings: Settings, *, apis: frozenset[str] | None = None
                 ) -> tuple[list[Target], list[dcore.Workload], list[ProcInfo]]:
    """One process-table scan (no prior ``discover`` needed): the model servers running now."""
    from fleet_watch.probes.scan import ProcessScanner

    scanner = ProcessScanner()
    patterns = dcore.compile_patterns(settings.patterns)
    procs = scanner.processes()
    candidates = [p.pid for p in procs if dcore.match_pattern(p, patterns) is not None]
    listeners, _complete = scanner.listeners(candidates)
    ports_by_pid: dict[int, set[int]] = {}
    for lst in listeners:
        if lst.pid is not None:
            ports_by_pid.setdefault(lst.pid, set()).add(lst.port)
    workloads = dcore.find_workloads(procs, patterns, ports_by_pid, exclude_pids={os.getpid()})
    return targets_of(workloads, procs, listeners, apis=apis), workloads, procs


# -- asking them ----------------------------------------------------------------------------------------------------
def ask(targets: Sequence[Target], settings: Settings, *, primary_only: bool = False,
        timeout_s: float | None = None) -> list[core.Server]:
    """One parallel round over every target's candidate endpoints; a server per target, in order."""
    keys = api_keys(settings)
    timeout = api_timeout_s(settings) if timeout_s is None else timeout_s
    requests: list[http.Request] = []
    slots: list[list[tuple[core.Endpoint, dict[str, int]]]] = []
    for t in targets:
        per_target: list[tuple[core.Endpoint, dict[str, int]]] = []
        paths = core.paths_for(t.api, core.sleep_mode(t.argv))
        if primary_only:
            paths = paths[:1]
        for ep in t.endpoints:
            index: dict[str, int] = {}
            for path in paths:
                index[path] = len(requests)
                requests.append(http.Request(ep.host, ep.port, path, api_key=keys.get(ep.port)))
            per_target.append((ep, index))
        slots.append(per_target)
    answers = http.fetch_all(requests, timeout)
    out: list[core.Server] = []
    for t, per_target in zip(targets, slots, strict=True):
        chosen: tuple[core.Endpoint | None, core.Reading] = (None, core.Reading(reachable=False, error=t.error))
        for n, (ep, index) in enumerate(per_target):
            reading = server_apis.read(t.api, {p: answers[i] for p, i in index.items()}, timeout_s=timeout,
                                       key_sent=ep.port in keys)
            if reading.reachable:
                chosen = (ep, reading)
                break
            if n == 0:
                chosen = (ep, reading)
        out.append(_server(t, *chosen))
    return out


def _server(t: Target, endpoint: core.Endpoint | None, reading: core.Reading) -> core.Server:
    port = None if endpoint is None else endpoint.port
    models = tuple(core.Model(name=str(m["name"]), api=t.api, pid=t.pid, port=port,
                              vram_mb=_int(m.get("vram_mb")), size_mb=_int(m.get("size_mb")),
                              context_tokens=_int(m.get("context_tokens")),
                              expires_at=_str(m.get("expires_at")), busy=_bool(m.get("busy")))
                   for m in reading.models)
    return core.Server(pid=t.pid, start_time=t.start_time, api=t.api, name=t.name, workstream=t.workstream,
                       argv=t.argv, endpoint=endpoint, reading=reading, models=models)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def retarget(server: core.Server) -> Target:
    """The target that asks this server again, on the endpoint that answered."""
    endpoints = () if server.endpoint is None else (server.endpoint,)
    return Target(pid=server.pid, start_time=server.start_time, api=server.api, name=server.name,
                  workstream=server.workstream, argv=server.argv, endpoints=endpoints,
                  error=None if endpoints else server.reading.error)


# -- the listing ----------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Inventory:
    servers: list[core.Server] = field(default_factory=list)

    @property
    def models(self) -> list[core.Model]:
        return [m for s in self.servers for m in s.models]

    def to_dict(self) -> dict[str, Any]:
        return {"servers": [s.to_dict() for s in self.servers], "models": [m.to_dict() for m in self.models]}


def inventory(settings: Settings, *, gpu: GpuProbe | None = None) -> Inventory:
    """``fleet models``: every model server running here and its resident models."""
    targets, workloads, procs = scan_targets(settings)
    servers = ask(targets, settings)
    servers = with_nvml(servers, workloads, procs, gpu)
    servers.sort(key=lambda s: (s.port is None, s.port or 0, s.pid))
    return Inventory(servers)


def with_nvml(servers: list[core.Server], workloads: Sequence[dcore.Workload], procs: Sequence[ProcInfo],
              gpu: GpuProbe | None = None) -> list[core.Server]:
    """A single-model server that gives no memory figure gets NVML's (its processes' GPU memory), where there is a
    driver. NVML cannot split one process's memory between several models, so multi-model servers keep ``None``."""
    needy = [s for s in servers if len(s.models) == 1 and s.models[0].vram_mb is None]
    if not needy:
        return servers
    probe: GpuProbe
    if gpu is None:
        from fleet_watch.probes.nvml import NvmlProbe, driver_may_be_present

        if not driver_may_be_present():
            return servers
        probe = NvmlProbe()
    else:
        probe = gpu
    if probe.devices() is None:
        return servers
    used: dict[int, dict[str, int]] = {}
    for gp in probe.processes():
        if gp.used_mb is not None:
            used.setdefault(gp.pid, {})[str(gp.device)] = gp.used_mb
    by_workload = dcore.attribute_gpu(workloads, used, {p.pid: p.ppid for p in procs})
    out: list[core.Server] = []
    for s in servers:
        mb = sum(by_workload.get(s.pid, {}).values()) if s in needy and s.pid in by_workload else None
        if mb is None:
            out.append(s)
            continue
        model = s.models[0]
        out.append(s._replace(models=(model._replace(vram_mb=mb,
                                                    size_mb=model.size_mb if model.size_mb is not None else mb),)))
    return out


# -- for discovery and health ---------------------------------------------------------------------------------------
def ollama_reports(settings: Settings, workloads: Sequence[dcore.Workload], procs: Sequence[ProcInfo],
                   listeners: Sequence[Listener]) -> dict[int, core.Server]:
    """Discovery's per-cycle question, bounded: only Ollama workloads, only ``/api/ps``, one parallel round."""
    targets = targets_of(workloads, procs, listeners, apis=frozenset({"ollama"}))
    targets = [t for t in targets if t.endpoints]
    if not targets:
        return {}
    return {s.pid: s for s in ask(targets, settings, primary_only=True)}


def resident_vram_mb(server: core.Server | None) -> int | None:
    """An Ollama server's GPU claim: the sum of its loaded models' ``size_vram`` (None when it did not answer)."""
    if server is None or not server.reading.reachable:
        return None
    return sum(m.vram_mb or 0 for m in server.models)


def idle_model_entries(servers: Iterable[core.Server]) -> list[dict[str, Any]]:
    """Health's reclaimable memory: resident models not serving a request, on servers that can give them back."""
    out: list[dict[str, Any]] = []
    for s in servers:
        if core.unload_method(s)[0] is None:
            continue
        for m in s.models:
            if m.busy is True or not m.vram_mb:
                continue
            out.append({
                "kind": "model", "pid": m.pid, "name": f"{m.name} ({s.name} model)", "model": m.name, "api": m.api,
                "port": m.port, "command": core.unload_command(m.name, m.port), "cpu_pct": None, "rss_mb": 0,
                "gpu_mb": m.vram_mb, "reclaimable_mb": m.vram_mb, "expires_at": m.expires_at, "started": None,
                "workload": False,
            })
    return out


def servers_of(reports: Mapping[int, core.Server]) -> list[core.Server]:
    return sorted(reports.values(), key=lambda s: s.pid)
