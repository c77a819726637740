"""Turning what a model file says into an Architecture: GGUF metadata and Hugging Face ``config.json``.

Pure: the probes (``fleet_watch.probes.modelfiles``) read the bytes and pass plain dicts in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fleet_watch.core.estimator.arch import Architecture
from fleet_watch.core.estimator.quant import Quant, float_quant
from fleet_watch.errors import UsageError

# llama.cpp hard-codes the sliding-window layout per architecture (src/llama-model.cpp, hparams.set_swa_pattern).
_GGUF_SWA_EVERY = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "gpt-oss": 2, "cohere2": 4, "llama4": 4}

# general.file_type (enum llama_ftype, include/llama.h) -> recipe name
GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}


def _int(value: Any) -> int:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return max((int(v) for v in value), default=0)  # per-layer arrays: the widest layer
    return int(value)


def plausible(arch: Architecture, what: str) -> Architecture:
    problems = arch.problems()
    if problems:
        raise UsageError(f"{arch.name}: {what} describes an implausible model: {', '.join(problems[:3])}")
    return arch


def architecture_from_gguf(meta: Mapping[str, Any], tensor_shapes: Mapping[str, Sequence[int]],
                           name: str) -> Architecture:
    """Shape of a GGUF model from its metadata (``{arch}.block_count`` ...) and tensor shapes (ne0, ne1, ...)."""
    try:
        arch = _gguf_arch(meta, tensor_shapes, name)
    except (TypeError, ValueError, AttributeError, OverflowError) as err:
        raise UsageError(f"{name}: GGUF header has a malformed shape field ({err})") from err
    return plausible(arch, "the GGUF header")


def _gguf_arch(meta: Mapping[str, Any], tensor_shapes: Mapping[str, Sequence[int]], name: str) -> Architecture:
    arch = str(meta.get("general.architecture", ""))
    if not arch:
        raise UsageError(f"{name}: GGUF header has no general.architecture")

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    try:
        layers = _int(get("block_count"))
        hidden = _int(get("embedding_length"))
        heads = _int(get("attention.head_count"))
    except (TypeError, ValueError) as err:
        raise UsageError(f"{name}: GGUF header lacks the model shape ({arch}.block_count ...)") from err
    kv_heads = _int(get("attention.head_count_kv", heads))
    head_dim = _int(get("attention.key_length", hidden // max(1, heads)))
    embd = tensor_shapes.get("token_embd.weight")
    vocab = int(embd[1]) if embd and len(embd) > 1 else _int(get("vocab_size", 32000))
    experts = _int(get("expert_count", 0))
    kv_lora = _int(get("attention.kv_lora_rank", 0))
    swa = get("attention.sliding_window")
    every = _int(get("attention.sliding_window_pattern", _GGUF_SWA_EVERY.get(arch, 0))) if swa else 0
    return Architecture(
        name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        ff=_int(get("feed_forward_length", 0)), vocab=vocab, tied="output.weight" not in tensor_shapes,
        context=_int(get("context_length", 4096)), sliding_window=_int(swa) if swa else None, global_every=every,
        moe_experts=experts, moe_active=_int(get("expert_used_count", 0)),
        moe_ff=_int(get("expert_feed_forward_length", 0)), moe_shared=_int(get("expert_shared_count", 0)),
        dense_layers=_int(get("leading_dense_block_count", 0)), kv_lora=kv_lora,
        q_lora=_int(get("attention.q_lora_rank", 0)), rope_dim=_int(get("rope.dimension_count", 0)) if kv_lora else 0,
        gguf_arch=arch,
    )


def _first(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def _swa_every(config: Mapping[str, Any]) -> int:
    types = config.get("layer_types")
    if isinstance(types, list) and types and any("sliding" in str(t) for t in types):
        for i, kind in enumerate(types):
            if "full" in str(kind):
                return i + 1
        return 0
    pattern = config.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 0:
        return pattern
    model_type = str(config.get("model_type", ""))
    return {"gemma2": 2, "gemma3_text": 6, "gemma3": 6, "gpt_oss": 2, "cohere2": 4}.get(model_type, 0)


def architecture_from_hf_config(config: Mapping[str, Any], name: str) -> Architecture:
    """Shape of a Hugging Face model from its ``config.json`` (multimodal configs: the ``text_config``)."""
    try:
        arch = _hf_arch(config, name)
    except (TypeError, ValueError, AttributeError, OverflowError) as err:
        raise UsageError(f"{name}: config.json has a malformed shape field ({err})") from err
    return plausible(arch, "config.json")


def _hf_arch(config: Mapping[str, Any], name: str) -> Architecture:
    text = config.get("text_config")
    cfg: Mapping[str, Any] = {**config, **text} if isinstance(text, Mapping) else config
    try:
        layers = int(_first(cfg, "num_hidden_layers", "n_layer", "num_layers"))
        hidden = int(_first(cfg, "hidden_size", "n_embd", "d_model"))
        heads = int(_first(cfg, "num_attention_heads", "n_head"))
    except (TypeError, ValueError) as err:
        raise UsageError(f"{name}: config.json lacks num_hidden_layers / hidden_size / num_attention_heads") from err
    kv_heads = int(_first(cfg, "num_key_value_heads", "num_kv_heads", default=heads))
    head_dim = int(_first(cfg, "head_dim", default=hidden // max(1, heads)))
    experts = int(_first(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0) or 0)
    kv_lora = int(cfg.get("kv_lora_rank") or 0)
    swa = cfg.get("sliding_window")
    use_swa = cfg.get("use_sliding_window", True)
    every = _swa_every(cfg) if swa and use_swa else 0
    model_type = str(cfg.get("model_type", ""))
    return Architecture(
        name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
        head_dim=int(cfg.get("qk_nope_head_dim") or 0) + int(cfg.get("qk_rope_head_dim") or 0) if kv_lora else head_dim,
        ff=int(_first(cfg, "intermediate_size", "n_inner", default=4 * hidden)),
        vocab=int(_first(cfg, "vocab_size", default=32000)),
        tied=bool(_first(cfg, "tie_word_embeddings", default=False)),
        context=int(_first(cfg, "max_position_embeddings", "n_positions", "seq_length", default=4096)),
        sliding_window=int(swa or 0) if every else None, global_every=every,
        moe_experts=experts,
        moe_active=int(_first(cfg, "num_experts_per_tok", "num_experts_per_token", default=0)),
        moe_ff=int(_first(cfg, "moe_intermediate_size", "intermediate_size", default=0)) if experts else 0,
        moe_shared=int(cfg.get("n_shared_experts") or 0), dense_layers=int(cfg.get("first_k_dense_replace") or 0),
        kv_lora=kv_lora, q_lora=int(cfg.get("q_lora_rank") or 0), rope_dim=int(cfg.get("qk_rope_head_dim") or 0),
        nope_dim=int(cfg.get("qk_nope_head_dim") or 0), v_head_dim=int(cfg.get("v_head_dim") or 0),
        qkv_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
        gguf_arch=model_type or "llama",
    )


def quant_from_hf_config(config: Mapping[str, Any]) -> tuple[Quant, int]:
    """(weight format, group size) declared by ``config.json``: MLX ``quantization``, ``quantization_config``
    (AWQ, GPTQ, FP8, MXFP4), else the float ``torch_dtype``."""
    try:
        quant, group = _hf_quant(config)
    except (TypeError, ValueError, AttributeError, OverflowError) as err:
        raise UsageError(f"config.json has a malformed quantization field ({err})") from err
    if not 0 < quant.bits <= 32 or not 1 <= group <= 1 << 16:
        raise UsageError(f"config.json declares an implausible quantization: {quant.bits} bits, group size {group}")
    return quant, group


def _hf_quant(config: Mapping[str, Any]) -> tuple[Quant, int]:
    mlx = config.get("quantization")
    if isinstance(mlx, Mapping) and "bits" in mlx:
        bits = int(mlx["bits"])
        mode = str(mlx.get("mode", "affine"))
        label = "MLX-mxfp4" if mode == "mxfp4" else f"MLX-{bits}bit"
        return Quant(label, "mlx", bits), int(mlx.get("group_size", 64))
    qc = config.get("quantization_config")
    if isinstance(qc, Mapping):
        method = str(qc.get("quant_method", "")).lower()
        bits = int(qc.get("bits", qc.get("w_bit", 4)) or 4)
        if method == "awq":
            return Quant("AWQ-4bit", "awq", 4), int(qc.get("group_size", qc.get("q_group_size", 128)) or 128)
        if method == "gptq":
            return Quant(f"GPTQ-{bits}bit", "gptq", bits), int(qc.get("group_size", 128) or 128)
        if "fp8" in method:
            return Quant("FP8", "fp8", 8), 128
        if method == "mxfp4":
            return Quant("MXFP4_MOE", "gguf", 4.25), 32
    text = config.get("text_config")
    dtype = config.get("torch_dtype") or config.get("dtype") or (
        text.get("torch_dtype") if isinstance(text, Mapping) else None) or "bfloat16"
    return float_quant(str(dtype)), 64
