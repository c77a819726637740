"""``fleet guard`` (the agent contract) and ``fleet check`` (the same decisions, one line each)."""

from __future__ import annotations

from typing import Any

import click

from fleet_watch.cli.context import current_session, open_fleet
from fleet_watch.cli.options import CONTEXT, DEVICE, MB, PORT
from fleet_watch.cli.output import emit_json
from fleet_watch.errors import UsageError
from fleet_watch.service.preflight import GuardRequest, GuardResult, evaluate


def _evaluate(request: GuardRequest) -> GuardResult:
    with open_fleet() as fleet:
        return evaluate(fleet, request)


@click.command()
@click.option("--port", type=PORT, help="TCP port you are about to bind.")
@click.option("--repo", help="Repository (directory) you are about to write to.")
@click.option("--gpu", type=MB, help="GPU memory (MB) you are about to claim.")
@click.option("--gpu-device", type=DEVICE, help="NVIDIA device index of the claim (multi-GPU machines).")
@click.option("--framework", help="Inference framework hint (candle, vllm, mlx, ollama, llama_cpp, ...).")
@click.option("--model", help="Model: GGUF path, Hugging Face folder or repo id, name (qwen2.5-7B-Q4_K_M) or size.")
@click.option("--ctx", type=CONTEXT, help="Context tokens for the working set (default: the framework's or model's).")
@click.option("--kv-dtype", help="KV cache type: f16, q8_0, q4_0 (llama.cpp), fp8 (vLLM), mlx8/mlx4 (MLX).")
@click.option("--ram-mb", type=MB, help="Check against a machine with this much memory (MB) instead of this one.")
@click.option("--flash-attn", type=click.Choice(["on", "off", "auto"]), help="llama.cpp flash attention.")
@click.option("--session-id", help="Your session id (default: $FLEET_SESSION_ID).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON contract.")
def guard(port: int | None, repo: str | None, gpu: int | None, gpu_device: int | None, framework: str | None,
          model: str | None, ctx: int | None, kv_dtype: str | None, ram_mb: int | None, flash_attn: str | None,
          session_id: str | None, as_json: bool) -> int:
    """Pre-flight: may I use this port, repo and GPU memory, and does this model fit? Exit 0 = allowed, 1 = denied."""
    result = _evaluate(GuardRequest(port=port, repo=repo, gpu_mb=gpu, gpu_device=gpu_device, framework=framework,
                                    model=model, ctx=ctx, kv_dtype=kv_dtype, ram_mb=ram_mb, flash_attn=flash_attn,
                                    session_id=current_session(session_id)))
    if as_json:
        emit_json(result.to_dict())
    else:
        for line in human_lines(result):
            click.echo(line)
    return 0 if result.allowed else 1


def human_lines(result: GuardResult) -> list[str]:
    """Each check once, its reason once (the reason already names the resource), wrapped at 80 columns."""
    lines = ["ALLOW" if result.allowed else "DENY"]
    checks, state = result.checks, result.state
    port = checks.get("port")
    if port is not None:
        lines += wrap(f"Port {result.request['port']}: available" if port["allowed"] else f"Port: {port['reason']}")
        if not port["allowed"] and port["suggested_ports"]:
            lines.append("  Suggested ports: " + ", ".join(map(str, port["suggested_ports"])))
    repo = checks.get("repo")
    if repo is not None:
        lines += wrap("Repo: " + (f"available {result.request['repo_dir']}" if repo["allowed"] else repo["reason"]))
    gpu = checks.get("gpu")
    if gpu is not None:
        if gpu["allowed"]:
            lines.append(f"GPU {gpu['requested_mb']}MB: available ({gpu['available_mb']}MB free)")
        else:
            lines += wrap(f"GPU: {gpu.get('detail') or gpu['reason']}")
        if gpu.get("working_set") is not None:
            lines += [w for line in working_set_lines(gpu) for w in wrap(line)]
    budget = state["gpu_budget"]
    lines.append(f"GPU budget: {max(0, budget['available_mb'])}MB available, {budget['allocated_mb']}MB claimed")
    if state["safe_ports"]:
        lines.append("Open ports: " + ", ".join(map(str, state["safe_ports"])))
    for repo_dir in state["locked_repos"]:
        lines += wrap(f"Locked repo: {repo_dir}")
    return lines


def wrap(line: str, width: int = 80) -> list[str]:
    """One logical line as terminal lines of at most ``width`` columns, continuations indented."""
    if len(line) <= width:
        return [line]
    import textwrap

    return textwrap.wrap(line, width, subsequent_indent="    ", break_long_words=True, break_on_hyphens=False)


def working_set_lines(gpu: dict[str, Any]) -> list[str]:
    ws = gpu["working_set"]
    if ws["source"] == "insufficient_input":
        return [f"  Working set: unknown. {ws['suggestion']}"]
    shape = "" if ws["grounded"] else " [generic shape]"
    lines = [
        f"  Model: {ws['model']} ({ws['model_size']}, {ws['quantization']}), {ws['framework']}, "
        f"context {ws['context_tokens']}, KV {ws['kv_dtype']}{shape}",
        f"  Working set: {ws['total_mb']}MB = weights {ws['weights_mb']} + kv_cache {ws['kv_cache_mb']} + "
        f"activations {ws['activations_mb']} (kv + activations x {ws['overhead_multiplier']}) + runtime "
        f"{ws['fixed_overhead_mb']}",
        f"  Physical RAM available after reserve: {ws['available_after_reserve_mb']}MB "
        f"({ws['memory_limit_mb']}MB {ws['memory_origin']})",
    ]
    if ws.get("suggestion"):
        lines.append(f"  Suggestion: {ws['suggestion']}")
    if gpu.get("warning"):
        lines.append(f"  Note: {gpu['warning']}")
    return lines


@click.command()
@click.option("--port", type=PORT, help="TCP port to probe.")
@click.option("--repo", help="Repository path to probe.")
@click.option("--gpu", type=MB, help="GPU memory (MB) to probe.")
@click.option("--gpu-device", type=DEVICE, help="NVIDIA device index (multi-GPU machines).")
@click.option("--session-id", help="Your session id (default: $FLEET_SESSION_ID).")
def check(port: int | None, repo: str | None, gpu: int | None, gpu_device: int | None, session_id: str | None) -> int:
    """Is this port / repo / GPU amount available? One line each; exit 0 if all are, else 1."""
    if port is None and repo is None and gpu is None:
        raise UsageError("specify --port, --repo or --gpu")
    result = _evaluate(GuardRequest(port=port, repo=repo, gpu_mb=gpu, gpu_device=gpu_device,
                                    session_id=current_session(session_id)))
    answers: list[tuple[bool, str]] = []
    c: dict[str, Any] | None
    if (c := result.checks.get("port")) is not None:
        text = "available" if c["allowed"] else f"TAKEN: {c['reason']}"
        answers.append((c["allowed"], f"Port {port}: {text}"))
    if (c := result.checks.get("repo")) is not None:
        where = result.request["repo_dir"]
        text = "available" if c["allowed"] else f"LOCKED: {c['reason']}"
        answers.append((c["allowed"], f"Repo {where}: {text}"))
    if (c := result.checks.get("gpu")) is not None:
        answers.append((c["allowed"], f"GPU {gpu}MB: available" if c["allowed"] else f"GPU {gpu}MB: {c['reason']}"))
    for _, line in answers:  # one stream: `check 2>/dev/null` must not hide a refusal
        click.echo(line)
    return 0 if result.allowed else 1
