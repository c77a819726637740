"""The estimate's decision, pure: the working set of a resolved model under given options, whether it fits the
room a machine has, and what fits instead when it does not.

``service.estimate`` gathers the inputs (the request checked, the model resolved from files or the catalog, the
machine's memory and what registered workloads hold) and ``reports.estimate`` renders the verdict.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from fleet_watch.core.estimator import attention, engines, fit, workingset
from fleet_watch.core.estimator.arch import MAX_CONTEXT, Architecture
from fleet_watch.core.estimator.mix import gguf_types, weight_bytes
from fleet_watch.core.estimator.naming import shown
from fleet_watch.core.estimator.quant import Quant, ggml_bytes, normalize_kv_dtype, quant_from_label
from fleet_watch.errors import UsageError

REASON = "working_set_exceeds_physical_ram"
MAX_PARALLEL = 1024


class Resolved(NamedTuple):
    """A model as the best source describes it (``model_source``: gguf_header, hf_folder, hf_cache, catalog,
    size_only)."""

    arch: Architecture
    quant: Quant
    weights_bytes: int
    model_source: str
    grounded: bool
    catalog_source: str | None = None
    path: str | None = None
    repack_bytes: int | None = None  # read from a GGUF header; None: computed when a CPU plan needs it
    group_size: int = 64
    weights_exact: bool = False


class Options(NamedTuple):
    """How the engine runs the model (all checked and defaulted by the service)."""

    framework: str  # canonical
    context: int
    kv_dtype: str
    parallel: int
    multiplier: float
    flash_attn: str | None = None  # on, off or auto as asked or the engine's default; None: not a llama.cpp engine
    gpu_memory_utilization: float | None = None


class Room(NamedTuple):
    """The memory a working set must fit in, after the reserve and what registered workloads hold."""

    device: str  # cuda, apple, cpu
    device_total_mb: int | None
    limit_mb: int
    physical_ram_mb: int
    origin: str
    description: str  # "physical RAM (8192MB)", for the detail sentence
    reserve_mb: int
    allocated_mb: int
    available_mb: int


class Verdict(NamedTuple):
    working_set: workingset.WorkingSet
    fits: bool
    reason: str | None
    detail: str | None
    alternatives: tuple[fit.Alternative, ...]
    suggestion: str | None
    flash_attn: bool | None  # what llama.cpp runs with on this device; None: not a llama.cpp engine


def check_request(*, ctx: int | None, parallel: int, allocated_mb: int, gpu_memory_utilization: float | None,
                  kv_dtype: str | None, flash_attn: str | None) -> None:
    """Bounds of the numbers and names in a request, before anything is read."""
    if ctx is not None and not 1 <= ctx <= MAX_CONTEXT:
        raise UsageError(f"--ctx must be between 1 and {MAX_CONTEXT} tokens, got {ctx}")
    if not 1 <= parallel <= MAX_PARALLEL:
        raise UsageError(f"--parallel must be between 1 and {MAX_PARALLEL}, got {parallel}")
    if allocated_mb < 0:
        raise UsageError(f"allocated_mb must be >= 0, got {allocated_mb}")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise UsageError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if kv_dtype is not None and normalize_kv_dtype(kv_dtype) is None:
        raise UsageError(f"--kv-dtype {shown(kv_dtype)} is not a KV cache type "
                         "(f16, bf16, q8_0, q4_0, fp8, mlx8, ...)")
    if flash_attn is not None and flash_attn not in attention.SETTINGS:
        raise UsageError(f"--flash-attn must be one of {', '.join(attention.SETTINGS)}, got {shown(flash_attn)}")


@lru_cache(maxsize=64)  # the context search asks it once per step for the same model
def repack_bytes(arch: Architecture, quant: Quant) -> int:
    """llama.cpp's CPU_REPACK copy of the Q4_0 / IQ4_NL matrices (facts §A4.1 "CPU repack")."""
    if not quant.is_gguf:
        return 0
    return sum(ggml_bytes(t_type, t.n_elements) for t, t_type in gguf_types(arch, quant.label)
               if t_type in ("Q4_0", "IQ4_NL") and not t.is_1d and t.name != "token_embd.weight" and t.ne1 % 8 == 0)


