"""The working-set estimate as the guard, ``fleet estimate`` and discovery use it.

``guard_working_set`` and ``estimate`` return the same working-set object for the same inputs. Model resolution
order: GGUF file -> Hugging Face folder -> Hugging Face cache (offline) -> built-in catalog -> bare size (generic
shape, ``grounded: false``) -> ``insufficient_input``. Machine memory is detected only when no override is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from fleet_watch.config import Settings
from fleet_watch.core.estimator import attention, decide, engines, workingset
from fleet_watch.core.estimator.arch import architecture_from_mapping, generic_architecture
from fleet_watch.core.estimator.decide import Resolved
from fleet_watch.core.estimator.mix import weight_bytes
from fleet_watch.core.estimator.naming import match_catalog, parse_bare_size, parse_size, shown
from fleet_watch.core.estimator.quant import Quant, normalize_kv_dtype, parse_quant, quant_from_label
from fleet_watch.errors import FleetError, UsageError
from fleet_watch.reports import estimate as render
from fleet_watch.service.memory_target import Memory, available_mb, given_memory, machine_memory

REASON = decide.REASON
COMMON_MACHINES_GB = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)  # Macs' unified memory and GPU VRAM sizes
MAX_PARAMS_B = 10_000  # 10T: well above any released model (DeepSeek-V3 671B, Kimi K2 1T)
_KV_ALLOWED = {
    "llama_cpp": ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"),
    "vllm": ("f32", "f16", "bf16", "fp8", "fp8_e4m3", "fp8_e5m2"),
    "mlx": ("f16", "bf16", "mlx8", "mlx4"),
    "transformers": ("f32", "f16", "bf16"),
}


@cache
def catalog() -> dict[str, Any]:
    """The built-in model catalog (package data). Read as a plain file where it is one (importlib.resources costs
    ~6 ms of imports on every model guard), through importlib.resources otherwise (a zipped install)."""
    path = Path(__file__).resolve().parent.parent / "data" / "models.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        from importlib import resources

        text = resources.files("fleet_watch").joinpath("data/models.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def _default_quant(framework: str | None, row: Mapping[str, Any] | None) -> Quant:
    if row is not None and row.get("default_quant"):
        return quant_from_label(str(row["default_quant"]))
    if framework == "mlx":
        return quant_from_label("MLX-4bit")
    if framework in ("vllm", "sglang", "transformers"):
        return Quant("BF16", "float", 16)
    return quant_from_label("Q4_K_M")


def resolve_model(model: str, quant_text: str | None, framework: str | None,
                  environ: Mapping[str, str]) -> Resolved | None:
    """The best source for ``model`` (see the module docstring); None when nothing usable is in it."""
    explicit = parse_quant(quant_text) if quant_text else None
    if quant_text and explicit is None:
        raise UsageError(f"unknown quantization {shown(quant_text)} "
                         "(e.g. Q4_K_M, IQ4_XS, Q8_0, 4bit, AWQ, GPTQ, FP8, BF16)")
    from fleet_watch.probes.modelfiles import path_kind, read_model_path

    path = _expand(model)
    looks_like_path = os.sep in model or model.endswith(".gguf") or model.startswith((".", "~"))
    try:
        kind = path_kind(path)
    except OSError as err:  # there, but not to be examined: permission denied, I/O error
        raise UsageError(f"model {shown(model)}: cannot be read ({err.strerror or err})") from err
    if kind is not None:  # a file or folder, also one named without a slash (./my-model in the current folder)
        try:
            found = read_model_path(path, kind)
        except OSError as err:  # listing a folder, or a shard, failed
            raise UsageError(f"model {shown(model)}: cannot be read ({err.strerror or err})") from err
        return _from_file(found, explicit, framework)
    if "/" in model:
        from fleet_watch.probes.modelfiles import read_hf_cache

        cached = read_hf_cache(model, environ, explicit)
        if cached is not None:
            return _from_file(cached, explicit, framework)
    name = Path(model).name if looks_like_path else model
    named = parse_quant(name)
    match = match_catalog(name, catalog())
    if match is not None:
        arch = architecture_from_mapping(match.key, match.row)
        quant = engines.as_loaded(explicit or named or _default_quant(framework, match.row), framework)
        return Resolved(arch, quant, weight_bytes(arch, quant), "catalog", True, str(match.row.get("source")))
    size = parse_bare_size(name) or parse_size(name)
    if size is None:
        return None
    params = size.params_b * (size.experts or 1)
    if params > MAX_PARAMS_B:
        raise UsageError(f"model size {size.label} is implausible (at most {MAX_PARAMS_B}B parameters)")
    arch = generic_architecture(params)
    quant = engines.as_loaded(explicit or named or _default_quant(framework, None), framework)
    return Resolved(arch, quant, weight_bytes(arch, quant), "size_only", False)


def _expand(model: str) -> Path:
    """``model`` as a path, ``~`` expanded; ``~nosuchuser/...`` stays as written (then it is not a file)."""
    try:
        return Path(model).expanduser()
    except RuntimeError:
        return Path(model)


def _from_file(found: Any, explicit: Quant | None, framework: str | None) -> Resolved:
    arch, quant = found.arch, found.quant
    if explicit is not None and explicit.label != quant.label:
        q = engines.as_loaded(explicit, framework)
        return Resolved(arch, q, weight_bytes(arch, q, group_size=found.group_size), found.model_source, True,
                        path=found.path, group_size=found.group_size)
    return Resolved(arch, quant, found.weights_bytes, found.model_source, True, path=found.path,
                    repack_bytes=found.repack_bytes, group_size=found.group_size, weights_exact=found.weights_exact)


def infer_framework(quant: Quant) -> str:
    return {"gguf": "llama_cpp", "mlx": "mlx", "awq": "vllm", "gptq": "vllm", "fp8": "vllm"}.get(
        quant.kind, "transformers")


def check_framework(framework: str, settings: Settings) -> str:
    name = workingset.canonical_framework(framework)
    overrides = _overrides(settings)
    if name not in workingset.FRAMEWORKS and name not in overrides:
        known = ", ".join(workingset.FRAMEWORKS)
        raise UsageError(f"unknown framework {shown(framework)} (known: {known}; or add it to "
                         "gpu_estimator.framework_overhead in config.json)")
    return name


def _overrides(settings: Settings) -> Mapping[str, object]:
    """``gpu_estimator.framework_overhead`` with its keys spelled canonically (``llama.cpp``, ``Candle`` count)."""
    return {workingset.canonical_framework(k): v for k, v in settings.framework_overhead.items()}


def _kv_dtype(kv_dtype: str | None, framework: str, quant: Quant) -> str:
    engine = {"ollama": "llama_cpp", "candle": "llama_cpp", "sglang": "vllm"}.get(framework, framework)
    allowed = _KV_ALLOWED.get(engine, _KV_ALLOWED["llama_cpp"])
    if kv_dtype is None:
        return workingset.default_kv_dtype(framework, quant.label)
    key = normalize_kv_dtype(kv_dtype)
    if engine == "mlx" and key in ("q8_0", "q4_0"):
        key = "mlx8" if key == "q8_0" else "mlx4"
    if key is None or key not in allowed:
        raise UsageError(f"--kv-dtype {shown(kv_dtype)} is not a KV cache type of {framework} "
                         f"(one of: {', '.join(allowed)})")
    return key


class EstimateRequest(NamedTuple):
    """What is asked: a model and how it will run, and where (``ram_mb``: another machine of that size)."""

    model: str | None
    framework: str | None = None
    quant: str | None = None
    ctx: int | None = None
    kv_dtype: str | None = None
    parallel: int = 1
    ram_mb: int | None = None
    flash_attn: str | None = None  # on, off, auto; None: what the engine does by default
    gpu_memory_utilization: float | None = None
    origin: str = "explicit"  # "explicit" (flags) or "command" (a running server's command line)
    machines: bool = False  # also ``fits_on``: the same model and context on machines of common sizes


def evaluate(settings: Settings, request: EstimateRequest, *, allocated_mb: int = 0,
             live_allocated: Callable[[], int] | None = None,
             environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The full estimate (``reports.estimate.estimate``); its ``working_set`` is what the guard puts in
    ``checks.gpu.working_set``. ``allocated_mb``: what the registry says registered workloads hold.
    ``live_allocated``: asked only when the working set does not fit with ``allocated_mb``, for what live holders
    really claim: dead claims can only free memory, and checking every holder's liveness costs a /proc read each.
    ``guard`` and ``estimate`` both answer this way, so they agree."""
    decide.check_request(ctx=request.ctx, parallel=request.parallel, allocated_mb=allocated_mb,
                         gpu_memory_utilization=request.gpu_memory_utilization, kv_dtype=request.kv_dtype,
                         flash_attn=request.flash_attn)
    fw = check_framework(request.framework, settings) if request.framework else None
    model = (request.model or "").strip() or None
    res = resolve_model(model, request.quant, fw, os.environ if environ is None else environ) if model else None
    if res is None:
        if request.quant and not parse_quant(request.quant):
            raise UsageError(f"unknown quantization {shown(request.quant)}")
        return _unknown(settings, request, fw, model, allocated_mb)
    framework = fw or infer_framework(res.quant)
    refused = engines.refusal(res.quant, framework)
    if refused:
        raise UsageError(f"{refused}; name a quantization it reads, or another --framework")
    mem = machine_memory(settings, request.ram_mb, framework)
    opts = _options(settings, request, framework, res, mem)
    ws = decide.working_set(res, opts, mem.device, mem.device_total_mb)
    room = _room(settings, mem, allocated_mb, ws)
    if not decide.fits_in(ws, room.available_mb) and room.allocated_mb > 0 and live_allocated is not None:
        room = _room(settings, mem, live_allocated(), ws)
    verdict = decide.decide(res, opts, room, ws)
    fits_on = _fits_on(settings, res, opts) if request.machines else None
    return render.estimate(res, opts, room, verdict, origin=request.origin, framework_inferred=fw is None,
                           fits_on=fits_on)


