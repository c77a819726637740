"""``fleet estimate``: the memory working set of a model before it is launched."""

from __future__ import annotations

from typing import Any

import click

from fleet_watch.cli.context import open_fleet
from fleet_watch.cli.options import CONTEXT
from fleet_watch.errors import NotFound, UsageError
from fleet_watch.reports.fields import oneline


@click.command()
@click.option("--model", required=True, help="GGUF path, Hugging Face folder or repo id, model name, or a size (7B).")
@click.option("--quant", help="Quantization (Q4_K_M, IQ4_XS, Q8_0, 4bit, AWQ, GPTQ, FP8, BF16 ...).")
@click.option("--ctx", type=CONTEXT, help="Context tokens (default: the framework's or the model's own).")
@click.option("--kv-dtype", help="KV cache type: f16, q8_0, q4_0 (llama.cpp), fp8 (vLLM), mlx8/mlx4 (MLX).")
@click.option("--framework",
              help="llama_cpp, ollama, vllm, sglang, mlx, candle, transformers (default: from the format).")
@click.option("--parallel", type=int, default=1, show_default=True, help="Parallel sequences (slots).")
@click.option("--ram-mb", type=int, help="Plan for a machine with this much memory (MB) instead of this one.")
@click.option("--flash-attn", type=click.Choice(["on", "off", "auto"]),
              help="llama.cpp/Ollama flash attention (default: the engine's: llama-server auto, llama-cpp-python off).")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def estimate(model: str, quant: str | None, ctx: int | None, kv_dtype: str | None, framework: str | None,
             parallel: int, ram_mb: int | None, flash_attn: str | None, as_json: bool) -> int:
    """Will this model fit? Weights, KV cache, compute and overhead for the context you ask for.

    Exit 0 when it fits, 1 when it does not, 2 for bad input (also a model path that cannot be read), 3 when the
    model is not known (no file, cached repo, catalog name or size).
    """
    if not model.strip():
        raise UsageError("--model must not be empty")
    from fleet_watch.service.estimate import EstimateRequest, evaluate

    request = EstimateRequest(model=model, framework=framework, quant=quant, ctx=ctx, kv_dtype=kv_dtype,
                              parallel=parallel, ram_mb=ram_mb, flash_attn=flash_attn, machines=True)
    if ram_mb is not None:  # another machine: nothing registered here counts, so the registry is not opened
        from fleet_watch.service.estimate import settings_without_registry

        result = evaluate(settings_without_registry(), request)
    else:
        with open_fleet() as fleet:
            # Memory that live registered workloads firmly hold is not available, exactly as in the guard.
            allocated = fleet.budgets(fleet.ledger(), None)[0].allocated_mb
            result = evaluate(fleet.settings, request, allocated_mb=allocated, live_allocated=lambda: allocated)
    unknown = result["working_set"]["source"] == "insufficient_input"
    if as_json:
        from fleet_watch.cli.output import emit_json

        if unknown:  # a failure, with the keys every failure has (see the funnel in cli/__init__.py)
            err = NotFound(result["reason"])
            result = {**result, "allowed": False, "error": err.kind, "exit_code": int(err.exit_code)}
        emit_json(result)
    else:
        for line in human_lines(result):
            click.echo(oneline(line))  # a model file's own name is outside text: no terminal escapes
    if unknown:
        return int(NotFound.exit_code)
    return 0 if result["fits"] else 1


def human_lines(result: dict[str, Any]) -> list[str]:
    ws = result["working_set"]
    if ws["source"] == "insufficient_input":
        return ["UNKNOWN", f"  {ws['suggestion']}"]
    arch = result["architecture"] or {}
    mult = ws["overhead_multiplier"]
    flash = "" if ws.get("flash_attn") is None else \
        f", flash attention {ws['flash_attn']}" + (f" ({ws['flash_attn_setting']})"
                                                   if ws["flash_attn_setting"] == "auto" else "")
    lines = [
        "FITS" if result["fits"] else "DOES NOT FIT",
        f"Model: {str(arch.get('name'))[:120]} ({ws['model_size']}, {ws['quantization']}) from {ws['model_source']}"
        + ("" if ws["grounded"] else " [generic shape: grounded=false]"),
        f"Framework: {ws['framework']}{' (inferred)' if ws['framework_inferred'] else ''}, "
        f"context {ws['context_tokens']} tokens, KV {ws['kv_dtype']}, parallel {ws['parallel']}, device {ws['device']}"
        f"{flash}",
        "",
        f"  {'weights':<22}{ws['weights_mb']:>10} MB",
        f"  {'kv cache':<22}{ws['kv_cache_mb']:>10} MB",
        f"  {'compute/activations':<22}{ws['activations_mb']:>10} MB",
        f"  {'overhead multiplier':<22}{mult:>10}x on kv + compute",
        f"  {'fixed runtime':<22}{ws['fixed_overhead_mb']:>10} MB",
        f"  {'total':<22}{ws['total_mb']:>10} MB",
        "",
        f"Memory: {ws['memory_limit_mb']} MB ({ws['memory_origin']}) - reserve {ws['reserve_mb']} MB"
        f" - allocated {ws['allocated_mb']} MB = {ws['available_after_reserve_mb']} MB available",
    ]
    if ws.get("claim_mb") is not None:
        lines.append(f"  {ws['framework']} claims {ws['claim_mb']} MB (gpu_memory_utilization x device memory); "
                     f"the model needs {ws['kv_min_mb']} MB of KV for one full-length request")
    fits_on = result.get("fits_on") or []
    if fits_on:
        kind = {"apple": "Mac", "cuda": "GPU"}.get(fits_on[0]["device"], "RAM")
        yes = [m["memory_gb"] for m in fits_on if m["fits"]]
        no = [m["memory_gb"] for m in fits_on if not m["fits"]]
        where = f"{min(yes)} GB and up" if yes and all(g > max(no, default=0) for g in yes) else \
            ", ".join(f"{g} GB" for g in yes) or f"none of {fits_on[0]['memory_gb']}-{fits_on[-1]['memory_gb']} GB"
        lines.append(f"Fits on ({kind}, same context, no other workloads): {where}")
    if not result["fits"]:
        lines.append(f"Does not fit: {result['detail']}")
        for alt in result["alternatives"]:
            if alt["kind"] == "quantization":
                lines.append(f"  Largest quantization that fits: {alt['quantization']} "
                             f"(~{alt['weights_mb']} MB weights, ~{alt['total_mb']} MB total)")
            else:
                lines.append(f"  Longest context that fits: {alt['context_tokens']} tokens "
                             f"(~{alt['total_mb']} MB total)")
        lines.append(f"Suggestion: {ws['suggestion']}")
    return lines
