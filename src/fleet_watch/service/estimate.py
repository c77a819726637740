"""The working-set estimate as the guard, ``fleet estimate`` and discovery use it.

``guard_working_set`` and ``estimate`` return the same working-set object for the same inputs. Model resolution
order: GGUF file -> Hugging Face folder -> Hugging Face cache (offline) -> built-in catalog -> bare size (generic
shape, ``grounded: false``) -> ``insufficient_input``. Machine memory is detected only when no override is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fleet_watch.config import Settings
from fleet_watch.core.estimator import engines, fit, workingset
from fleet_watch.core.estimator.arch import MAX_CONTEXT, Architecture, architecture_from_mapping, generic_architecture
from fleet_watch.core.estimator.mix import gguf_types, weight_bytes
from fleet_watch.core.estimator.naming import match_catalog, parse_bare_size, parse_size
from fleet_watch.core.estimator.quant import Quant, normalize_kv_dtype, parse_quant, quant_from_label
from fleet_watch.errors import FleetError, UsageError
from fleet_watch.service.memory_target import Memory, available_mb, given_memory, machine_memory

REASON = "working_set_exceeds_physical_ram"
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


@dataclass(frozen=True, slots=True)
class Resolved:
    arch: Architecture
    quant: Quant
    weights_bytes: int
    model_source: str  # gguf_header, hf_folder, hf_cache, catalog, size_only
    grounded: bool
    catalog_source: str | None = None
    path: str | None = None
    repack_bytes: int | None = None  # read from a GGUF header; None: computed when a CPU plan needs it
    group_size: int = 64
    weights_exact: bool = False


def _repack_bytes(arch: Architecture, quant: Quant) -> int:
    if not quant.is_gguf:
        return 0
    from fleet_watch.core.estimator.quant import ggml_bytes

    return sum(ggml_bytes(t_type, t.n_elements) for t, t_type in gguf_types(arch, quant.label)
               if t_type in ("Q4_0", "IQ4_NL") and not t.is_1d and t.name != "token_embd.weight" and t.ne1 % 8 == 0)


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
        raise UsageError(f"unknown quantization {quant_text!r} (e.g. Q4_K_M, IQ4_XS, Q8_0, 4bit, AWQ, GPTQ, FP8, BF16)")
    path = Path(model).expanduser()
    looks_like_path = os.sep in model or model.endswith(".gguf") or model.startswith((".", "~"))
    if path.exists():  # a file or folder, also one named without a slash (./my-model in the current folder)
        from fleet_watch.probes.modelfiles import read_model_path

        found = read_model_path(path)
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
        raise UsageError(f"unknown framework {framework!r} (known: {known}; or add it to "
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
        raise UsageError(f"--kv-dtype {kv_dtype!r} is not a KV cache type of {framework} "
                         f"(one of: {', '.join(allowed)})")
    return key


def _model_size(arch: Architecture) -> str:
    total = arch.n_params() / 1e9
    if total < 0.1:
        return f"{arch.n_params() / 1e6:.0f}M"
    if arch.is_moe:
        return f"{total:.1f}B-A{arch.n_params_active() / 1e9:.1f}B"
    return f"{total:.2f}B" if total < 1 else f"{total:.1f}B"


def _architecture_dict(res: Resolved) -> dict[str, Any]:
    a = res.arch
    return {"name": a.name, "gguf_arch": a.gguf_arch, "layers": a.layers, "hidden": a.hidden, "heads": a.heads,
            "kv_heads": a.kv_heads, "head_dim": a.head_dim, "ffn": a.ff, "vocab": a.vocab, "tied": a.tied,
            "context_length": a.context, "sliding_window": a.sliding_window, "global_every": a.global_every or None,
            "experts": a.moe_experts or None, "experts_active": a.moe_active or None,
            "mla_kv_lora_rank": a.kv_lora or None, "params": a.n_params(), "params_active": a.n_params_active(),
            "kv_bytes_per_token_f16": a.kv_bytes_per_token_f16(), "source": res.model_source,
            "catalog_source": res.catalog_source, "path": res.path, "weights_exact": res.weights_exact}


def evaluate(settings: Settings, *, framework: str | None, model: str | None, quant: str | None = None,
             ctx: int | None = None, kv_dtype: str | None = None, parallel: int = 1, ram_mb: int | None = None,
             allocated_mb: int = 0, origin: str = "explicit", gpu_memory_utilization: float | None = None,
             environ: Mapping[str, str] | None = None, machines: bool = False,
             live_allocated: Callable[[], int] | None = None) -> dict[str, Any]:
    """The full estimate: ``{"working_set", "fits", "reason", "detail", "context_tokens", "kv_dtype",
    "architecture", "alternatives"}``. ``working_set`` is what the guard puts in ``checks.gpu.working_set``.
    ``machines``: also ``fits_on``, the same model and context on machines of common sizes.
    ``live_allocated``: asked only when the working set does not fit with ``allocated_mb`` (what the registry
    says), for what live holders really claim: dead claims can only free memory, and checking every holder's
    liveness costs a /proc read each. ``guard`` and ``estimate`` both answer this way, so they agree."""
    if ctx is not None and not 1 <= ctx <= MAX_CONTEXT:
        raise UsageError(f"--ctx must be between 1 and {MAX_CONTEXT} tokens, got {ctx}")
    if not 1 <= parallel <= 1024:
        raise UsageError(f"--parallel must be between 1 and 1024, got {parallel}")
    if allocated_mb < 0:
        raise UsageError(f"allocated_mb must be >= 0, got {allocated_mb}")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise UsageError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    fw = check_framework(framework, settings) if framework else None
    if kv_dtype is not None and normalize_kv_dtype(kv_dtype) is None:
        raise UsageError(f"--kv-dtype {kv_dtype!r} is not a KV cache type (f16, bf16, q8_0, q4_0, fp8, mlx8, ...)")
    model = (model or "").strip() or None
    res = resolve_model(model, quant, fw, os.environ if environ is None else environ) if model else None
    if res is None:
        if quant and not parse_quant(quant):
            raise UsageError(f"unknown quantization {quant!r}")
        return _insufficient(settings, fw, model, ram_mb, allocated_mb, ctx, kv_dtype)
    framework_name = fw or infer_framework(res.quant)
    refused = engines.refusal(res.quant, framework_name)
    if refused:
        raise UsageError(f"{refused}; name a quantization it reads, or another --framework")
    mem = machine_memory(settings, ram_mb, framework_name)
    kv = _kv_dtype(kv_dtype, framework_name, res.quant)
    vram = mem.device_total_mb if mem.device != "cpu" else None  # Ollama sizes num_ctx by GPU memory only
    context = ctx or workingset.default_context(framework_name, res.arch.context, vram)
    multiplier = workingset.overhead_multiplier(framework_name, _overrides(settings))

    def run(q: Quant, tokens: int, target: Memory = mem) -> workingset.WorkingSet:
        same = q == res.quant
        weights = res.weights_bytes if same else weight_bytes(res.arch, q, group_size=res.group_size)
        repack = 0  # llama.cpp's CPU_REPACK copy exists only on the CPU
        if target.device == "cpu" and framework_name in ("llama_cpp", "ollama"):
            repack = res.repack_bytes if same and res.repack_bytes is not None else _repack_bytes(res.arch, q)
        plan = workingset.Plan(
            arch=res.arch, weights_bytes=weights, framework=framework_name, ctx=tokens, kv_dtype=kv,
            parallel=parallel, device=target.device, multiplier=multiplier, repack_bytes=repack,
            device_total_mb=target.device_total_mb, gpu_memory_utilization=gpu_memory_utilization)
        return workingset.compute(plan)

    def fits_in(w: workingset.WorkingSet, available: int) -> bool:
        return w.total_mb <= available and w.min_total_mb <= (w.claim_mb or w.min_total_mb)

    ws = run(res.quant, context)
    reserve, allocated_mb, available = available_mb(settings, mem, allocated_mb,
                                                    engine_reserves=ws.claim_mb is not None)
    fits = fits_in(ws, available)
    if not fits and allocated_mb > 0 and live_allocated is not None:
        reserve, allocated_mb, available = available_mb(settings, mem, live_allocated(),
                                                        engine_reserves=ws.claim_mb is not None)
        fits = fits_in(ws, available)

    def evaluator(label: str | None, tokens: int) -> tuple[int, int]:
        q = res.quant if label is None else engines.as_loaded(quant_from_label(label), framework_name)
        w = run(q, tokens)
        return w.weights_mb, w.total_mb if w.min_total_mb <= (w.claim_mb or w.min_total_mb) else 1 << 40

    alternatives: list[fit.Alternative] = []
    suggestion = None
    if not fits:
        for alt in (fit.smaller_quant_that_fits(evaluator, res.quant, context, available, framework=framework_name),
                    fit.longest_context_that_fits(evaluator, res.quant, context, available)):
            if alt is not None:
                alternatives.append(alt)
        suggestion = fit.suggestion(alternatives)
    grounded = res.grounded
    working_set: dict[str, Any] = {
        "weights_mb": ws.weights_mb, "kv_cache_mb": ws.kv_cache_mb, "activations_mb": ws.activations_mb,
        "overhead_multiplier": ws.overhead_multiplier, "total_mb": ws.total_mb, "framework": framework_name,
        "model_size": _model_size(res.arch), "quantization": res.quant.label,
        "physical_ram_mb": mem.physical_ram_mb, "available_after_reserve_mb": available, "fits": fits,
        "grounded": grounded, "source": origin if res.model_source != "size_only" else "fallback_default",
        "suggestion": suggestion,
        "fixed_overhead_mb": ws.fixed_overhead_mb, "kv_min_mb": ws.kv_min_mb, "claim_mb": ws.claim_mb,
        "context_tokens": context, "kv_dtype": kv, "parallel": parallel, "model": res.arch.name,
        "model_source": res.model_source, "framework_inferred": fw is None, "device": mem.device,
        "memory_limit_mb": mem.limit_mb, "memory_origin": mem.origin, "reserve_mb": reserve,
        "allocated_mb": allocated_mb,
    }
    detail = None
    if not fits:
        detail = f"working set {ws.total_mb}MB exceeds {mem.describe()} minus reserve ({available}MB available)"
        if ws.claim_mb is not None and ws.min_total_mb > ws.claim_mb:
            detail = (f"{framework_name} needs {ws.min_total_mb}MB but claims only {ws.claim_mb}MB "
                      f"(gpu_memory_utilization x device memory)")
        if not grounded:
            detail += f" (generic {res.arch.name} shape: pass a GGUF file or a known model name for exact figures)"
    out: dict[str, Any] = {
        "working_set": working_set, "fits": fits, "reason": None if fits else REASON, "detail": detail,
        "context_tokens": context, "kv_dtype": kv, "architecture": _architecture_dict(res),
        "alternatives": [a.to_dict() for a in alternatives],
    }
    if machines:
        fits_on: list[dict[str, Any]] = []
        for gb in COMMON_MACHINES_GB:
            target = given_memory(gb * 1024, framework_name, planned=True)
            w = run(res.quant, context, target)
            room = available_mb(settings, target, 0, engine_reserves=w.claim_mb is not None)[2]
            fits_on.append({"memory_gb": gb, "device": target.device, "total_mb": w.total_mb,
                            "available_mb": room, "fits": fits_in(w, room)})
        out["fits_on"] = fits_on
    return out


def _insufficient(settings: Settings, fw: str | None, model: str | None, ram_mb: int | None, allocated_mb: int,
                  ctx: int | None, kv_dtype: str | None) -> dict[str, Any]:
    """No size, file or known name: say so, never guess (the guard does not deny on this)."""
    mem = machine_memory(settings, ram_mb, fw or "llama_cpp")
    reserve, allocated_mb, available = available_mb(settings, mem, allocated_mb)
    what = f"model {model!r} is not a file, a cached repo, a known model or a size" if model else "no --model given"
    working_set: dict[str, Any] = {
        "weights_mb": 0, "kv_cache_mb": 0, "activations_mb": 0,
        "overhead_multiplier": workingset.overhead_multiplier(fw or "unknown", _overrides(settings)),
        "total_mb": 0, "framework": fw or "unknown", "model_size": "UNKNOWN", "quantization": "UNKNOWN",
        "physical_ram_mb": mem.physical_ram_mb, "available_after_reserve_mb": available, "fits": None,
        "grounded": False, "source": "insufficient_input",
        "suggestion": f"No estimate: {what}. Pass a GGUF path, a Hugging Face folder or repo id, a known model "
                      "name (qwen2.5-7B-Q4_K_M) or a size (7B).",
        "context_tokens": ctx, "kv_dtype": kv_dtype, "device": mem.device, "memory_limit_mb": mem.limit_mb,
        "memory_origin": mem.origin, "reserve_mb": reserve, "allocated_mb": allocated_mb,
    }
    return {"working_set": working_set, "fits": True, "reason": None, "detail": None, "context_tokens": ctx,
            "kv_dtype": kv_dtype, "architecture": None, "alternatives": []}


def guard_working_set(
    settings: Settings, *, framework: str | None, model: str | None, ctx: int | None, kv_dtype: str | None,
    ram_mb: int | None, allocated_mb: int, live_allocated: Callable[[], int] | None = None,
) -> dict[str, Any] | None:
    """The guard's GPU working-set check; None when neither ``framework`` nor ``model`` is given. The claim asked
    of the ledger does not change it (``core.guard.with_working_set`` adds it as ``requested_mb``)."""
    if not framework and not model:
        return None
    full = evaluate(settings, framework=framework, model=model, ctx=ctx, kv_dtype=kv_dtype, ram_mb=ram_mb,
                    allocated_mb=allocated_mb, live_allocated=live_allocated)
    return {"working_set": full["working_set"], "fits": full["fits"], "reason": full["reason"],
            "detail": full["detail"]}


def estimate_from_command(settings: Settings, cmdline: str) -> int | None:
    """Best-effort working-set MB of a running server from its command line; None when nothing usable."""
    from fleet_watch.core.estimator.commandline import parse_command

    parsed = parse_command(cmdline)
    if parsed is None or parsed.model is None:
        return None
    try:
        full = evaluate(settings, framework=parsed.framework, model=parsed.model, quant=parsed.quant,
                        ctx=parsed.ctx, kv_dtype=parsed.kv_dtype, parallel=parsed.parallel, origin="command",
                        gpu_memory_utilization=parsed.gpu_memory_utilization)
    except FleetError:  # a damaged model file on someone's command line must not stop a discovery cycle
        return None
    ws = full["working_set"]
    if ws["source"] == "insufficient_input":
        return None
    return int(ws["total_mb"])
