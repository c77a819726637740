"""The referee: pure decisions over claims that the service has already fetched and checked for liveness.

``guard`` and ``check`` both call these functions with the same inputs, so they cannot disagree. Each
function returns the README's check object (``allowed``, ``reason``, ...) as a plain dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from fleet_watch.core import paths
from fleet_watch.core.external import ExternalLock, blocking_locks
from fleet_watch.models import Claim, GpuBudget, Holder

SUGGESTION_COUNT = 5
_SCAN_WIDTH = 200  # ports tried after the preferred list, starting near the requested one


def holder_view(holder: Holder, claims: Sequence[Claim], *, port: int | None = None,
                repo_dir: str | None = None) -> dict[str, Any]:
    """The holder object of the JSON contract, with the claim that collided named first."""
    ports = [int(c.key) for c in claims if c.kind == "port"]
    repos = [c.key for c in claims if c.kind == "repo"]
    return {
        "kind": holder.kind,
        "pid": holder.pid,
        "start_time": holder.start_time,
        "name": holder.name,
        "workstream": holder.workstream,
        "session_id": holder.session_id,
        "priority": holder.priority,
        "port": port if port is not None else (ports[0] if ports else None),
        "repo_dir": repo_dir if repo_dir is not None else (repos[0] if repos else None),
        "gpu_mb": sum(c.amount_mb for c in claims if c.kind == "gpu"),
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


def listener_label(listener: dict[str, Any] | None) -> str:
    """Who listens, as far as the OS would say: a PID and name, else a uid, else nothing."""
    listener = listener or {}
    if listener.get("pid") is not None:
        return f"PID {listener['pid']} ({listener.get('name') or 'unknown'})"
    if listener.get("uid") is not None:
        return f"a process of uid {listener['uid']}"
    return "another process"


def check_port(
    port: int,
    *,
    registered: Claim | None,
    holder_claims: Sequence[Claim] = (),
    os_in_use: bool | None,
    os_listener: dict[str, Any] | None,
    suggested_ports: list[int],
) -> dict[str, Any]:
    """A port is free only when no live holder claims it *and* nothing else listens on it.

    ``os_in_use`` must already exclude the requester's own listeners (register passes the OS answer only for a
    listener that is neither the process nor one of its descendants).
    """
    if registered is not None:
        h = registered.holder
        return {
            "allowed": False,
            "reason": f"port {port} claimed by {h.describe()}",
            "holder": holder_view(h, holder_claims, port=port),
            "suggested_ports": suggested_ports,
        }
    if os_in_use:
        return {
            "allowed": False,
            "reason": f"port {port} in use by {listener_label(os_listener)}, not registered with Fleet Watch",
            "holder": os_holder_view(port, os_listener),
            "suggested_ports": suggested_ports,
        }
    return {"allowed": True, "reason": "port available", "holder": None, "suggested_ports": suggested_ports}


def check_repo(
    repo_dir: str, *, locks: Sequence[Claim], session_id: str | None,
    claims_of: Callable[[Holder], Sequence[Claim]] = lambda h: (), external: Sequence[ExternalLock] = (),
) -> dict[str, Any]:
    """Deny when a live holder of another session (a registered process, or an external resource's claim) locks
    this path, a parent of it, or a path inside it."""
    blocking = [c for c in locks if session_id is None or c.holder.session_id != session_id]
    if blocking:
        claim = min(blocking, key=lambda c: len(c.key))
        via = "" if claim.key == repo_dir else f" (lock on {claim.key})"
        return {
            "allowed": False,
            "reason": f"repo {repo_dir} locked by {claim.holder.describe()}{via}",
            "holder": holder_view(claim.holder, claims_of(claim.holder), repo_dir=claim.key),
        }
    remote = blocking_locks(external, repo_dir, session_id)
    if remote:
        lock = min(remote, key=lambda lk: len(lk.repo_dir))
        via = "" if lock.repo_dir == repo_dir else f" (lock on {lock.repo_dir})"
        return {
            "allowed": False,
            "reason": f"repo {repo_dir} locked by {lock.holder}{via}",
            "holder": {"kind": "external", "pid": None, "start_time": None, "name": lock.holder,
                       "workstream": None, "session_id": lock.session_id, "priority": None, "port": None,
                       "repo_dir": lock.repo_dir, "gpu_mb": None, "provider": lock.provider,
                       "external_id": lock.external_id, "expires_at": lock.expires_at},
        }
    if locks or any(paths.overlaps(lk.repo_dir, repo_dir) for lk in external):
        return {"allowed": True, "reason": "repo available (owned by current session)", "holder": None}
    return {"allowed": True, "reason": "repo available", "holder": None}


def _terms(budget: GpuBudget, limit: int = 3) -> str:
    """Every term of the arithmetic: total, reserve, and who holds the claimed part (largest first)."""
    text = f"{budget.total_mb}MB total - {budget.reserve_mb}MB reserve - {budget.allocated_mb}MB claimed"
    by_size = sorted(budget.claims, key=lambda c: -c.amount_mb)
    held = [f"{c.holder.describe()} {c.amount_mb}MB" for c in by_size[:limit]]
    if len(by_size) > limit:
        more = by_size[limit:]
        held.append(f"{len(more)} more {sum(c.amount_mb for c in more)}MB")
    return text + (" by " + ", ".join(held) if held else "")


def _check_one(requested_mb: int, budget: GpuBudget, label: str) -> dict[str, Any]:
    available = budget.available_mb
    base = {"requested_mb": requested_mb, "available_mb": max(0, available), "suggested_max_mb": max(0, available)}
    if requested_mb <= 0:
        return {"allowed": True, "reason": "no GPU claim", "detail": None, **base}
    if requested_mb <= available:
        return {"allowed": True, "reason": f"{requested_mb}MB fits in {available}MB available", "detail": None, **base}
    reason = (f"{label}budget exceeded: requesting {requested_mb}MB but only {max(0, available)}MB available "
              f"({_terms(budget)})")
    return {"allowed": False, "reason": reason, "detail": reason, **base}


def check_gpu(requested_mb: int, pool: GpuBudget, *, device: str | None = None,
              device_budget: GpuBudget | None = None) -> dict[str, Any]:
    """The ledger: the request must fit the pool (total - reserve - live firm claims) and, when a device is named,
    that device's own budget too. The tighter of the two answers."""
    verdict = _check_one(requested_mb, pool, "GPU ")
    if device is None or device_budget is None:
        return verdict
    if verdict["allowed"]:
        dev = _check_one(requested_mb, device_budget, f"GPU {device} ")
        if not dev["allowed"] or dev["available_mb"] < verdict["available_mb"]:
            verdict = dev
    return {**verdict, "device": int(device)}


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
