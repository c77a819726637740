"""The tools of ``fleet mcp`` (see ``cli/mcp.py``): each answers the same JSON document as the CLI command of the
same name (``guard --json``, ``claim --json``, ``release --json``, ``status --json``, ``estimate --json``,
``health --json``);
``check`` has no JSON form on the CLI and answers ``{"allowed", "checks"}``, the guard's verdict on the resources
named. An error is a tool error whose text is the CLI's error object (``{"allowed": false, "reason", "error",
"exit_code"}``).

Imported only by ``fleet mcp``: the SDK and pydantic cost a second. Written for the SDK's 2.x API
(``mcp.server.mcpserver.MCPServer``; 1.x called it ``mcp.server.fastmcp.FastMCP``); pyproject pins ``mcp>=2,<3``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, StrictInt

from fleet_watch.errors import FleetError, NotFound, UsageError

if TYPE_CHECKING:
    from fleet_watch.service.fleet import Fleet

T = TypeVar("T")
INSTRUCTIONS = (
    "Fleet Watch keeps the registry of AI processes on this machine and what they hold (ports, GPU memory, "
    "repositories). Call guard before binding a port, starting a model server or writing to a repository; if "
    "allowed is false, do not proceed: the reason names the holder and suggested_ports lists free ports."
)

# The tools' typed inputs (validated by the SDK before a tool runs). Numbers are strict: JSON's `true` is not port 1.
# A repository must be absolute: this server's working directory is not the agent's.
Port = Annotated[StrictInt | None, Field(description="TCP port", ge=1, le=65535)]
Repo = Annotated[str | None, Field(description="Repository directory (absolute path)", pattern="^/")]
GpuMb = Annotated[StrictInt | None, Field(description="GPU memory in MB", ge=0)]
Device = Annotated[StrictInt | None, Field(description="NVIDIA device index (multi-GPU machines)", ge=0)]
Session = Annotated[str | None, Field(description="Your session id (default: the server's environment)")]
Framework = Annotated[str | None, Field(description="llama_cpp, ollama, vllm, sglang, mlx, candle, transformers")]
Model = Annotated[str | None, Field(description="GGUF path, Hugging Face folder or repo id, model name or size")]
Ctx = Annotated[StrictInt | None, Field(description="Context tokens", ge=1)]
KvDtype = Annotated[str | None, Field(description="KV cache type: f16, q8_0, q4_0, fp8, mlx8, mlx4")]
RamMb = Annotated[StrictInt | None, Field(description="Plan for a machine with this much memory (MB)", ge=1)]
Pid = Annotated[StrictInt | None, Field(description="Release every claim of this process", ge=1)]
ClaimPort = Annotated[StrictInt | Literal["auto"] | None, Field(description='TCP port to reserve, or "auto"')]
Ttl = Annotated[StrictInt, Field(description="Seconds the reservation lives unless taken over", ge=1, le=7 * 24 * 3600)]
ReleasePort = Annotated[StrictInt | None, Field(description="Release just this port claim", ge=1, le=65535)]
ModelName = Annotated[str, Field(description="GGUF path, Hugging Face folder or repo id, name or size", min_length=1)]
Quant = Annotated[str | None, Field(description="Quantization (Q4_K_M, AWQ, FP8 ...)")]
Parallel = Annotated[StrictInt, Field(description="Parallel sequences", ge=1, le=1024)]
FlashAttn = Annotated[Literal["on", "off", "auto"] | None,
                     Field(description="llama.cpp flash attention (default: the engine's own)")]
SampleSeconds = Annotated[float, Field(description="CPU and page-out sampling window (s)", ge=0, le=60)]


def _error(command: str, err: FleetError) -> dict[str, Any]:
    from fleet_watch.cli.app import _error_payload

    return _error_payload(err.kind, err.message, int(err.exit_code), command)


def _answer(command: str, work: Callable[[], T]) -> T:
    """Run ``work``; a FleetError becomes the CLI's error object, as a tool error."""
    try:
        return work()
    except FleetError as err:
        raise ToolError(json.dumps(_error(command, err))) from err


def _with_fleet(command: str, work: Callable[[Fleet], T]) -> T:
    """Open the registry, run ``work``, close it (errors as in ``_answer``)."""
    from fleet_watch.cli.context import open_fleet

    def opened() -> T:
        with open_fleet() as fleet:
            return work(fleet)

    return _answer(command, opened)