def _options(settings: Settings, request: EstimateRequest, framework: str, res: Resolved, mem: Memory
             ) -> decide.Options:
    vram = mem.device_total_mb if mem.device != "cpu" else None  # Ollama sizes num_ctx by GPU memory only
    context = request.ctx or workingset.default_context(framework, res.arch.context, vram)
    kv = _kv_dtype(request.kv_dtype, framework, res.quant)
    return decide.Options(framework=framework, context=context, kv_dtype=kv, parallel=request.parallel,
                          multiplier=workingset.overhead_multiplier(framework, _overrides(settings)),
                          flash_attn=_flash_attn(request, framework, kv),
                          gpu_memory_utilization=request.gpu_memory_utilization)


def _flash_attn(request: EstimateRequest, framework: str, kv_dtype: str) -> str | None:
    """The flash-attention setting llama.cpp runs with: the one asked for, else the engine's default
    (``core.estimator.attention``); None for engines that size attention their own way."""
    if framework not in attention.ENGINES:
        if request.flash_attn is not None:
            raise UsageError(f"--flash-attn sets llama.cpp's attention ({', '.join(attention.ENGINES)}); "
                             f"{framework} sizes its attention its own way")
        return None
    setting = request.flash_attn or attention.engine_default(request.framework)
    refused = attention.refusal(setting, kv_dtype, framework)
    if refused:
        raise UsageError(refused)
    return setting


