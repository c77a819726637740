"""Weight bytes of a model that is not on disk: llama.cpp's per-tensor type mix, or the MLX/AWQ/GPTQ/FP8 layouts.

The GGUF rules are a port (no code copied) of what ggml-org/llama.cpp ``src/llama-quant.cpp`` does when it
quantizes (functions ``llama_ftype_get_default_type``, ``llama_tensor_get_type_impl``, ``tensor_type_fallback``,
read at commit 007dbbf; see ``docs/estimator.md``). On Llama-3.1-8B, Qwen2.5-7B, Mistral-7B, Qwen2.5-0.5B they
reproduce published file sizes to within 0.2 % (bench/estimator_accuracy.py). The IQ-specific refinements
(imatrix-driven, e.g. attn_v of IQ2 files) are not ported: those files come out a few per cent low.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from fleet_watch.core.estimator.arch import Architecture, Tensor
from fleet_watch.core.estimator.quant import GGML_BLOCKS, Quant, bytes_per_weight_nongguf, ggml_bytes

_DEFAULT_TYPE = {
    "Q2_K": "Q2_K", "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
    "IQ3_M": "IQ3_S", "IQ3_XS": "IQ3_S", "IQ2_M": "IQ2_S", "MXFP4_MOE": "MXFP4",
}
_LOW_IQ = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M")
_K_FTYPES = ("Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q2_K": "Q4_0", "Q3_K": "Q4_0"}


def default_type(ftype: str) -> str:
    return _DEFAULT_TYPE.get(ftype, ftype)


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _shape_fallback(type_name: str, ne0: int) -> str:
    block = GGML_BLOCKS[type_name][0]
    if ne0 % block == 0:
        return type_name
    if ne0 % 32 != 0:
        return "F16"
    if type_name in _FALLBACK:
        return _FALLBACK[type_name]
    if type_name.startswith(("IQ", "TQ")):
        return "IQ4_NL"
    return "Q8_0"


class _Counters:
    """How many attention-V and FFN-down tensors there are, and how many were typed so far (llama.cpp's
    ``use_more_bits`` rule depends on the position)."""

    __slots__ = ("i_attn_v", "i_ffn_down", "n_attn_v", "n_ffn_down")

    def __init__(self, n_attn_v: int, n_ffn_down: int) -> None:
        self.n_attn_v, self.n_ffn_down = n_attn_v, n_ffn_down
        self.i_attn_v = self.i_ffn_down = 0


def _is_unquantized(t: Tensor) -> bool:
    return t.is_1d or t.name.endswith(".bias") or "norm" in t.name or "ffn_gate_inp" in t.name \
        or "attn_sinks" in t.name or "exp_probs_b" in t.name


def _rule(arch: Architecture, ftype: str, t: Tensor, c: _Counters) -> str:
    base = default_type(ftype)
    name = t.name
    if ftype == "MXFP4_MOE":
        return "MXFP4" if t.n_expert > 1 else "Q8_0"
    is_output = name == "output.weight" or (arch.tied and name == "token_embd.weight")
    if is_output:
        if ftype in _LOW_IQ:
            return "Q5_K"
        return base if base == "Q8_0" else "Q6_K"
    if name == "token_embd.weight":
        return "Q2_K" if ftype in _LOW_IQ else base
    if "attn_v.weight" in name or "attn_kv_b.weight" in name:
        i, n = c.i_attn_v, c.n_attn_v
        c.i_attn_v += 1
        gqa = arch.heads // max(1, arch.kv_heads)
        new = base
        if ftype == "Q2_K":
            new = "Q4_K" if gqa >= 4 else "Q3_K"
        elif ftype == "Q3_K_M":
            new = "Q5_K" if i < 2 else "Q4_K"
        elif ftype == "Q3_K_L":
            new = "Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
            new = "Q6_K"
        elif ftype == "Q4_K_S" and i < 4:
            new = "Q5_K"
        if arch.layers == 80 and not arch.is_moe and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"  # LLM_TYPE_70B: attn_v is 8x smaller than attn_q, so the extra bits are cheap
        if arch.moe_experts == 8 and ftype in _K_FTYPES:
            new = "Q8_0"
        return new
    if "attn_k.weight" in name:
        return "Q8_0" if arch.moe_experts == 8 and ftype in _K_FTYPES else base
    if "ffn_down" in name:
        i, n = c.i_ffn_down, c.n_ffn_down
        c.i_ffn_down += 1
        if ftype == "Q2_K":
            return "Q3_K"
        if ftype == "Q3_K_M":
            return "Q5_K" if i < n // 16 else "Q4_K"
        if ftype == "Q3_K_L":
            return "Q5_K"
        if ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
            return "Q6_K"
        if ftype == "Q4_K_S" and i < n // 8:
            return "Q5_K"
        return base
    if "attn_output.weight" in name:
        if arch.moe_experts == 8 and ftype in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", "IQ4_XS", "IQ3_S"):
            return "Q5_K"
        return {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ftype, base)
    if "attn_qkv.weight" in name:
        return {"Q3_K_M": "Q4_K", "Q3_K_L": "Q4_K", "Q4_K_M": "Q5_K", "Q5_K_M": "Q6_K"}.get(ftype, base)
    return base


def gguf_types(arch: Architecture, ftype: str) -> Iterable[tuple[Tensor, str]]:
    """(tensor, ggml type) for every tensor that ``llama-quantize <ftype>`` would write."""
    tensors = list(arch.tensors())
    quantize = ftype not in ("F32", "F16", "BF16")
    counters = _Counters(
        n_attn_v=sum(1 for t in tensors if "attn_v.weight" in t.name or "attn_kv_b.weight" in t.name
                     or "attn_qkv.weight" in t.name),
        n_ffn_down=sum(1 for t in tensors if "ffn_down" in t.name and t.name.endswith(".weight")),
    )
    for t in tensors:
        if _is_unquantized(t):
            yield t, "F32"
        elif not quantize:
            yield t, ftype
        else:
            yield t, _shape_fallback(_rule(arch, ftype, t, counters), t.ne0)


@lru_cache(maxsize=64)  # the alternatives ask again for the same shape and type (values: hashable tuples)
def gguf_weight_bytes(arch: Architecture, ftype: str) -> int:
    return sum(ggml_bytes(type_name, t.n_elements) for t, type_name in gguf_types(arch, ftype))


def weight_bytes(arch: Architecture, quant: Quant, *, group_size: int = 64) -> int:
    """Bytes of the weights of ``arch`` stored as ``quant``."""
    if quant.is_gguf:
        return gguf_weight_bytes(arch, quant.label)
    float_bytes = 2.0 if quant.bits <= 16 or quant.kind != "float" else 4.0
    if quant.kind == "float":
        return int(sum(t.n_elements for t in arch.tensors()) * float_bytes)
    qbytes = bytes_per_weight_nongguf(quant, group_size=group_size)
    total = 0.0
    for t in arch.tensors():
        if t.is_1d or t.name.endswith(".bias") or "ffn_gate_inp" in t.name:
            total += t.n_elements * 2.0
        elif quant.kind == "mlx":
            # mlx_lm.convert quantizes every Linear and the embedding whose width divides the group size.
            total += t.n_elements * (qbytes if t.ne0 % group_size == 0 else 2.0)
        elif t.name in ("token_embd.weight", "output.weight"):
            total += t.n_elements * 2.0  # AWQ/GPTQ/FP8 checkpoints keep embeddings and lm_head in 16 bits
        else:
            total += t.n_elements * qbytes
    return int(total)