def head_dims(arch: Architecture) -> tuple[int, int]:
    """(K, V) head size of the attention op: MLA attends over the latent (kv_lora + rope, V = kv_lora)."""
    if arch.is_mla:
        return arch.kv_lora + arch.rope_dim, arch.kv_lora
    return arch.head_dim, arch.head_dim


def flash_attn_used(res: Resolved, opts: Options, device: str) -> bool | None:
    if opts.flash_attn is None:
        return None
    head_k, head_v = head_dims(res.arch)
    return attention.resolve(opts.flash_attn, device=device, head_k=head_k, head_v=head_v, kv_dtype=opts.kv_dtype,
                             gguf_arch=res.arch.gguf_arch)


def working_set(res: Resolved, opts: Options, device: str, device_total_mb: int | None, *,
                quant: Quant | None = None, context: int | None = None) -> workingset.WorkingSet:
    """The working set of ``res`` (or the same model in ``quant``, at ``context``) on ``device``."""
    q = res.quant if quant is None else quant
    same = q == res.quant
    weights = res.weights_bytes if same else weight_bytes(res.arch, q, group_size=res.group_size)
    repack = 0  # llama.cpp's CPU_REPACK copy exists only on the CPU
    if device == "cpu" and opts.framework in ("llama_cpp", "ollama"):
        repack = res.repack_bytes if same and res.repack_bytes is not None else repack_bytes(res.arch, q)
    flash = flash_attn_used(res, opts, device)
    tokens = opts.context if context is None else context
    plan = workingset.Plan(
        arch=res.arch, weights_bytes=weights, framework=opts.framework, ctx=tokens, kv_dtype=opts.kv_dtype,
        parallel=opts.parallel, device=device, multiplier=opts.multiplier,
        flash_attn=True if flash is None else flash, repack_bytes=repack, device_total_mb=device_total_mb,
        gpu_memory_utilization=opts.gpu_memory_utilization)
    return workingset.compute(plan)


def fits_in(ws: workingset.WorkingSet, available_mb: int) -> bool:
    """The total fits, and an engine that claims a fraction of the device (vLLM) has room for one request."""
    return ws.total_mb <= available_mb and ws.min_total_mb <= (ws.claim_mb or ws.min_total_mb)


def decide(res: Resolved, opts: Options, room: Room, ws: workingset.WorkingSet | None = None) -> Verdict:
    """Does ``res`` fit ``room``? When not: the largest quantization and the longest context that do."""
    if ws is None:
        ws = working_set(res, opts, room.device, room.device_total_mb)
    fits = fits_in(ws, room.available_mb)
    alternatives: list[fit.Alternative] = []
    suggestion = detail = None
    if not fits:
        def evaluator(label: str | None, tokens: int) -> tuple[int, int]:
            q = res.quant if label is None else engines.as_loaded(quant_from_label(label), opts.framework)
            w = working_set(res, opts, room.device, room.device_total_mb, quant=q, context=tokens)
            return w.weights_mb, w.total_mb if w.min_total_mb <= (w.claim_mb or w.min_total_mb) else 1 << 40

        for alt in (fit.smaller_quant_that_fits(evaluator, res.quant, opts.context, room.available_mb,
                                                framework=opts.framework),
                    fit.longest_context_that_fits(evaluator, res.quant, opts.context, room.available_mb)):
            if alt is not None:
                alternatives.append(alt)
        suggestion = fit.suggestion(alternatives)
        detail = (f"working set {ws.total_mb}MB exceeds {room.description} minus reserve "
                  f"({room.available_mb}MB available)")
        if ws.claim_mb is not None and ws.min_total_mb > ws.claim_mb:
            detail = (f"{opts.framework} needs {ws.min_total_mb}MB but claims only {ws.claim_mb}MB "
                      f"(gpu_memory_utilization x device memory)")
        if not res.grounded:
            detail += f" (generic {res.arch.name} shape: pass a GGUF file or a known model name for exact figures)"
    return Verdict(ws, fits, None if fits else REASON, detail, tuple(alternatives), suggestion,
                   flash_attn_used(res, opts, room.device))
