"""How right is the working-set estimate? Measured against a real llama.cpp and against published file sizes.

Needs the optional extra: ``pip install -e '.[bench]'`` (llama-cpp-python; builds from source, ~15 min on 2 cores).

1. Generates small random-weight llama-architecture GGUF models with ``gguf.GGUFWriter`` (F16, Q8_0, Q4_0;
   12 layers, hidden 1024, 16 heads, 4 KV heads, FFN 2816, a synthetic 32000-token SPM vocabulary).
2. For each model, context length, KV type and flash-attention setting, starts a fresh Python child that loads
   the model with llama-cpp-python (2 threads, ubatch 512), evaluates a prompt (``full``: the context less 8
   tokens, so that the attention of the last micro-batch spans the whole cache, the worst case the estimate is
   for; or 512 tokens where a full prefill would take too long on 2 cores), generates 8 tokens, and reports its
   peak RSS (VmHWM) and llama.cpp's own KV and compute buffer sizes from its log. The estimate for the same inputs
   comes from ``fleet_watch.service.estimate.evaluate`` (framework llama_cpp, a CPU, ``--flash-attn`` as run).
   Without flash attention the compute figure includes ggml-cpu's f16 copy of the scores, which llama.cpp's log
   line does not count (facts §A4.1).
3. Compares catalog weight predictions with published GGUF file sizes (sources listed in PUBLISHED).

Usage: ``python bench/estimator_accuracy.py [--workdir DIR] [--quick]``. Prints one table per part.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

# (catalog name, quantization, published file size in bytes (as shown, GB = 1e9), source)
PUBLISHED: list[tuple[str, str, float, str]] = [
    ("Meta-Llama-3.1-8B-Instruct", "Q4_K_M", 4.92e9,
     "huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf (4.92 GB)"),
    ("Meta-Llama-3.1-8B-Instruct", "Q3_K_M", 4.02e9,
     "huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF Meta-Llama-3.1-8B-Instruct-Q3_K_M.gguf (4.02 GB)"),
    ("Qwen2.5-7B-Instruct", "Q4_K_M", 4.68e9,
     "huggingface.co/bartowski/Qwen2.5-7B-Instruct-GGUF Qwen2.5-7B-Instruct-Q4_K_M.gguf (4.68 GB)"),
    ("Mistral-7B-Instruct-v0.3", "Q4_K_M", 4.37e9,
     "huggingface.co/mmnga/Mistral-7B-Instruct-v0.3-gguf Mistral-7B-Instruct-v0.3-Q4_K_M.gguf (4.37 GB)"),
    ("Mistral-7B-Instruct-v0.3", "Q5_K_M", 5.14e9,
     "huggingface.co/mmnga/Mistral-7B-Instruct-v0.3-gguf Mistral-7B-Instruct-v0.3-Q5_K_M.gguf (5.14 GB)"),
    ("Mistral-7B-Instruct-v0.3", "Q3_K_M", 3.52e9,
     "huggingface.co/DevQuasar/Mistral-7B-Instruct-v0.3-GGUF Mistral-7B-Instruct-v0.3.Q3_K_M.gguf (3.52 GB)"),
    ("Qwen2.5-0.5B-Instruct", "Q4_K_M", 398e6,
     "huggingface.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF Qwen2.5-0.5B-Instruct-Q4_K_M.gguf (398 MB)"),
    ("Qwen2.5-0.5B-Instruct", "Q3_K_M", 355e6,
     "huggingface.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF Qwen2.5-0.5B-Instruct-Q3_K_M.gguf (355 MB)"),
    ("Qwen2.5-0.5B-Instruct", "Q5_K_M", 420e6,
     "huggingface.co/QuantFactory/Qwen2.5-0.5B-Instruct-GGUF Qwen2.5-0.5B-Instruct.Q5_K_M.gguf (420 MB)"),
]

SHAPE = {"layers": 12, "hidden": 1024, "heads": 16, "kv_heads": 4, "ff": 2816, "vocab": 32000}

CHILD = r"""
import json, re, sys, time
import llama_cpp
path, n_ctx, kv, flash, n_prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "on", int(sys.argv[5])
types = {"f16": 1, "q8_0": 8, "q4_0": 2}
llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=2, n_batch=512, n_ubatch=512, flash_attn=flash,
                      type_k=types[kv], type_v=types[kv], verbose=True, seed=1)
tokens = [(i * 7919) % 31000 + 300 for i in range(n_prompt)]
llm.eval(tokens)
for _ in range(8):
    tok = llm.sample(temp=0.0)
    llm.eval([tok])
