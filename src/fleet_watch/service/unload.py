"""``fleet unload``: ask the server that holds a model to give it back, confirm it is gone, log ``UNLOAD``.

Only over the server's own API (Ollama ``keep_alive: 0``, llama-server's router ``/models/unload``, LM Studio's
``/api/v1/models/unload``, vLLM's ``/sleep`` where sleep mode is on); never a signal. A discovered registry row of that
server gives up the memory it freed (the server's figure, or its whole claim when that was its only model) in the same
transaction as the event, so that the guard sees it at once; the next discovery cycle measures it again.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from fleet_watch import clock as clocks
from fleet_watch.core import servers as core
from fleet_watch.core.liveness import same_start
from fleet_watch.errors import CannotUnload, NotFound, Unavailable, UsageError
from fleet_watch.probes import servers as http
from fleet_watch.service import servers as inv
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.reclaim import freed_mb
from fleet_watch.store import audit, registry
from fleet_watch.store import discovery as store

UNLOAD_TIMEOUT_S = 10.0  # Ollama waits for in-flight requests to finish before it unloads
CONFIRM_S = 5.0
_CONFIRM_STEP_S = 0.1


class Unloaded(NamedTuple):
    server: core.Server
    model: core.Model
    method: str
    claim_before_mb: int | None
    claim_after_mb: int | None

    def to_dict(self) -> dict[str, Any]:
        s, m = self.server, self.model
        return {"unloaded": True, "model": m.name, "api": s.api, "pid": s.pid, "port": s.port, "url":
                None if s.endpoint is None else s.endpoint.url, "vram_mb": m.vram_mb, "size_mb": m.size_mb,
                "method": self.method, "confirmed": True, "claim_before_mb": self.claim_before_mb,
                "claim_after_mb": self.claim_after_mb}


def _locate(found: inv.Inventory, name: str, port: int | None) -> tuple[core.Server, core.Model]:
    servers = [s for s in found.servers if port is None or s.port == port]
    if port is not None and not servers:
        raise NotFound(f"no model server listens on port {port}")
    hits = [(s, m) for s in servers for m in s.models if core.name_matches(m.name, name)]
    if not hits:
        where = f"the model server on port {port}" if port is not None else "any model server here"
        message = f"model {name!r} is not resident on {where}"
        silent = [s for s in servers if not s.reading.reachable]
        if silent:
            message += "; not answering: " + "; ".join(
                f"{s.api} PID {s.pid} port {s.port if s.port is not None else '-'} ({s.reading.error})"
                for s in silent[:5])
        raise NotFound(message)
    places = sorted({s.port or 0 for s, _ in hits})
    if len({(s.pid, s.port) for s, _ in hits}) > 1:
        raise UsageError(f"model {name!r} is resident on ports {', '.join(map(str, places))}: choose one with --port")
    return hits[0]


def unload(fleet: Fleet, name: str, port: int | None = None) -> Unloaded:
    if not name.strip():
        raise UsageError("model name must not be empty")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"port must be between 1 and 65535, got {port}")
    settings = fleet.settings
    server, model = _locate(inv.inventory(settings), name, port)
    method, why = core.unload_method(server)
    where = f"{server.api} server on port {server.port} (PID {server.pid})"
    if method is None:
        raise CannotUnload(f"{where} cannot unload {model.name} over its API: {why}. To free its memory, stop the "
                           f"server itself (process level: fleet preempt --port {server.port})")
    assert server.endpoint is not None
    request = core.unload_request(method, model.name)
    key = inv.api_keys(settings).get(server.endpoint.port)
    body = None if request.body is None else json.dumps(request.body).encode()
    answer = http.send(http.Request(server.endpoint.host, server.endpoint.port, request.path, method="POST",
                                    body=body, api_key=key), UNLOAD_TIMEOUT_S)
    refusal = core.unload_refusal(method, answer, model.name, UNLOAD_TIMEOUT_S, key is not None)
    if refusal is not None:
        if answer.failure is not None or (answer.status or 0) >= 500:
            raise Unavailable(f"{where} did not unload {model.name}: {refusal}")
        raise CannotUnload(f"{where} did not unload {model.name}: {refusal}")
    if not _confirm_gone(server, model.name, settings):
        raise Unavailable(f"{where} accepted the unload but still lists {model.name} after {CONFIRM_S:g} s")
    return _record(fleet, server, model, method)


def _confirm_gone(server: core.Server, name: str, settings: Any) -> bool:
    """Ask the server again until the model is no longer resident (bounded: ``CONFIRM_S``)."""
    target = inv.retarget(server)
    deadline = time.monotonic() + CONFIRM_S
    while True:
        again = inv.ask([target], settings)[0]
        if again.reading.reachable and not any(m.name == name for m in again.models):
            return True
        if time.monotonic() + _CONFIRM_STEP_S >= deadline:
            return False
        time.sleep(_CONFIRM_STEP_S)


def _record(fleet: Fleet, server: core.Server, model: core.Model, method: str) -> Unloaded:
    """The UNLOAD event, and the discovered row's GPU claim less what was freed, in one transaction."""
    now_iso = clocks.iso_utc(fleet.clock.now())
    before = after = None
    with fleet.writing() as conn:
        rec = registry.record_by_pid(conn, server.pid)
        if (rec is not None and rec.source == "discover" and same_start(rec.start_time, server.start_time)
                and len(rec.gpu) == 1):
            device, claim = rec.gpu[0]
            freed = freed_mb(model, len(server.models), claim)
            if freed:
                before, after = claim, max(0, claim - freed)
                store.set_gpu(conn, rec.record_id, {device: after}, rec.gpu_basis or "measured", now_iso)
        audit.append(conn, timestamp=now_iso, event_type="UNLOAD", pid=server.pid, workstream=server.workstream,
                     detail={"model": model.name, "api": server.api, "port": server.port, "method": method,
                             "start_time": server.start_time, "vram_mb": model.vram_mb, "size_mb": model.size_mb,
                             "confirmed": True, "claim_before_mb": before, "claim_after_mb": after})
    return Unloaded(server, model, method, before, after)
