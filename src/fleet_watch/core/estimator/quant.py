"""Quantization formats: ggml block sizes, the names users type, and the KV cache types.

Block sizes are those of ggml-org/ggml ``src/ggml-common.h`` (``static_assert(sizeof(block_*) == ...)``), the same
table as ``GGML_QUANT_SIZES`` in the ``gguf`` Python package 0.19.0 (copied here so that a catalog lookup does not
import numpy; ``tests/estimator`` checks the copy against the package).
"""

from __future__ import annotations

import re
from typing import NamedTuple

# ggml type -> (elements per block, bytes per block)
GGML_BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "F64": (1, 8),
    "I8": (1, 1), "I16": (1, 2), "I32": (1, 4), "I64": (1, 8),
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q8_1": (32, 40),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
    "Q8_K": (256, 292),
    "IQ2_XXS": (256, 66), "IQ2_XS": (256, 74), "IQ2_S": (256, 82), "IQ3_XXS": (256, 98), "IQ3_S": (256, 110),
    "IQ1_S": (256, 50), "IQ1_M": (256, 56), "IQ4_NL": (32, 18), "IQ4_XS": (256, 136),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17), "NVFP4": (64, 36), "Q1_0": (128, 18),
}


def ggml_bytes(type_name: str, n_elements: int) -> int:
    """Bytes that ``n_elements`` weights take in ggml type ``type_name`` (rows are whole blocks)."""
    block, size = GGML_BLOCKS[type_name]
    return -(-n_elements // block) * size


# KV cache element types accepted by llama.cpp's -ctk/-ctv (common/arg.cpp): bytes per element.
KV_TYPES: dict[str, float] = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0,
    "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32,
    # vLLM / SGLang --kv-cache-dtype fp8 (e4m3/e5m2): one byte per element (vllm/v1/kv_cache_interface.py).
    "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0,
    # mlx-lm --kv-bits 8/4: affine groups of 64 with an f16 scale and bias (mlx.core.quantize docs).
    "mlx8": 8.5 / 8, "mlx4": 4.5 / 8,
}


def normalize_kv_dtype(text: str) -> str | None:
    key = text.strip().lower().replace("-", "_")
    aliases = {"fp16": "f16", "half": "f16", "float16": "f16", "bfloat16": "bf16", "fp32": "f32", "float32": "f32",
               "auto": "f16", "q8": "q8_0", "q4": "q4_0", "int8": "q8_0", "8bit": "mlx8", "4bit": "mlx4"}
    key = aliases.get(key, key)
    return key if key in KV_TYPES else None


class Quant(NamedTuple):
    """A weight format. ``kind`` is "gguf" (a llama.cpp file type), "mlx", "awq", "gptq", "fp8" or "float"."""

    label: str  # canonical spelling: Q4_K_M, IQ4_XS, MXFP4_MOE, MLX-4bit, AWQ-4bit, GPTQ-8bit, FP8, BF16, F16, F32
    kind: str
    bits: float  # nominal bits of the quantized matrices (group scales come on top)

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"


# llama.cpp file types (tools/quantize/quantize.cpp QUANT_OPTIONS) with their nominal bits.
GGUF_FTYPES: dict[str, float] = {
    "F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K_M": 5.5, "Q5_K_S": 5.5, "Q5_1": 6.0,
    "Q5_0": 5.5, "Q4_K_M": 4.5, "Q4_K_S": 4.5, "Q4_1": 5.0, "Q4_0": 4.5, "IQ4_NL": 4.5, "IQ4_XS": 4.25,
    "MXFP4_MOE": 4.25, "Q3_K_L": 3.4375, "Q3_K_M": 3.4375, "Q3_K_S": 3.4375, "IQ3_M": 3.4375, "IQ3_S": 3.4375,
    "IQ3_XS": 3.0625, "IQ3_XXS": 3.0625, "Q2_K": 2.625, "Q2_K_S": 2.625, "IQ2_M": 2.5625, "IQ2_S": 2.5625,
    "IQ2_XS": 2.3125, "IQ2_XXS": 2.0625, "IQ1_M": 1.75, "IQ1_S": 1.5625, "TQ2_0": 2.0625, "TQ1_0": 1.6875,
}

# The ladder that alternatives walk down, largest first (most used llama.cpp recipes).
GGUF_LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_XXS", "Q2_K", "IQ2_XXS", "IQ1_M")
MLX_LADDER = ("BF16", "MLX-8bit", "MLX-6bit", "MLX-4bit", "MLX-3bit", "MLX-2bit")
HF_LADDER = ("BF16", "FP8", "GPTQ-8bit", "AWQ-4bit")