hwm = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) * 1024
print(json.dumps({"peak_rss": hwm}))
"""


def write_model(path: Path, qtype: str) -> None:
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    s = SHAPE
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"bench-{qtype}")
    w.add_context_length(32768)
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ff"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_dimension_count(s["hidden"] // s["heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type({"F16": 1, "Q8_0": 7, "Q4_0": 2}[qtype])
    w.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{i:02X}>" for i in range(256)]]
    tokens += [f"\u2581t{i}" for i in range(s["vocab"] - len(tokens))]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([2, 3, 3, *[6] * 256, *[1] * (len(tokens) - 259)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    kind = getattr(gguf.GGMLQuantizationType, qtype)

    def add(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)
        if qtype == "F16":
            w.add_tensor(name, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, kind)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=kind)

    def norm(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    h, kvw = s["hidden"], s["kv_heads"] * (s["hidden"] // s["heads"])
    add("token_embd.weight", s["vocab"], h)
    for i in range(s["layers"]):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", h)
        add(p + "attn_q.weight", h, h)
        add(p + "attn_k.weight", kvw, h)
        add(p + "attn_v.weight", kvw, h)
        add(p + "attn_output.weight", h, h)
        norm(p + "ffn_norm.weight", h)
        add(p + "ffn_gate.weight", s["ff"], h)
        add(p + "ffn_up.weight", s["ff"], h)
        add(p + "ffn_down.weight", h, s["ff"])
    norm("output_norm.weight", h)
    add("output.weight", s["vocab"], h)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def measure(path: Path, ctx: int, kv: str, flash: str, n_prompt: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(ctx), kv, flash, str(n_prompt)],
                          capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"llama.cpp child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    m = re.search(r"llama_kv_cache(?:_unified)?: size =\s+([\d.]+) MiB", proc.stderr)
    m2 = re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", proc.stderr)
    result["kv_mib_logged"] = float(m.group(1)) if m else None
    result["compute_mib_logged"] = float(m2[-1]) if m2 else None
    return result


def settings() -> Any:
    """A machine as large as any case needs, with the shipped framework overheads (``Settings``' defaults)."""
    from fleet_watch.config import Settings

    return Settings(home=Path(tempfile.gettempdir()), gpu_total_mb=1 << 20, gpu_reserve_mb=0, preferred_ports=(),
                    physical_ram_mb=1 << 20)


# (weights, context, KV type, flash attention, prompt): "full" fills the context; 512 where that takes too long.
CASES: list[tuple[str, int, str, str, str]] = [
    ("F16", 2048, "f16", "on", "full"), ("F16", 2048, "f16", "off", "full"),
    ("F16", 8192, "f16", "on", "full"), ("F16", 8192, "f16", "off", "full"),
    ("Q8_0", 8192, "f16", "on", "full"), ("Q8_0", 8192, "f16", "off", "full"),
    ("Q4_0", 8192, "f16", "on", "full"), ("Q4_0", 8192, "f16", "off", "full"),
    ("F16", 8192, "q8_0", "on", "full"), ("Q4_0", 8192, "q4_0", "on", "full"),
    ("F16", 32768, "f16", "on", "512"), ("Q8_0", 32768, "f16", "on", "512"), ("Q4_0", 32768, "f16", "on", "512"),
]
QUICK = [("F16", 2048, "f16", "on", "full"), ("F16", 2048, "f16", "off", "full")]


def part_llama_cpp(workdir: Path, quick: bool) -> list[float]:
    """One row per case; returns the total errors (estimate / measured peak - 1)."""
    from fleet_watch.service.estimate import EstimateRequest, evaluate

    print("\n## 1. Estimate vs llama.cpp (llama-cpp-python, CPU, 2 threads, ubatch 512)\n")
    print("| model | ctx | kv | flash attn | prompt | est. KV MiB | llama.cpp KV MiB | est. compute MiB "
          "| llama.cpp compute MiB | est. total MiB | measured peak RSS MiB | total err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    errors: list[float] = []
    for qtype, ctx, kv, flash, prompt in QUICK if quick else CASES:
        path = workdir / f"bench-{qtype}.gguf"
        if not path.exists():
            t0 = time.monotonic()
            write_model(path, qtype)
            print(f"<!-- wrote {path.name} in {time.monotonic() - t0:.0f}s -->", flush=True)
        request = EstimateRequest(framework="llama_cpp", model=str(path), ctx=ctx, kv_dtype=kv, flash_attn=flash)
        est = evaluate(settings(), request)["working_set"]
        assert est["flash_attn"] == flash, est
        got = measure(path, ctx, kv, flash, ctx - 8 if prompt == "full" else int(prompt))
        peak = got["peak_rss"] / MIB
        err = est["total_mb"] / peak - 1
        errors.append(err)
        print(f"| {qtype} | {ctx} | {kv} | {flash} | {prompt} | {est['kv_min_mb']} | {got['kv_mib_logged']} "
              f"| {est['activations_mb']} | {got['compute_mib_logged']} | {est['total_mb']} | {peak:.0f} "
              f"| {100 * err:+.1f}% |", flush=True)
    return errors


def part_published() -> None:
    from fleet_watch.core.estimator.arch import architecture_from_mapping
    from fleet_watch.core.estimator.mix import gguf_weight_bytes
    from fleet_watch.core.estimator.naming import match_catalog
    from fleet_watch.service.estimate import catalog

    print("\n## 2. Catalog weights vs published GGUF file sizes\n")
    print("| model | quant | catalog row | predicted tensor bytes | published file | error | source |")
    print("|---|---|---|---|---|---|---|")
    for name, quant, size, source in PUBLISHED:
        match = match_catalog(f"{name}-{quant}", catalog())
        if match is None:
            print(f"| {name} | {quant} | NOT FOUND | | | | {source} |")
            continue
        weights = gguf_weight_bytes(architecture_from_mapping(match.key, match.row), quant)
        print(f"| {name} | {quant} | {match.key} | {weights:,} | {size:,.0f} | {100 * (weights / size - 1):+.2f}% "
              f"| {source} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to keep the generated GGUF files (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="two llama.cpp cases only (2048 tokens, on and off)")
    args = parser.parse_args()
    part_published()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("\nllama-cpp-python is not installed (pip install -e '.[bench]'): part 1 skipped", file=sys.stderr)
        return 3
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        errors = part_llama_cpp(args.workdir, args.quick)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            errors = part_llama_cpp(Path(tmp), args.quick)
    worst = max(errors, key=abs)
    print(f"\nTotal vs measured peak: {100 * min(errors):+.1f}% ... {100 * max(errors):+.1f}% "
          f"(worst {100 * worst:+.1f}%; target within 10%)")
    return 0 if abs(worst) <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
