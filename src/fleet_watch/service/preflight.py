"""``fleet guard`` / ``fleet check``: the pre-flight verdict over ports, repos, the GPU ledger and, when a model or
framework is named, the model's memory working set.

Read-only: one ledger read (every view counts live holders only), never the write lock. The decisions are
``service.fleet.decide_claims``, the same that ``register`` makes.
The estimator (and with it any memory detection) is imported only when ``--model`` or ``--framework`` is given, so
the common port/repo guard stays on the standard library.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from fleet_watch.core import guard, inputs
from fleet_watch.errors import UsageError
from fleet_watch.models import GpuBudget
from fleet_watch.probes import ports as port_probe
from fleet_watch.service.fleet import ClaimRequest, Fleet, decide_claims, resolve_repo


class GuardRequest(NamedTuple):
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


class GuardResult(NamedTuple):
    allowed: bool
    request: dict[str, Any]
    checks: dict[str, dict[str, Any]]
    state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "request": self.request, "checks": self.checks, "state": self.state}


def validate(fleet: Fleet, req: GuardRequest) -> tuple[str | None, str | None]:
    """Check the request's values; return its resolved repo and device key."""
    inputs.port(req.port)
    inputs.non_negative(req.gpu_mb, "GPU MB")
    if req.session_id is not None:
        inputs.text("session id", req.session_id)
    if not req.wants_estimate and (req.ctx is not None or req.kv_dtype is not None or req.ram_mb is not None
                                   or req.flash_attn is not None):
        raise UsageError("--ctx, --kv-dtype, --ram-mb and --flash-attn describe a model's working set: give --model "
                         "(or --framework) too")
    repo_dir = resolve_repo(req.repo) if req.repo is not None else None
    return repo_dir, fleet.device_key(req.gpu_device)


def evaluate(fleet: Fleet, req: GuardRequest) -> GuardResult:
    """Gather (one ledger read, the OS port table, the working set), decide (``decide_claims``), render."""
    repo_dir, device = validate(fleet, req)
    ledger = fleet.ledger()
    pool, device_budget = fleet.budgets(ledger, device)

    # The working set first, from the ledger as `fleet estimate` sees it: --gpu must not change it.
    estimate = _working_set(fleet, req, (device_budget or pool).allocated_mb) if req.wants_estimate else None
    # The claim the ledger is asked for: --gpu, else the working set's total (for this machine; a machine planned
    # with --ram-mb holds nothing here).
    requested: int | None = req.gpu_mb
    if requested is None and estimate is not None:
        requested = 0 if req.ram_mb is not None else guard.implied_claim_mb(estimate)

    listeners: dict[int, dict[str, Any] | None] = {}
    if req.port is not None and ledger.port_claim(req.port) is None and port_probe.port_in_use(req.port):
        listeners[req.port] = port_probe.find_listener(req.port) or {}
    occupied = ledger.occupied_ports()
    claim = ClaimRequest(ports=(req.port,) if req.port is not None else (),
                         repos=(repo_dir,) if repo_dir is not None else (), gpu_mb=requested or 0, device=device,
                         session_id=req.session_id, takes_over_reservations=True)  # would a register pass?
    decided = dict(decide_claims(fleet, ledger, claim, os_listeners=listeners,
                                 suggestions=lambda p: fleet.free_ports(p, set(occupied))))
    checks = render_checks(decided, req, requested, pool, device, device_budget, estimate, fleet, occupied)
    state = {
        "process_count": len(ledger.live_holders()),
        "occupied_ports": sorted(occupied),
        "safe_ports": fleet.free_ports(None, set(occupied)),
        "locked_repos": sorted(ledger.locked_repos()),
        "gpu_budget": pool.to_dict(),
        "external_resources": ledger.external_resources,
    }
    request = {"port": req.port, "repo_dir": repo_dir, "gpu_mb": req.gpu_mb, "framework": req.framework,
               "model": req.model}
    return GuardResult(allowed=all(c["allowed"] for c in checks.values()), request=request, checks=checks,
                       state=state)


def render_checks(decided: dict[str, dict[str, Any]], req: GuardRequest, requested: int | None, pool: GpuBudget,
                  device: str | None, device_budget: GpuBudget | None, estimate: dict[str, Any] | None,
                  fleet: Fleet, occupied: dict[int, int | None]) -> dict[str, dict[str, Any]]:
    """The contract's ``checks``: the decisions, with the suggestions an allowed port also carries and the working
    set folded into the GPU check."""
    checks: dict[str, dict[str, Any]] = {}
    if "port" in decided:
        port_check = decided["port"]
        if port_check["allowed"]:
            port_check["suggested_ports"] = fleet.free_ports(req.port, set(occupied))
        checks["port"] = port_check
    if "repo" in decided:
        checks["repo"] = decided["repo"]
    if requested is not None:
        ledger_check = decided.get("gpu") or guard.check_gpu(requested, pool, device=device,
                                                              device_budget=device_budget)
        checks["gpu"] = guard.with_working_set(ledger_check, estimate) if estimate is not None else ledger_check
        if not checks["gpu"]["allowed"]:  # the denial path only: asks the registered model servers over HTTP
            from fleet_watch.service.reclaim import reclaimable

            checks["gpu"]["reclaimable"] = reclaimable(fleet, checks["gpu"])
    return checks


def _working_set(fleet: Fleet, req: GuardRequest, allocated_mb: int) -> dict[str, Any]:
    from fleet_watch.service.estimate import guard_working_set

    est = guard_working_set(fleet.settings, framework=req.framework, model=req.model,
                            ctx=req.ctx, kv_dtype=req.kv_dtype, ram_mb=req.ram_mb, allocated_mb=allocated_mb,
                            live_allocated=lambda: allocated_mb, flash_attn=req.flash_attn)
    assert est is not None  # wants_estimate: a framework or a model was given
    return est
