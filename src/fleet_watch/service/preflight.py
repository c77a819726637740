"""``fleet guard`` / ``fleet check``: the pre-flight verdict over ports, repos, the GPU ledger and, when a model or
framework is named, the model's memory working set.

Read-only: one snapshot of the registry, liveness checked only for the holders that matter, never the write lock.
The estimator (and with it any memory detection) is imported only when ``--model`` or ``--framework`` is given, so
the common port/repo guard stays on the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet_watch.core import guard, paths
from fleet_watch.errors import UsageError
from fleet_watch.models import Claim, GpuBudget, ProcessRecord
from fleet_watch.probes import ports as port_probe
from fleet_watch.store import registry
from fleet_watch.store.connection import snapshot

if TYPE_CHECKING:
    from fleet_watch.service.fleet import Fleet


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardRequest:
    port: int | None = None
    repo: str | None = None
    gpu_mb: int | None = None
    framework: str | None = None
    model: str | None = None
    session_id: str | None = None
    gpu_device: int | None = None
    ctx: int | None = None
    kv_dtype: str | None = None
    ram_mb: int | None = None
    flash_attn: str | None = None

    @property
    def wants_estimate(self) -> bool:
        return bool(self.framework or self.model)


@dataclass(slots=True)
class GuardResult:
    allowed: bool
    request: dict[str, Any]
    checks: dict[str, dict[str, Any]]
    state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "request": self.request, "checks": self.checks, "state": self.state}


def _without(budget: GpuBudget, dead_mb: int) -> GpuBudget:
    return GpuBudget(total_mb=budget.total_mb, reserve_mb=budget.reserve_mb, allocated_mb=budget.allocated_mb - dead_mb)


def evaluate(fleet: Fleet, req: GuardRequest) -> GuardResult:
    from fleet_watch.service.fleet import resolve_repo, validate_port

    validate_port(req.port)
    if req.gpu_mb is not None and req.gpu_mb < 0:
        raise UsageError(f"GPU MB must be >= 0, got {req.gpu_mb}")
    if not req.wants_estimate and (req.ctx is not None or req.kv_dtype is not None or req.ram_mb is not None
                                   or req.flash_attn is not None):
        raise UsageError("--ctx, --kv-dtype, --ram-mb and --flash-attn describe a model's working set: give --model "
                         "(or --framework) too")
    repo_dir = resolve_repo(req.repo) if req.repo is not None else None
    device = fleet.device_key(req.gpu_device)
    conn = fleet.conn
    with snapshot(conn):
        port_claim = registry.port_claim(conn, req.port) if req.port is not None else None
        repo_claims = (registry.repo_claims_overlapping(conn, repo_dir, paths.ancestors(repo_dir))
                       if repo_dir is not None else [])
        gpu_claims = registry.gpu_claims(conn) if req.gpu_mb or req.wants_estimate else []
        allocated = registry.gpu_allocated_mb(conn)
        device_budget = fleet._budget(device) if device is not None else None
        count = registry.process_count(conn)
        occupied = registry.claimed_ports(conn)
        locked = registry.locked_repos(conn)
        holders = {c.holder.record_id: c for c in (*([port_claim] if port_claim else []), *repo_claims)}
        records = {rid: registry.record_by_id(conn, rid) for rid in holders}

    budget = GpuBudget(total_mb=fleet.settings.gpu_total_mb, reserve_mb=fleet.settings.gpu_reserve_mb,
                       allocated_mb=allocated)
    dead: set[int] = set()
    pruned = False

    def live(claim: Claim) -> ProcessRecord | None:
        rid = claim.holder.record_id
        if rid in dead:
            return None
        if fleet.death_reason(claim.holder.pid, claim.holder.start_time) is not None:
            dead.add(rid)
            return None
        return records.get(rid)

    def prune_gpu_holders() -> None:
        """Dead claims free their share. Checked only when it matters: when something would be denied."""
        nonlocal budget, device_budget, pruned
        if pruned:
            return
        pruned = True
        for c in gpu_claims:
            if c.holder.record_id not in dead and fleet.death_reason(c.holder.pid, c.holder.start_time):
                dead.add(c.holder.record_id)
        budget = _without(budget, sum(c.amount_mb for c in gpu_claims if c.holder.record_id in dead))
        if device_budget is not None:
            device_budget = _without(device_budget, sum(
                c.amount_mb for c in gpu_claims if c.holder.record_id in dead and c.key == device))

    checks: dict[str, dict[str, Any]] = {}
    port_holder = live(port_claim) if port_claim is not None else None
    repo_holders = [(c, r) for c in repo_claims if (r := live(c)) is not None]

    def live_allocated() -> int:
        prune_gpu_holders()
        return (device_budget or budget).allocated_mb

    # The working set first, from the registry as `fleet estimate` sees it: --gpu must not change it.
    estimate = _working_set(fleet, req, (device_budget or budget).allocated_mb, live_allocated) \
        if req.wants_estimate else None

    # The claim the ledger is asked for: --gpu, else the working set's total (for this machine; a machine planned
    # with --ram-mb holds nothing here).
    requested: int | None = req.gpu_mb
    if requested is None and estimate is not None:
        requested = 0 if req.ram_mb is not None else guard.implied_claim_mb(estimate)
    if requested and (requested > budget.available_mb
                      or (device_budget is not None and requested > device_budget.available_mb)):
        prune_gpu_holders()

    dead_pids = {c.holder.pid for c in (*([port_claim] if port_claim else []), *repo_claims, *gpu_claims)
                 if c.holder.record_id in dead}
    occupied_live = {p for p, pid in occupied.items() if pid not in dead_pids}

    if req.port is not None:
        in_use = None if port_holder is not None else port_probe.port_in_use(req.port)
        listener = port_probe.find_listener(req.port) if in_use else None
        suggestions = fleet.free_ports(req.port, occupied_live)
        checks["port"] = guard.check_port(req.port, registered=port_holder, os_in_use=in_use,
                                          os_listener=listener, suggested_ports=suggestions)
    if repo_dir is not None:
        checks["repo"] = guard.check_repo(repo_dir, holders=repo_holders, session_id=req.session_id)
    if requested is not None:
        ledger = guard.check_gpu(requested, budget)
        if device is not None and device_budget is not None:
            dev = guard.check_gpu(requested, device_budget)
            if ledger["allowed"] and not dev["allowed"]:
                ledger = {**dev, "reason": f"GPU {device}: {dev['reason']}"}
            ledger["device"] = int(device)
        checks["gpu"] = guard.with_working_set(ledger, estimate) if estimate is not None else ledger

    state = {
        "process_count": count - len(dead),
        "occupied_ports": sorted(occupied_live),
        "safe_ports": fleet.free_ports(None, occupied_live),
        "locked_repos": sorted(k for k, pid in locked.items() if pid not in dead_pids),
        "gpu_budget": budget.to_dict(),
        "external_resources": [],
    }
    request = {"port": req.port, "repo_dir": repo_dir, "gpu_mb": req.gpu_mb, "framework": req.framework,
               "model": req.model}
    allowed = all(c["allowed"] for c in checks.values())
    return GuardResult(allowed=allowed, request=request, checks=checks, state=state)


def _working_set(fleet: Fleet, req: GuardRequest, allocated_mb: int, live_allocated: Callable[[], int]
                 ) -> dict[str, Any]:
    from fleet_watch.service.estimate import guard_working_set

    est = guard_working_set(fleet.settings, framework=req.framework, model=req.model,
                            ctx=req.ctx, kv_dtype=req.kv_dtype, ram_mb=req.ram_mb, allocated_mb=allocated_mb,
                            live_allocated=live_allocated, flash_attn=req.flash_attn)
    assert est is not None  # wants_estimate: a framework or a model was given
    return est