def build_server() -> MCPServer:
    from fleet_watch.cli.context import current_session
    from fleet_watch.service.preflight import GuardRequest, evaluate

    server: MCPServer = MCPServer("fleet-watch", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    def guard(port: Port = None, repo: Repo = None, gpu_mb: GpuMb = None, gpu_device: Device = None,
              framework: Framework = None, model: Model = None, ctx: Ctx = None, kv_dtype: KvDtype = None,
              ram_mb: RamMb = None, flash_attn: FlashAttn = None, session_id: Session = None) -> dict[str, Any]:
        """Pre-flight verdict (fleet guard --json): may I bind this port, write this repo, claim this GPU memory,
        and does this model fit? allowed=false means do not proceed; checks.*.reason names the holder."""
        def work(fleet: Fleet) -> dict[str, Any]:
            request = GuardRequest(port=port, repo=repo, gpu_mb=gpu_mb, gpu_device=gpu_device, framework=framework,
                                   model=model, ctx=ctx, kv_dtype=kv_dtype, ram_mb=ram_mb, flash_attn=flash_attn,
                                   session_id=current_session(session_id))
            return evaluate(fleet, request).to_dict()

        return _with_fleet("guard", work)

    @server.tool()
    def check(port: Port = None, repo: Repo = None, gpu_mb: GpuMb = None, gpu_device: Device = None,
              session_id: Session = None) -> dict[str, Any]:
        """Is this port / repo / GPU amount available (fleet check)? {"allowed", "checks"} for the ones named."""
        def work(fleet: Fleet) -> dict[str, Any]:
            if port is None and repo is None and gpu_mb is None:
                raise UsageError("specify port, repo or gpu_mb")
            result = evaluate(fleet, GuardRequest(port=port, repo=repo, gpu_mb=gpu_mb, gpu_device=gpu_device,
                                                 session_id=current_session(session_id)))
            return {"allowed": result.allowed, "checks": result.checks}

        return _with_fleet("check", work)

    @server.tool()
    def release(pid: Pid = None, port: ReleasePort = None) -> dict[str, Any]:
        """Release a registered process and all its claims (pid), one port claim (port), or one port of one
        process (both) (fleet release --json)."""
        def work(fleet: Fleet) -> dict[str, Any]:
            if pid is None and port is None:
                raise UsageError("specify --pid or --port")
            if port is not None:
                rec = fleet.release_port(port, pid=pid)
                return {"released": [{"pid": rec.pid, "name": rec.name, "port": port}]}
            assert pid is not None
            rec = fleet.release_pid(pid)
            return {"released": [{"pid": rec.pid, "name": rec.name, "ports": list(rec.ports),
                                  "repos": list(rec.repos), "gpu_mb": rec.gpu_mb}]}

        return _with_fleet("release", work)

    @server.tool()
    def claim(port: ClaimPort = None, repo: Repo = None, gpu_mb: GpuMb = None, gpu_device: Device = None,
              ttl_s: Ttl = 600, session_id: Session = None) -> dict[str, Any]:
        """Reserve a port (a number, or "auto" for a free one that binds), a repo or GPU memory before the process
        that will use it exists, atomically (fleet claim --json). Denied (a tool error) when someone holds it; the
        session's register of the same resource takes the reservation over."""
        from fleet_watch.service import claims

        def work(fleet: Fleet) -> dict[str, Any]:
            res = claims.reserve(fleet, ports=[port] if isinstance(port, int) else [], auto_port=port == "auto",
                                 repos=[repo] if repo else [], gpu_mb=gpu_mb or 0, gpu_device=gpu_device,
                                 ttl_s=ttl_s, session_id=current_session(session_id))
            return claims.reservation_view(res, fleet.clock.now())

        return _with_fleet("claim", work)

    @server.tool()
    def status() -> dict[str, Any]:
        """Registered processes, claims, GPU budget, sessions (fleet status --json, the state.json document)."""
        from fleet_watch.service.status import gather_state

        return _with_fleet("status", gather_state)

    @server.tool()
    def estimate(model: ModelName, quant: Quant = None, ctx: Ctx = None, kv_dtype: KvDtype = None,
                 framework: Framework = None, parallel: Parallel = 1, ram_mb: RamMb = None,
                 flash_attn: FlashAttn = None) -> dict[str, Any]:
        """Will this model fit? Weights, KV cache, activations and overhead (fleet estimate --json). An unknown
        model is a tool error carrying the estimate with the CLI's error keys (exit_code 3)."""
        from fleet_watch.service.estimate import EstimateRequest, settings_without_registry
        from fleet_watch.service.estimate import evaluate as estimate_model

        request = EstimateRequest(model=model, framework=framework, quant=quant, ctx=ctx, kv_dtype=kv_dtype,
                                  parallel=parallel, ram_mb=ram_mb, flash_attn=flash_attn, machines=True)

        def here(fleet: Fleet) -> dict[str, Any]:
            allocated = fleet.budgets(fleet.ledger(), None)[0].allocated_mb  # as `fleet estimate` counts it
            return estimate_model(fleet.settings, request, allocated_mb=allocated, live_allocated=lambda: allocated)

        if not model.strip():
            raise ToolError(json.dumps(_error("estimate", UsageError("--model must not be empty"))))
        if ram_mb is not None:  # another machine: as the CLI, without opening this machine's registry
            result = _answer("estimate", lambda: estimate_model(settings_without_registry(), request))
        else:
            result = _with_fleet("estimate", here)
        if result["working_set"]["source"] == "insufficient_input":
            err = NotFound(result["reason"])
            raise ToolError(json.dumps({**result, "allowed": False, "error": err.kind,
                                        "exit_code": int(err.exit_code)}))
        return result

    @server.tool()
    def health(sample_seconds: SampleSeconds = 1.0) -> dict[str, Any]:
        """Memory pressure, agent sessions, idle workloads and the GPU memory watch (fleet health --json)."""
        from fleet_watch.service.health import gather_health

        return _with_fleet("health", lambda fleet: gather_health(fleet, sample_s=sample_seconds).document)

    return server


