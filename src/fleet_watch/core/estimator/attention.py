"""Flash attention in llama.cpp: the settings a user or a command line gives, and what ``auto`` becomes.

Without flash attention llama.cpp's compute buffer holds the attention scores of one micro-batch against the
whole context (n_ctx x n_ubatch x n_head, f32), and on the CPU an f16 copy of them in the threads' work buffer;
with it, only an f16 mask (facts §A4.1, ``workingset._llama_cpp_compute``). Sources, from the llama.cpp vendored
in llama-cpp-python 0.3.36 (commit 0c1e570):

* ``-fa, --flash-attn [on|off|auto]`` (``common/arg.cpp``): on/enabled/true/1, off/disabled/false/0, auto/-1;
  the default is ``auto`` (``common/common.h``: ``flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO``). Builds before
  the value was added took a bare ``-fa``, meaning on.
* ``auto`` (``src/llama-context.cpp``, ``resolve_fused_ops``): llama.cpp reserves a graph with flash attention
  and keeps it only when every layer's FLASH_ATTN_EXT node runs on that layer's own device ("Flash Attention was
  auto, set to enabled"); a node the device cannot run falls back to the CPU and auto turns it off. The CPU
  backend runs every shape (``ggml-cpu``), so on a CPU auto is on. CUDA runs head sizes 40, 64, 72, 80, 96, 112,
  128 and 256 with equal K and V (``ggml-cuda/fattn.cu``, ``ggml_cuda_get_best_fattn_kernel``; 192, 320, 512
  and 576 only for some GQA ratios, so they are taken as off: the larger estimate). Metal runs 32 ... 576
  (``ggml-metal-device.m``).
* A quantized V cache turns ``auto`` on and makes ``off`` fail ("quantized V cache requires flash_attn to be
  enabled", ``llama_init_from_model``); Grok forces it off.
* llama-cpp-python: ``Llama(flash_attn=False)`` and its server's ``--flash_attn`` (default False,
  ``llama_cpp/server/settings.py``; values parsed by ``_parse_bool_arg`` in ``server/cli.py``): off.
"""

from __future__ import annotations

SETTINGS = ("on", "off", "auto")
ENGINES = ("llama_cpp", "ollama")  # engines whose compute buffer depends on it (both run llama.cpp's graph)

_LLAMA_CPP_VALUES = {"on": "on", "enabled": "on", "true": "on", "1": "on",
                     "off": "off", "disabled": "off", "false": "off", "0": "off",
                     "auto": "auto", "-1": "auto"}
_PYTHON_VALUES = {**dict.fromkeys(("1", "on", "t", "true", "y", "yes"), "on"),
                  **dict.fromkeys(("0", "off", "f", "false", "n", "no"), "off")}
_LLAMA_CPP_PYTHON = ("llama-cpp-python", "llama_cpp_python", "llama-cpp-py", "llama_cpp.server")
_QUANTIZED_KV = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
_CUDA_HEADS = frozenset((40, 64, 72, 80, 96, 112, 128, 256))
_METAL_HEADS = frozenset((32, 40, 48, 64, 72, 80, 96, 112, 128, 192, 256, 320, 512, 576))


def parse_llama_cpp(value: str) -> str | None:
    """llama.cpp's spelling of a ``--flash-attn`` value as on/off/auto; None when llama.cpp would refuse it."""
    return _LLAMA_CPP_VALUES.get(value)


def parse_python_bool(value: str) -> str | None:
    """llama-cpp-python server's ``--flash_attn`` value as on/off; None when it would refuse it."""
    return _PYTHON_VALUES.get(value.strip().lower())


def engine_default(framework_spelling: str | None) -> str:
    """What the engine does when nobody says: llama-cpp-python ``off``, llama-server (and Ollama) ``auto``."""
    if framework_spelling is not None and framework_spelling.strip().lower() in _LLAMA_CPP_PYTHON:
        return "off"
    return "auto"


def is_quantized_kv(kv_dtype: str) -> bool:
    return kv_dtype in _QUANTIZED_KV


def refusal(setting: str, kv_dtype: str, framework: str) -> str | None:
    """Why llama.cpp would not start with this combination (None: it would)."""
    if framework == "llama_cpp" and setting == "off" and is_quantized_kv(kv_dtype):
        return (f"--flash-attn off with a {kv_dtype} KV cache: llama.cpp refuses to start (a quantized V cache "
                "requires flash attention); use --flash-attn on or auto, or an f16 KV cache")
    return None


def resolve(setting: str, *, device: str, head_k: int, head_v: int, kv_dtype: str, gguf_arch: str) -> bool:
    """Whether llama.cpp runs with flash attention for ``setting`` (on, off or auto) on ``device``."""
    if gguf_arch == "grok":
        return False
    if setting != "auto":
        return setting == "on"
    if is_quantized_kv(kv_dtype):
        return True
    if device == "cuda":
        return head_k == head_v and head_k in _CUDA_HEADS
    if device == "apple":
        return head_k in _METAL_HEADS and head_k >= head_v
    return True  # the CPU backend runs every shape
