"""The referee: pure decisions over claims that the service has already fetched and checked for liveness.

``guard`` and ``check`` both call these functions with the same inputs, so they cannot disagree. Each
function returns the README's check object (``allowed``, ``reason``, ...) as a plain dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from fleet_watch.models import Claim, GpuBudget, ProcessRecord

SUGGESTION_COUNT = 5
_SCAN_WIDTH = 200  # ports tried after the preferred list, starting near the requested one


def holder_view(record: ProcessRecord, *, port: int | None = None, repo_dir: str | None = None) -> dict[str, Any]:
    """The holder object of the JSON contract, with the claim that collided named first."""
    return {
        "kind": "process",
        "pid": record.pid,
        "start_time": record.start_time,
        "name": record.name,
        "workstream": record.workstream,
        "session_id": record.session_id,
        "priority": record.priority,
        "port": port if port is not None else (record.ports[0] if record.ports else None),
        "repo_dir": repo_dir if repo_dir is not None else (record.repos[0] if record.repos else None),
        "gpu_mb": record.gpu_mb,
    }


def os_holder_view(port: int, listener: dict[str, Any] | None) -> dict[str, Any]:
    """The holder object for a listener the registry does not know (what the OS could tell about it)."""
    listener = listener or {}
    return {
        "kind": "unregistered",
        "pid": listener.get("pid"),
        "start_time": listener.get("start_time"),
        "name": listener.get("name"),
        "workstream": None,
        "session_id": None,
        "priority": None,
        "port": port,
        "repo_dir": None,
        "gpu_mb": None,
        "uid": listener.get("uid"),
    }


def check_port(
    port: int,
    *,
    registered: ProcessRecord | None,
    os_in_use: bool | None,
    os_listener: dict[str, Any] | None,
    suggested_ports: list[int],
) -> dict[str, Any]:
    """A port is free only when no live registered process claims it *and* nothing listens on it."""
    if registered is not None:
        return {
            "allowed": False,
            "reason": f"port {port} claimed by PID {registered.pid} ({registered.name})",
            "holder": holder_view(registered, port=port),
            "suggested_ports": suggested_ports,
        }
    if os_in_use:
        listener = os_listener or {}
        if listener.get("pid") is not None:
            who = f"PID {listener['pid']} ({listener.get('name') or 'unknown'})"
        elif listener.get("uid") is not None:
            who = f"a process of uid {listener['uid']}"
        else:
            who = "another process"
        return {
            "allowed": False,
            "reason": f"port {port} in use by {who}, not registered with Fleet Watch",
            "holder": os_holder_view(port, os_listener),
            "suggested_ports": suggested_ports,
        }
    return {"allowed": True, "reason": "port available", "holder": None, "suggested_ports": suggested_ports}


def check_repo(
    repo_dir: str, *, holders: Sequence[tuple[Claim, ProcessRecord]], session_id: str | None
) -> dict[str, Any]:
    """Deny when a live process of another session locks this path, a parent of it, or a path inside it."""
    blocking = [(c, r) for c, r in holders if session_id is None or r.session_id != session_id]
    if blocking:
        claim, record = min(blocking, key=lambda cr: len(cr[0].key))
        via = "" if claim.key == repo_dir else f" (lock on {claim.key})"
        return {
            "allowed": False,
            "reason": f"repo {repo_dir} locked by PID {record.pid} ({record.name}){via}",
            "holder": holder_view(record, repo_dir=claim.key),
        }
    if holders:
        return {"allowed": True, "reason": "repo available (owned by current session)", "holder": None}
    return {"allowed": True, "reason": "repo available", "holder": None}


def check_gpu(requested_mb: int, budget: GpuBudget) -> dict[str, Any]:
    """The ledger: the request must fit in total - reserve - (sum of live claims)."""
    available = budget.available_mb
    base = {"requested_mb": requested_mb, "available_mb": max(0, available), "suggested_max_mb": max(0, available)}
    if requested_mb <= 0:
        return {"allowed": True, "reason": "no GPU claim", "detail": None, **base}
    if requested_mb <= available:
        return {"allowed": True, "reason": f"{requested_mb}MB fits in {available}MB available", "detail": None, **base}
    reason = (f"GPU budget exceeded: requesting {requested_mb}MB but only {max(0, available)}MB available "
              f"({budget.allocated_mb}MB allocated of {budget.allocatable_mb}MB allocatable)")
    return {"allowed": False, "reason": reason, "detail": reason, **base}


def implied_claim_mb(estimate: dict[str, Any]) -> int:
    """Without ``--gpu``, a model guard asks the ledger for the model's whole working set."""
    return int((estimate.get("working_set") or {}).get("total_mb") or 0)


def with_working_set(ledger: dict[str, Any], estimate: dict[str, Any]) -> dict[str, Any]:
    """The GPU check with the model's working set: a working set that does not fit the machine denies, whatever the
    ledger says (``reason`` becomes ``working_set_exceeds_physical_ram``); an unknown model (``fits`` None) does not.
    """
    ws = {**estimate["working_set"], "requested_mb": ledger["requested_mb"]}  # the claim the ledger was asked for
    out = {**ledger, "working_set": ws}
    if estimate["fits"] is False:
        detail = str(estimate["detail"])
        if not ledger["allowed"]:
            detail += f"; also {ledger['reason']}"
        out.update(allowed=False, reason=estimate["reason"], detail=detail)
    requested, total = ledger["requested_mb"], ws.get("total_mb") or 0
    if out["allowed"] and 0 < requested < total:
        out["warning"] = (f"the {requested}MB claim is below the model's estimated working set ({total}MB): "
                         f"claim {total}MB so that the ledger reflects what it will use")
    return out


def candidate_ports(preferred: Iterable[int], requested: int | None, occupied: set[int]) -> Iterator[int]:
    """Ports worth offering, best first: the preferred list, then a scan starting near the request."""
    seen: set[int] = set()
    start = 8000 if requested is None else max(1024, requested - 5)
    scan = range(start, min(65536, start + _SCAN_WIDTH))
    for port in (*preferred, *scan):
        if port == requested or port in occupied or port in seen:
            continue
        seen.add(port)
        yield port