_GGUF_RE = re.compile(
    r"(?<![a-z0-9])(i?q[1-8](?:[_\-]?k)?(?:[_\-]?(?:xxs|xs|s|m|l|nl|0|1))?|mxfp4(?:[_\-]moe)?|tq[12][_\-]?0"
    r"|bf16|f16|fp16|f32|fp32)(?![a-z0-9])")
_MLX_RE = re.compile(r"(?<![a-z0-9])([2-8])[_\-]?bits?(?![a-z0-9])")


def _canonical_gguf(token: str) -> str | None:
    t = token.upper().replace("-", "_").replace("FP16", "F16").replace("FP32", "F32")
    if t in GGUF_FTYPES:
        return t
    compact = t.replace("_", "")
    for name in GGUF_FTYPES:
        if name.replace("_", "") == compact:
            return name
    if re.fullmatch(r"Q[2-6]_?K", t):  # a bare K-quant means its _M recipe, except Q6_K, which has one
        base = t.replace("_", "")[:-1] + "_K"
        return base if base in GGUF_FTYPES else base + "_M"
    if t == "MXFP4":
        return "MXFP4_MOE"
    return None


def parse_quant(text: str) -> Quant | None:
    """The weight format named in ``text`` (a model name, a file name or a --quant value), or None."""
    low = text.lower()
    if re.search(r"(?<![a-z0-9])awq(?![a-z0-9])", low):
        return Quant("AWQ-4bit", "awq", 4)
    if re.search(r"(?<![a-z0-9])gptq(?![a-z0-9])", low):
        m = re.search(r"gptq[_\-]?int([48])|int([48])[_\-]?gptq|gptq[_\-]([48])[_\-]?bit", low)
        bits = int(next(g for g in m.groups() if g)) if m else 4
        return Quant(f"GPTQ-{bits}bit", "gptq", bits)
    if re.search(r"(?<![a-z0-9])fp8(?:[_\-](?:dynamic|e4m3|e5m2))?(?![a-z0-9])", low):
        return Quant("FP8", "fp8", 8)
    mlx = _MLX_RE.search(low)
    if mlx:
        return Quant(f"MLX-{mlx.group(1)}bit", "mlx", int(mlx.group(1)))
    if re.search(r"(?<![a-z0-9])mxfp4(?![a-z0-9])", low) and "mlx" in low:
        return Quant("MLX-mxfp4", "mlx", 4)
    candidates = [c for c in (_canonical_gguf(m.group(1)) for m in _GGUF_RE.finditer(low)) if c]
    if candidates:
        label = candidates[-1]  # the last one: "llama-f16-q4_k_m" names the result, not the source
        if label in ("F16", "BF16", "F32") and not re.search(r"gguf", low):
            return Quant(label, "float", GGUF_FTYPES[label])
        return Quant(label, "gguf", GGUF_FTYPES[label])
    return None


def quant_from_label(label: str) -> Quant:
    """The inverse of ``Quant.label`` for the ladders above."""
    if label.startswith("MLX-"):
        bits = label[4:-3]
        return Quant(label, "mlx", 4 if bits == "mxfp4" else int(bits))
    if label.startswith("AWQ-"):
        return Quant(label, "awq", 4)
    if label.startswith("GPTQ-"):
        return Quant(label, "gptq", int(label[5:-3]))
    if label == "FP8":
        return Quant(label, "fp8", 8)
    return Quant(label, "gguf", GGUF_FTYPES[label])


def float_quant(dtype: str) -> Quant:
    """A Hugging Face ``torch_dtype`` as a Quant (bfloat16 -> BF16)."""
    d = dtype.lower()
    if "32" in d:
        return Quant("F32", "float", 32)
    if "bf" in d or "bfloat" in d:
        return Quant("BF16", "float", 16)
    return Quant("F16", "float", 16)


def bytes_per_weight_nongguf(quant: Quant, *, group_size: int = 64) -> float:
    """Bytes per quantized weight for formats that are not llama.cpp files.

    * MLX affine: ``bits`` + a scale and a bias per group in f16 (mlx.core.quantize: 4-bit g64 = 4.5 bpw);
      mxfp4: groups of 32 with an e8m0 scale (4.25 bpw).
    * AWQ / GPTQ: groups of 128 with an f16 scale and a packed ``bits``-wide zero point (AutoAWQ / GPTQ defaults).
    * FP8: one byte, per-channel scales are negligible.
    """
    if quant.kind == "mlx":
        if quant.label == "MLX-mxfp4":
            return 4.25 / 8
        return (quant.bits + 32 / group_size) / 8
    if quant.kind in ("awq", "gptq"):
        return (quant.bits + (16 + quant.bits) / 128) / 8
    if quant.kind == "fp8":
        return 1.0
    return quant.bits / 8
