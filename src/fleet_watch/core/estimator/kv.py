"""KV cache bytes, engine by engine.

* llama.cpp / Ollama (``src/llama-kv-cache.cpp``, ``llama-kv-cache-iswa.cpp``, ``llama-context.cpp``): one K and one V
  tensor per cached layer of ``cells`` rows; ``cells`` = the context padded up to 256; with n parallel sequences
  (non-unified cache) n streams of pad256(ctx / n) cells; sliding-window layers hold
  pad256(min(cells, window + n_ubatch)) cells and stay F16 whatever -ctk says (since PR #21277); MLA caches only the
  latent (kv_lora_rank + rope dims) and has no V tensor. Quantized types carry their block scales (q8_0 = 34/32 B).
* vLLM / SGLang (``vllm/v1/kv_cache_interface.py``): pages of 16 tokens, 2 x kv_heads x head_size x dtype per layer
  and token; sliding layers need min(window - 1 + max_num_batched_tokens, max_model_len) tokens; MLA 576 values.
* MLX (mlx-lm ``models/cache.py``): KVCache grows in steps of 256 tokens; RotatingKVCache keeps ``window`` tokens.
* Candle / transformers: concatenated caches of exactly ``ctx`` tokens; transformers' sliding layers keep the window.
"""

from __future__ import annotations

from fleet_watch.core.estimator.arch import Architecture
from fleet_watch.core.estimator.quant import KV_TYPES

LLAMA_CPP_PAD = 256
N_UBATCH = 512
VLLM_BLOCK = 16
VLLM_MAX_BATCHED_TOKENS = 8192
MLX_STEP = 256


def pad(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def llama_cpp_kv_bytes(arch: Architecture, ctx: int, kv_dtype: str, n_seq: int = 1, *,
                       swa_full: bool = False, n_ubatch: int = N_UBATCH) -> int:
    """Bytes of llama.cpp's KV cache for a context of ``ctx`` tokens in total over ``n_seq`` streams."""
    n_seq = max(1, n_seq)
    stream_cells = pad(max(1, -(-ctx // n_seq)), LLAMA_CPP_PAD)
    size = KV_TYPES[kv_dtype]
    total = 0.0
    for layer in range(arch.layers):
        k_width, v_width = arch.kv_widths(layer)
        if arch.is_sliding(layer) and not swa_full:
            window = arch.sliding_window or stream_cells
            cells = min(stream_cells, pad(window + n_ubatch, LLAMA_CPP_PAD))
            total += n_seq * cells * (k_width + v_width) * 2.0
        else:
            total += n_seq * stream_cells * (k_width + v_width) * size
    return int(total)


def paged_kv_bytes(arch: Architecture, ctx: int, kv_dtype: str, n_seq: int = 1) -> int:
    """vLLM / SGLang: the KV that ``n_seq`` requests of ``ctx`` tokens occupy (16-token pages)."""
    size = KV_TYPES[kv_dtype]
    total = 0.0
    for layer in range(arch.layers):
        k_width, v_width = arch.kv_widths(layer)
        tokens = ctx
        if arch.is_sliding(layer) and arch.sliding_window:
            tokens = min(arch.sliding_window - 1 + VLLM_MAX_BATCHED_TOKENS, ctx)
        total += (pad(tokens, VLLM_BLOCK) + VLLM_BLOCK) * (k_width + v_width) * size
    return int(total * max(1, n_seq))


def growing_kv_bytes(arch: Architecture, ctx: int, kv_dtype: str, n_seq: int = 1, *, step: int = 1,
                     windowed: bool = True) -> int:
    """MLX (``step`` 256), Candle and transformers (``step`` 1): caches that grow to ``ctx`` tokens."""
    size = KV_TYPES[kv_dtype]
    total = 0.0
    for layer in range(arch.layers):
        k_width, v_width = arch.kv_widths(layer)
        tokens = ctx
        if windowed and arch.is_sliding(layer) and arch.sliding_window:
            tokens = min(ctx, arch.sliding_window)
        total += pad(tokens, step) * (k_width + v_width) * size
    return int(total * max(1, n_seq))
