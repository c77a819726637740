"""``checks.gpu.reclaimable`` on a GPU denial: resident models whose unloading would give the ledger memory back.

Asked only on the denial path (the common guard never imports this module). Only registered, discovered, live
model servers count: the ledger holds their claims, and ``fleet unload`` lowers exactly those claims, so only their
models can turn a denial into an allow. No process-table scan: the registry says where they listen; one parallel
round asks them, bounded by ``server_api_timeout_s``. Without such a server no HTTP module is imported (they cost
~45 ms, and a denied working set is a common answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fleet_watch.probes.processes import death_reason

if TYPE_CHECKING:
    from fleet_watch.core import servers as core
    from fleet_watch.models import ProcessRecord
    from fleet_watch.service import servers as inv
    from fleet_watch.service.fleet import Fleet


def freed_mb(model: core.Model, resident_count: int, claim_mb: int) -> int | None:
    """What unloading ``model`` gives back: the server's own figure, else (one model resident) the row's claim."""
    if model.vram_mb is not None:
        return model.vram_mb
    return claim_mb if resident_count == 1 and claim_mb > 0 else None


def _target(rec: ProcessRecord) -> inv.Target | None:
    from fleet_watch.core import servers as core

    cmd = rec.start_cmd or ""
    api = core.api_for(cmd)
    if api is None or not rec.ports:
        return None
    from fleet_watch.service import servers as inv  # the HTTP probe: only for a model server

    argv = tuple(cmd.split())
    endpoints, why = core.candidate_endpoints(api, argv, {p: {"0.0.0.0"} for p in rec.ports}, set())
    return inv.Target(pid=rec.pid, start_time=rec.start_time, api=api, name=rec.name, workstream=rec.workstream,
                      argv=argv, endpoints=endpoints, error=why)


def reclaimable(fleet: Fleet, gpu_check: Mapping[str, Any]) -> list[dict[str, Any]]:
    records = [r for r in fleet.records()
               if r.source == "discover" and r.gpu_mb > 0 and death_reason(r.pid, r.start_time) is None]
    pairs = [(rec, t) for rec in records if (t := _target(rec)) is not None and t.endpoints]
    if not pairs:
        return []
    from fleet_watch.core import servers as core
    from fleet_watch.service import servers as inv

    servers = inv.ask([t for _, t in pairs], fleet.settings)
    candidates: list[core.Candidate] = []
    for (rec, _), server in zip(pairs, servers, strict=True):
        if not server.reading.reachable:
            continue
        unloadable = core.unload_method(server)[0] is not None
        for m in server.models:
            mb = freed_mb(m, len(server.models), rec.gpu_mb)
            candidates.append(core.Candidate(model=core.Model(
                name=m.name, api=m.api, pid=m.pid, port=m.port, vram_mb=mb, size_mb=m.size_mb,
                context_tokens=m.context_tokens, expires_at=m.expires_at, busy=m.busy), unloadable=unloadable))
    return [core.reclaim_view(m) for m in core.pick_reclaimable(candidates, core.shortfall_mb(gpu_check))]
