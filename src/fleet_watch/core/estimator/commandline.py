"""What a model server's command line says: framework, model, context, KV type, parallel slots, flash attention."""

from __future__ import annotations

import re
import shlex
from typing import NamedTuple

from fleet_watch.core.estimator import attention
from fleet_watch.core.estimator.quant import normalize_kv_dtype


class ServerCommand(NamedTuple):
    framework: str
    model: str | None
    ctx: int | None = None
    kv_dtype: str | None = None
    parallel: int = 1
    quant: str | None = None
    gpu_memory_utilization: float | None = None
    flash_attn: str | None = None  # on, off, auto; None: not said (the engine's default applies)


_MODEL_FLAGS = ("-m", "--model", "--model-path", "--model_path", "--model-id", "-hf", "--hf-repo")
_CTX_FLAGS = {"llama_cpp": ("-c", "--ctx-size", "--n_ctx", "--n-ctx"), "ollama": (),
              "vllm": ("--max-model-len", "--max_model_len"), "sglang": ("--context-length", "--context_length"),
              "mlx": ("--max-kv-size",), "candle": ("--sample-len",), "transformers": ()}


def _framework(argv: list[str]) -> str | None:
    joined = " ".join(argv).lower()
    names = [re.split(r"[\\/]", a.lower())[-1] for a in argv[:3]]
    if any(n.startswith(("llama-server", "llama-cli", "llama-run", "server")) and "llama" in joined for n in names) \
            or "llama_cpp.server" in joined:
        return "llama_cpp"
    if any(n == "ollama" for n in names):
        return "ollama"
    if "sglang" in joined:
        return "sglang"
    if any(n == "vllm" for n in names) or "vllm.entrypoints" in joined:
        return "vllm"
    if re.search(r"\bmlx_lm\b|\bmlx_vlm\b|mlx_lm\.server|mlx_lm\.generate", joined):
        return "mlx"
    if any(re.match(r"(candle|cake)([-_].*)?$", n) for n in names):
        return "candle"
    return None


def _flag(argv: list[str], flags: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _without_interpreter_module(argv: list[str]) -> list[str]:
    """``python -m sglang.launch_server --model-path M``: the interpreter's own ``-m`` names a module, not the model.
    Only an ``-m`` among the interpreter's options counts (``python3 -u -m x``), not one after a script's path."""
    if not re.match(r"^python(\d+(\.\d+)?)?$", re.split(r"[\\/]", argv[0])[-1]):
        return argv
    for i in range(1, len(argv)):
        if argv[i] == "-m":
            return argv[i + 1:]
        if not argv[i].startswith("-") or argv[i] == "-c":
            break
    return argv


_FA_FLAGS = ("-fa", "--flash-attn")


def _llama_server_flash_attn(argv: list[str]) -> str | None:
    """``-fa``/``--flash-attn`` as llama-server reads it: with a value (on/off/auto and llama.cpp's other
    spellings), or bare as older builds took it (on). The last one wins; a value llama.cpp would refuse means the
    server did not start with it, so it says nothing."""
    found: str | None = None
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag not in _FA_FLAGS:
            continue
        if eq:
            found = attention.parse_llama_cpp(value)
            continue
        following = argv[i + 1] if i + 1 < len(argv) else None
        parsed = attention.parse_llama_cpp(following) if following is not None else None
        if parsed is not None:
            found = parsed
        elif following is None or following.startswith("-"):
            found = "on"  # a bare -fa (builds before it took a value)
        else:
            found = None
    return found


def _python_server_flash_attn(argv: list[str]) -> str:
    """llama-cpp-python's server: ``--flash_attn <bool>``, off unless said (``server/settings.py``)."""
    value = _flag(argv, ("--flash_attn", "--flash-attn"))
    parsed = attention.parse_python_bool(value) if value is not None else None
    return parsed or "off"


def parse_command(cmdline: str) -> ServerCommand | None:
    """The server in ``cmdline``, or None when it is not a model server this module knows."""
    try:
        argv = shlex.split(cmdline)
    except ValueError:
        argv = cmdline.split()
    if not argv:
        return None
    fw = _framework(argv)
    argv = _without_interpreter_module(argv)
    if fw is None:
        return None
    python_server = fw == "llama_cpp" and "llama_cpp.server" in " ".join(argv).lower()
    # ``python -m llama_cpp.server``: that -m names the module; the model is --model (server/settings.py)
    model = _flag(argv, ("--model",) if python_server else _MODEL_FLAGS)
    if model is None and fw in ("vllm", "ollama"):
        verbs = ("serve", "run") if fw == "vllm" else ("run",)
        for i, arg in enumerate(argv[:-1]):
            if arg in verbs and not argv[i + 1].startswith("-"):
                model = argv[i + 1]
                break
    ctx = _int(_flag(argv, _CTX_FLAGS.get(fw, ())))
    if ctx is not None and ctx <= 0:
        ctx = None  # llama-server -c 0: the model's own context
    kv = _flag(argv, ("-ctk", "--cache-type-k", "--kv-cache-dtype"))
    if fw == "mlx":
        bits = _flag(argv, ("--kv-bits",))
        kv = f"mlx{bits}" if bits in ("4", "8") else None
    parallel = _int(_flag(argv, ("-np", "--parallel", "--max-num-seqs"))) if fw == "llama_cpp" else None
    util = _flag(argv, ("--gpu-memory-utilization", "--mem-fraction-static"))
    try:
        utilization = float(util) if util is not None else None
    except ValueError:
        utilization = None
    if utilization is not None and not 0 < utilization <= 1:
        utilization = None
    flash: str | None = None
    if fw == "llama_cpp":
        flash = _python_server_flash_attn(argv) if python_server else _llama_server_flash_attn(argv)
        if flash == "off" and kv is not None and attention.is_quantized_kv(normalize_kv_dtype(kv) or ""):
            # A running server with -fa off has an f16 V cache (llama.cpp refuses a quantized one without flash
            # attention): -ctk quantized only the K half. The estimate takes both halves as f16, the larger.
            kv = None
    return ServerCommand(fw, model, ctx, kv, max(1, parallel or 1), None, utilization, flash)
