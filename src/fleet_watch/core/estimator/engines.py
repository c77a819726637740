"""What each inference engine loads, in one place: the framework checks, the weights a name resolves to, and the
quantizations worth suggesting all ask here.

llama.cpp, Ollama and Candle read GGUF files (a float type named for them is the F16/BF16 GGUF); Candle's quantized
loader has no i-quants (``GgmlDType`` in candle-core/src/quantized/mod.rs lists F32, F16, BF16, Q4_0..Q8_1 and
Q2K..Q8K). MLX reads its own quantized or float safetensors. vLLM, SGLang and transformers read float, AWQ, GPTQ,
FP8 and (vLLM experimentally) GGUF, not MLX's format.
"""

from __future__ import annotations

from fleet_watch.core.estimator.quant import Quant

GGUF_ENGINES = ("llama_cpp", "ollama", "candle")
_LOADS = {"llama_cpp": ("gguf",), "ollama": ("gguf",), "candle": ("gguf",), "mlx": ("mlx", "float"),
          "vllm": ("float", "awq", "gptq", "fp8", "gguf"), "sglang": ("float", "awq", "gptq", "fp8", "gguf"),
          "transformers": ("float", "awq", "gptq", "fp8", "gguf")}


def as_loaded(quant: Quant, framework: str | None) -> Quant:
    """The weights as ``framework`` holds them: a float format named for a GGUF engine is that GGUF file type."""
    if framework in GGUF_ENGINES and quant.kind == "float":
        return Quant(quant.label, "gguf", quant.bits)
    return quant


def refusal(quant: Quant, framework: str) -> str | None:
    """Why ``framework`` cannot load ``quant`` (None: it can; an unknown framework is not second-guessed)."""
    kinds = _LOADS.get(framework)
    if kinds is not None and quant.kind not in kinds:
        return f"{framework} cannot load {quant.label} weights (it loads: {', '.join(kinds)})"
    if framework == "candle" and quant.label.startswith("IQ"):
        return f"candle cannot load {quant.label} weights (its quantized loader has no i-quants)"
    return None


def loads(quant: Quant, framework: str) -> bool:
    return refusal(quant, framework) is None