def _room(settings: Settings, mem: Memory, allocated_mb: int, ws: workingset.WorkingSet) -> decide.Room:
    reserve, allocated, available = available_mb(settings, mem, allocated_mb, engine_reserves=ws.claim_mb is not None)
    return decide.Room(device=mem.device, device_total_mb=mem.device_total_mb, limit_mb=mem.limit_mb,
                       physical_ram_mb=mem.physical_ram_mb, origin=mem.origin, description=mem.describe(),
                       reserve_mb=reserve, allocated_mb=allocated, available_mb=available)


def _fits_on(settings: Settings, res: Resolved, opts: decide.Options) -> list[render.MachineFit]:
    out: list[render.MachineFit] = []
    for gb in COMMON_MACHINES_GB:
        target = given_memory(gb * 1024, opts.framework, planned=True)
        ws = decide.working_set(res, opts, target.device, target.device_total_mb)
        room = _room(settings, target, 0, ws)
        out.append(render.MachineFit(gb, target.device, ws.total_mb, room.available_mb,
                                     decide.fits_in(ws, room.available_mb)))
    return out


def _unknown(settings: Settings, request: EstimateRequest, fw: str | None, model: str | None,
             allocated_mb: int) -> dict[str, Any]:
    mem = machine_memory(settings, request.ram_mb, fw or "llama_cpp")
    reserve, allocated, available = available_mb(settings, mem, allocated_mb)
    room = decide.Room(device=mem.device, device_total_mb=mem.device_total_mb, limit_mb=mem.limit_mb,
                       physical_ram_mb=mem.physical_ram_mb, origin=mem.origin, description=mem.describe(),
                       reserve_mb=reserve, allocated_mb=allocated, available_mb=available)
    what = (f"model {shown(model)} is not a file, a cached repo, a known model or a size" if model
            else "no --model given")
    return render.unknown(what, room, framework=fw,
                          multiplier=workingset.overhead_multiplier(fw or "unknown", _overrides(settings)),
                          ctx=request.ctx, kv_dtype=request.kv_dtype, flash_attn=request.flash_attn)


