"""The estimate document (``fleet estimate --json``; its ``working_set`` is ``checks.gpu.working_set`` in the
guard contract), built from the verdict ``core.estimator.decide`` reached on what the service gathered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from fleet_watch.core.estimator.arch import Architecture
from fleet_watch.core.estimator.decide import Options, Resolved, Room, Verdict

UNKNOWN_REASON = "insufficient_input"


class MachineFit(NamedTuple):
    """The same model and context on a machine of a common size, planned like ``--ram-mb``."""

    memory_gb: int
    device: str
    total_mb: int
    available_mb: int
    fits: bool


def model_size(arch: Architecture) -> str:
    total = arch.n_params() / 1e9
    if total < 0.1:
        return f"{arch.n_params() / 1e6:.0f}M"
    if arch.is_moe:
        return f"{total:.1f}B-A{arch.n_params_active() / 1e9:.1f}B"
    return f"{total:.2f}B" if total < 1 else f"{total:.1f}B"


def architecture(res: Resolved) -> dict[str, Any]:
    a = res.arch
    return {"name": a.name, "gguf_arch": a.gguf_arch, "layers": a.layers, "hidden": a.hidden, "heads": a.heads,
            "kv_heads": a.kv_heads, "head_dim": a.head_dim, "ffn": a.ff, "vocab": a.vocab, "tied": a.tied,
            "context_length": a.context, "sliding_window": a.sliding_window, "global_every": a.global_every or None,
            "experts": a.moe_experts or None, "experts_active": a.moe_active or None,
            "mla_kv_lora_rank": a.kv_lora or None, "params": a.n_params(), "params_active": a.n_params_active(),
            "kv_bytes_per_token_f16": a.kv_bytes_per_token_f16(), "source": res.model_source,
            "catalog_source": res.catalog_source, "path": res.path, "weights_exact": res.weights_exact}


def _flash(used: bool | None) -> str | None:
    return None if used is None else "on" if used else "off"


def estimate(res: Resolved, opts: Options, room: Room, verdict: Verdict, *, origin: str, framework_inferred: bool,
             fits_on: Sequence[MachineFit] | None = None) -> dict[str, Any]:
    """``{"working_set", "fits", "reason", "detail", "context_tokens", "kv_dtype", "architecture",
    "alternatives"}`` (and ``fits_on`` when asked)."""
    ws = verdict.working_set
    working_set: dict[str, Any] = {
        "weights_mb": ws.weights_mb, "kv_cache_mb": ws.kv_cache_mb, "activations_mb": ws.activations_mb,
        "overhead_multiplier": ws.overhead_multiplier, "total_mb": ws.total_mb, "framework": opts.framework,
        "model_size": model_size(res.arch), "quantization": res.quant.label,
        "physical_ram_mb": room.physical_ram_mb, "available_after_reserve_mb": room.available_mb,
        "fits": verdict.fits, "grounded": res.grounded,
        "source": origin if res.model_source != "size_only" else "fallback_default",
        "suggestion": verdict.suggestion,
        "fixed_overhead_mb": ws.fixed_overhead_mb, "kv_min_mb": ws.kv_min_mb, "claim_mb": ws.claim_mb,
        "context_tokens": opts.context, "kv_dtype": opts.kv_dtype, "parallel": opts.parallel, "model": res.arch.name,
        "model_source": res.model_source, "framework_inferred": framework_inferred, "device": room.device,
        "flash_attn": _flash(verdict.flash_attn), "flash_attn_setting": opts.flash_attn,
        "memory_limit_mb": room.limit_mb, "memory_origin": room.origin, "reserve_mb": room.reserve_mb,
        "allocated_mb": room.allocated_mb,
    }
    out: dict[str, Any] = {
        "working_set": working_set, "fits": verdict.fits, "reason": verdict.reason, "detail": verdict.detail,
        "context_tokens": opts.context, "kv_dtype": opts.kv_dtype, "architecture": architecture(res),
        "alternatives": [a.to_dict() for a in verdict.alternatives],
    }
    if fits_on is not None:
        out["fits_on"] = [{"memory_gb": m.memory_gb, "device": m.device, "total_mb": m.total_mb,
                           "available_mb": m.available_mb, "fits": m.fits} for m in fits_on]
    return out


def unknown(what: str, room: Room, *, framework: str | None, multiplier: float, ctx: int | None,
            kv_dtype: str | None, flash_attn: str | None) -> dict[str, Any]:
    """No size, file or known name: say so (``what``, the ``reason``), never guess. ``fits`` is None at both levels:
    the guard does not deny on it, and ``fleet estimate`` reports it as not found."""
    working_set: dict[str, Any] = {
        "weights_mb": 0, "kv_cache_mb": 0, "activations_mb": 0, "overhead_multiplier": multiplier,
        "total_mb": 0, "framework": framework or "unknown", "model_size": "UNKNOWN", "quantization": "UNKNOWN",
        "physical_ram_mb": room.physical_ram_mb, "available_after_reserve_mb": room.available_mb, "fits": None,
        "grounded": False, "source": UNKNOWN_REASON,
        "suggestion": f"No estimate: {what}. Pass a GGUF path, a Hugging Face folder or repo id, a known model "
                      "name (qwen2.5-7B-Q4_K_M) or a size (7B).",
        "context_tokens": ctx, "kv_dtype": kv_dtype, "device": room.device, "flash_attn": None,
        "flash_attn_setting": flash_attn, "memory_limit_mb": room.limit_mb, "memory_origin": room.origin,
        "reserve_mb": room.reserve_mb, "allocated_mb": room.allocated_mb,
    }
    return {"working_set": working_set, "fits": None, "reason": what, "detail": None,
            "context_tokens": ctx, "kv_dtype": kv_dtype, "architecture": None, "alternatives": []}
