"""Where a working set has to fit, and what to do when it does not (the largest quantization or the longest
context that fits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from fleet_watch.core.estimator import engines
from fleet_watch.core.estimator.quant import GGUF_LADDER, HF_LADDER, MLX_LADDER, Quant, quant_from_label


def effective_reserve_mb(memory_mb: int, configured_mb: int) -> int:
    """The configured reserve, capped at a quarter of the memory (2 GiB, at most half, on small machines).

    Continuous and monotone in ``memory_mb``, unlike the reference clamp (which jumped from 2 GiB to 16 GiB at
    16 GiB of RAM): 8 GiB with the default 16 GiB reserve keeps 2048 MB back (6144 MB usable, as in the README),
    128 GiB keeps the full 16384 MB (114688 MB usable).
    """
    if memory_mb <= 0:
        return 0
    cap = max(memory_mb // 4, min(2048, memory_mb // 2))
    return max(0, min(configured_mb, cap))


def apple_wired_limit_mb(ram_mb: int, wired_limit_setting: int | None) -> tuple[int, bool]:
    """``iogpu.wired_limit_mb`` when set; 0 means the system default, which Metal reports as about 2/3 of
    RAM up to 36 GB and 3/4 above (recommendedMaxWorkingSetSize, e.g. 21845 MB on a 32 GB M1 Max,
    llamafile issue 81). Returns (MB, estimated?)."""
    if wired_limit_setting:
        return wired_limit_setting, False
    fraction = 2 / 3 if ram_mb <= 36 * 1024 else 3 / 4
    return int(ram_mb * fraction), True


class Alternative(NamedTuple):
    kind: str  # "quantization" or "context"
    quantization: str
    context_tokens: int
    weights_mb: int
    total_mb: int

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "quantization": self.quantization, "context_tokens": self.context_tokens,
                "weights_mb": self.weights_mb, "total_mb": self.total_mb}

    def sentence(self) -> str:
        if self.kind == "quantization":
            return (f"Use {self.quantization} quantization (~{self.weights_mb} MB weights, "
                    f"~{self.total_mb} MB working set)")
        return f"Reduce the context to {self.context_tokens} tokens (~{self.total_mb} MB working set)"


def ladder_for(quant: Quant, framework: str | None = None) -> tuple[str, ...]:
    """The quantizations worth suggesting, best first: those the framework loads, in the weights' own family."""
    if framework == "mlx" or (framework is None and quant.kind == "mlx"):
        return MLX_LADDER
    if framework in engines.GGUF_ENGINES or quant.kind == "gguf":
        return GGUF_LADDER
    return HF_LADDER


# evaluate(quant label or None for the current one, context) -> (weights_mb, total_mb)
Evaluator = Callable[[str | None, int], tuple[int, int]]


def smaller_quant_that_fits(evaluate: Evaluator, current: Quant, ctx: int, available_mb: int, *,
                            framework: str | None = None) -> Alternative | None:
    """The largest quantization on the ladder that ``framework`` loads, with smaller weights than ``current``, whose
    total fits."""
    current_weights, _ = evaluate(None, ctx)
    for label in ladder_for(current, framework):
        if label == current.label or (
                framework and not engines.loads(engines.as_loaded(quant_from_label(label), framework), framework)):
            continue
        weights, total = evaluate(label, ctx)
        if weights < current_weights and total <= available_mb:
            return Alternative("quantization", label, ctx, weights, total)
    return None


def suggestion(alternatives: list[Alternative]) -> str:
    """One actionable sentence: every alternative that fits, best (largest quantization) first."""
    if not alternatives:
        return "Offload to a machine with more memory (no smaller quantization or context fits)"
    first, *rest = (a.sentence() for a in alternatives)
    return "; or ".join([first, *(r[0].lower() + r[1:] for r in rest)])


def longest_context_that_fits(evaluate: Evaluator, current: Quant, ctx: int, available_mb: int,
                              *, step: int = 256, floor: int = 512) -> Alternative | None:
    """The longest context (a multiple of ``step``, at least ``floor``) below ``ctx`` whose total fits."""
    lo, hi = floor // step, (ctx - 1) // step
    if hi < lo:
        return None
    weights, total = evaluate(None, lo * step)
    if total > available_mb:
        return None
    best = (lo, weights, total)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        weights, total = evaluate(None, mid * step)
        if total <= available_mb:
            lo, best = mid, (mid, weights, total)
        else:
            hi = mid - 1
    return Alternative("context", current.label, best[0] * step, best[1], best[2])