def settings_without_registry() -> Settings:
    """The configuration alone (``config.json``, written with the defaults on first run): planning for another
    machine (``--ram-mb``) needs nothing from the registry, so a missing or damaged registry.db does not matter."""
    from fleet_watch.config import load_settings, resolve_home
    from fleet_watch.probes.machine import detect_pool_mb

    return load_settings(resolve_home(os.environ), detect_pool_mb)


def guard_working_set(
    settings: Settings, *, framework: str | None, model: str | None, ctx: int | None, kv_dtype: str | None,
    ram_mb: int | None, allocated_mb: int, live_allocated: Callable[[], int] | None = None,
    flash_attn: str | None = None,
) -> dict[str, Any] | None:
    """The guard's GPU working-set check; None when neither ``framework`` nor ``model`` is given. The claim asked
    of the ledger does not change it (``core.guard.with_working_set`` adds it as ``requested_mb``)."""
    if not framework and not model:
        return None
    request = EstimateRequest(framework=framework, model=model, ctx=ctx, kv_dtype=kv_dtype, ram_mb=ram_mb,
                              flash_attn=flash_attn)
    full = evaluate(settings, request, allocated_mb=allocated_mb, live_allocated=live_allocated)
    return {"working_set": full["working_set"], "fits": full["fits"], "reason": full["reason"],
            "detail": full["detail"]}


def estimate_from_command(settings: Settings, cmdline: str) -> int | None:
    """Best-effort working-set MB of a running server from its command line; None when nothing usable."""
    from fleet_watch.core.estimator.commandline import parse_command

    parsed = parse_command(cmdline)
    if parsed is None or parsed.model is None:
        return None
    request = EstimateRequest(framework=parsed.framework, model=parsed.model, quant=parsed.quant, ctx=parsed.ctx,
                              kv_dtype=parsed.kv_dtype, parallel=parsed.parallel, flash_attn=parsed.flash_attn,
                              origin="command",
                              gpu_memory_utilization=parsed.gpu_memory_utilization)
    try:
        full = evaluate(settings, request)
    except FleetError:  # a damaged model file on someone's command line must not stop a discovery cycle
        return None
    ws = full["working_set"]
    if ws["source"] == "insufficient_input":
        return None
    return int(ws["total_mb"])
