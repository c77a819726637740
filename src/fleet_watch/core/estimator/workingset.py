"""The working set of one model server: weights + (KV cache + activations) x framework overhead + fixed runtime.

The README's formula (``weights + (kv + activations) x multiplier``) is kept, with every term computed for the
real shape and context; the fixed runtime term (process, CUDA context, allocator pools) is new and reported as
``fixed_overhead_mb``. Sources of every number: ``docs/estimator.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from fleet_watch.core.estimator import kv as kvmod
from fleet_watch.core.estimator.arch import Architecture

MIB = 1024 * 1024

FRAMEWORKS = ("llama_cpp", "ollama", "vllm", "sglang", "mlx", "candle", "transformers")

# The README's multipliers (candle 2.0, vllm 1.4, mlx 1.3, ollama/llama.cpp 1.1); sglang and transformers are ours.
DEFAULT_OVERHEAD: dict[str, float] = {"candle": 2.0, "vllm": 1.4, "mlx": 1.3, "ollama": 1.1, "llama_cpp": 1.1,
                                      "sglang": 1.4, "transformers": 1.5}
UNKNOWN_OVERHEAD = 1.5

_ALIASES = {
    "llama.cpp": "llama_cpp", "llama-cpp": "llama_cpp", "llamacpp": "llama_cpp", "llama-server": "llama_cpp",
    "llama_server": "llama_cpp", "llama-cpp-python": "llama_cpp", "gguf": "llama_cpp", "mlx-lm": "mlx",
    "mlx_lm": "mlx", "mlx-vlm": "mlx", "mlx_vlm": "mlx", "cake": "candle", "hf": "transformers",
    "huggingface": "transformers", "torch": "transformers", "pytorch": "transformers",
}

# Fixed runtime memory in MiB by framework and device ("cuda", "apple", "cpu"). Sources in docs/estimator.md:
# llama.cpp on the CPU: peak RSS minus (weights + KV + compute) measured -3..16 MiB with llama-cpp-python
# (bench/estimator_accuracy.py: the ~45 MiB import baseline is not additive, mapped pages overlap);
# Ollama MinimumMemory 457 MiB CUDA / 512 MiB Metal (ml/device.go); vLLM non-torch 0.13-0.55 GiB + CUDA graphs
# up to 1 GiB (llm-d empirical table); torch + transformers import 375 MiB (measured); a CUDA context with cuBLAS
# workspace ~ 400 MiB.
_FIXED_MB: dict[str, dict[str, int]] = {
    "llama_cpp": {"cpu": 8, "apple": 64, "cuda": 400},
    "ollama": {"cpu": 64, "apple": 512, "cuda": 457},
    "vllm": {"cpu": 1024, "apple": 1024, "cuda": 1536},
    "sglang": {"cpu": 1024, "apple": 1024, "cuda": 1536},
    "mlx": {"cpu": 160, "apple": 160, "cuda": 160},
    "candle": {"cpu": 32, "apple": 64, "cuda": 400},
    "transformers": {"cpu": 375, "apple": 375, "cuda": 875},
}

DEFAULT_GPU_MEMORY_UTILIZATION = {"vllm": 0.9, "sglang": 0.88}


def canonical_framework(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key.replace("-", "_"))


def overhead_multiplier(framework: str, config: Mapping[str, object] | None) -> float:
    """The README multiplier, overridden by ``gpu_estimator.framework_overhead`` in config.json."""
    if config:
        value = config.get(framework)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return DEFAULT_OVERHEAD.get(framework, UNKNOWN_OVERHEAD)


def default_kv_dtype(framework: str, weights_label: str) -> str:
    if framework in ("vllm", "sglang", "transformers") and weights_label == "F32":
        return "f32"
    return "f16"


def default_context(framework: str, model_context: int, device_total_mb: int | None) -> int:
    """The context a server allocates when none is asked for.

    llama.cpp: 4096 (``llama-server --help``: "-c ... default: 4096, 0 = loaded from model"). Ollama: 262144 with
    at least 47 GiB of VRAM, 32768 with 23 GiB, else 4096 (server/routes.go). Both capped at the model's own.
    vLLM, SGLang, MLX, Candle and transformers: the model's own (max_model_len; caches that grow to it).
    """
    if framework == "llama_cpp":
        return min(4096, model_context)
    if framework == "ollama":
        total_gib = (device_total_mb or 0) / 1024
        wanted = 262144 if total_gib >= 47 else 32768 if total_gib >= 23 else 4096
        return min(wanted, model_context)
    return model_context


class Plan(NamedTuple):
    arch: Architecture
    weights_bytes: int
    framework: str  # canonical; a name that is not in FRAMEWORKS is modelled like llama_cpp
    ctx: int
    kv_dtype: str
    parallel: int = 1
    device: str = "cpu"  # "cuda", "apple", "cpu"
    multiplier: float = 1.1
    flash_attn: bool = True
    repack_bytes: int = 0  # llama.cpp CPU_REPACK copy of Q4_0/IQ4_NL weights (CPU only)
    device_total_mb: int | None = None  # for vLLM/SGLang, which claim a fraction of it
    gpu_memory_utilization: float | None = None


class WorkingSet(NamedTuple):
    weights_mb: int
    kv_cache_mb: int
    activations_mb: int
    fixed_overhead_mb: int
    overhead_multiplier: float
    total_mb: int
    min_total_mb: int  # what the model needs at this context (vLLM/SGLang: before claiming their fraction)
    kv_min_mb: int  # the KV of the requested context alone (vLLM's pool is larger)
    claim_mb: int | None = None  # vLLM/SGLang: gpu_memory_utilization x device memory


def _engine(framework: str) -> str:
    return framework if framework in FRAMEWORKS else "llama_cpp"


def _llama_cpp_compute(plan: Plan, stream_cells: int) -> int:
    """llama.cpp compute buffers: max(output, attention, FFN stage) for one ubatch, plus the output buffer
    and, on the CPU without flash attention, the f16 copy of KQ (estimator-facts A4.1, within 10 % of dry-runs)."""
    a, ub = plan.arch, kvmod.N_UBATCH
    h, ff = a.hidden, a.ffn_width_active()
    mask = stream_cells * ub * (2 if plan.flash_attn else 4)
    output = ub * (a.vocab + 2 * h) * 4
    ffn = mask + ub * (4 * ff + 2 * h) * 4
    attention = mask + int(5.5 * h * ub * 4)
    if not plan.flash_attn:
        attention += stream_cells * ub * a.heads * 4
    compute = max(output, ffn, attention)
    compute += a.vocab * 4 * max(1, plan.parallel)  # output (logits) buffer
    if not plan.flash_attn and plan.device == "cpu":
        compute += stream_cells * ub * a.heads * 2
    return compute


def compute(plan: Plan, fixed_mb_override: int | None = None) -> WorkingSet:
    """The working set of ``plan`` (all sizes in MiB, rounded up)."""
    a, engine = plan.arch, _engine(plan.framework)
    device = plan.device if plan.device in ("cuda", "apple", "cpu") else "cpu"
    weights = plan.weights_bytes + plan.repack_bytes
    if engine in ("llama_cpp", "ollama"):
        n_seq = max(1, plan.parallel)
        total_ctx = plan.ctx * n_seq if engine == "ollama" else plan.ctx  # Ollama's num_ctx is per sequence
        kv = kvmod.llama_cpp_kv_bytes(a, total_ctx, plan.kv_dtype, n_seq)
        stream_cells = kvmod.pad(-(-total_ctx // n_seq), kvmod.LLAMA_CPP_PAD)
        act = _llama_cpp_compute(plan, stream_cells)
    elif engine in ("vllm", "sglang"):
        kv = kvmod.paged_kv_bytes(a, plan.ctx, plan.kv_dtype, max(1, plan.parallel))
        # Profile-run peak: logits of max_num_batched_tokens (8192) tokens in f32 plus sampler copies; 1.2 x T x V
        # x 4 B reproduces llm-d's measured 4.76 / 5.56 / 7.38 GiB for Llama-3.1-8B / Qwen3-0.6B / gpt-oss-20b.
        act = int(1.2 * kvmod.VLLM_MAX_BATCHED_TOKENS * a.vocab * 4)
    elif engine == "mlx":
        kv = kvmod.growing_kv_bytes(a, plan.ctx, plan.kv_dtype, max(1, plan.parallel), step=kvmod.MLX_STEP)
        chunk = 2048  # mlx_lm prefill_step_size; fused SDPA, logits only for the last token
        act = chunk * (4 * a.hidden + 3 * a.ffn_width_active()) * 2 + a.vocab * 4
    else:  # candle, transformers: hidden states of a 512-token step, decode scores against the full cache
        step = 512
        windowed = engine == "transformers"
        kv = kvmod.growing_kv_bytes(a, plan.ctx, plan.kv_dtype, max(1, plan.parallel), windowed=windowed)
        elem = 4 if engine == "candle" else 2  # candle's quantized models compute in f32
        act = step * (4 * a.hidden + 3 * a.ffn_width_active()) * elem + a.heads * plan.ctx * 4 + a.vocab * 4
    fixed = fixed_mb_override if fixed_mb_override is not None else _FIXED_MB[engine][device]
    weights_mb, kv_mb, act_mb = _mb(weights), _mb(kv), _mb(act)
    needed = int(weights_mb + (kv_mb + act_mb) * plan.multiplier + fixed + 0.999)
    # On a GPU, vLLM/SGLang claim a fraction of it whatever the model; their CPU backend sizes its KV space by
    # VLLM_CPU_KVCACHE_SPACE instead, so there the model's own needs are the estimate.
    if engine in ("vllm", "sglang") and device != "cpu":
        util = plan.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION[engine]
        claim = int(util * plan.device_total_mb) if plan.device_total_mb else needed
        total = max(needed, claim)
        pool = max(kv_mb, claim - weights_mb - act_mb - fixed)
        return WorkingSet(weights_mb, pool, act_mb, fixed, plan.multiplier, total, needed, kv_mb, claim)
    return WorkingSet(weights_mb, kv_mb, act_mb, fixed, plan.multiplier, needed, needed, kv_mb)


def _mb(value: int) -> int:
    return -(-value // MIB)
