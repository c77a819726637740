"""Flash attention on and off: llama.cpp's compute buffer for both, the engines' defaults, what ``auto`` becomes,
the flag on ``estimate`` and ``guard``, and ``-fa``/``--flash-attn`` on running servers' command lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet_watch.core.estimator import attention
from fleet_watch.core.estimator.commandline import parse_command
from fleet_watch.service.estimate import estimate_from_command
from tests.estimator.conftest import estimate, llama_meta, llama_tensors, settings, write_gguf

MIB = 1024 * 1024
# The shape the issue measured and bench/estimator_accuracy.py builds: 12 layers, hidden 1024, 16 heads, 4 KV heads,
# FFN 2816, vocabulary 32000, F16 (383 MiB of weights).
SHAPE = (12, 1024, 16, 4, 2816, 32000)
# Peak RSS measured with llama-cpp-python 0.3.36 on this machine's CPU, context 8192, the context filled (issue #8).
MEASURED_PEAK_MIB = {"off": 942, "on": 573}


@pytest.fixture(scope="module")
def bench_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layers, hidden, heads, kv_heads, ff, vocab = SHAPE
    path = tmp_path_factory.mktemp("fa") / "bench-F16.gguf"
    write_gguf(path, "llama", llama_meta("llama", layers, hidden, heads, kv_heads, ff, ctx=32768),
               llama_tensors(layers, hidden, heads, kv_heads, ff, vocab, matrix="F16"), sparse_size=402 * MIB)
    return path


def _compute_mib(ctx: int, flash: bool) -> float:
    """llama.cpp's CPU compute buffer from facts §A4.1, written out for this shape (ubatch 512)."""
    _, hidden, heads, _, ff, vocab = SHAPE
    ub = 512
    mask = ctx * ub * (2 if flash else 4)
    output = ub * (vocab + 2 * hidden) * 4
    ffn = mask + ub * (4 * ff + 2 * hidden) * 4
    attn = mask + 5.5 * hidden * ub * 4 + (0 if flash else ctx * ub * heads * 4)
    work = 0 if flash else ctx * ub * heads * 2  # ggml-cpu's f16 copy of KQ
    return (max(output, ffn, attn) + vocab * 4 + work) / MIB


@pytest.mark.parametrize("ctx", [2048, 8192, 32768])
def test_compute_buffer_on_and_off(bench_model: Path, ctx: int) -> None:
    ws = {fa: estimate(settings(), framework="llama_cpp", model=str(bench_model), ctx=ctx, flash_attn=fa,
                       ram_mb=65536)["working_set"] for fa in ("on", "off")}
    for fa in ("on", "off"):
        assert ws[fa]["activations_mb"] == -(-int(_compute_mib(ctx, fa == "on") * MIB) // MIB)
        assert (ws[fa]["flash_attn"], ws[fa]["flash_attn_setting"]) == (fa, fa)
    assert ws["off"]["kv_cache_mb"] == ws["on"]["kv_cache_mb"] == ctx * 12 * 1024 // MIB
    assert ws["off"]["total_mb"] > ws["on"]["total_mb"]


def test_the_issue_measurements_are_within_ten_percent(bench_model: Path) -> None:
    for fa, peak in MEASURED_PEAK_MIB.items():
        ws = estimate(settings(), framework="llama_cpp", model=str(bench_model), ctx=8192, flash_attn=fa,
                      ram_mb=65536)["working_set"]
        assert ws["weights_mb"] == 384  # 383.1 MiB, rounded up
        assert abs(ws["total_mb"] / peak - 1) < 0.10, (fa, ws["total_mb"], peak)


def test_engine_defaults(bench_model: Path) -> None:
    server = estimate(settings(), framework="llama_cpp", model=str(bench_model), ctx=8192, ram_mb=65536)
    python = estimate(settings(), framework="llama-cpp-python", model=str(bench_model), ctx=8192, ram_mb=65536)
    assert (server["working_set"]["flash_attn_setting"], server["working_set"]["flash_attn"]) == ("auto", "on")
    assert (python["working_set"]["flash_attn_setting"], python["working_set"]["flash_attn"]) == ("off", "off")
    assert python["working_set"]["framework"] == "llama_cpp"
    vllm = estimate(settings(), framework="vllm", model="Qwen2.5-7B", ctx=8192)["working_set"]
    assert (vllm["flash_attn"], vllm["flash_attn_setting"]) == (None, None)


@pytest.mark.parametrize(("device", "head", "expected"), [
    ("cpu", 128, True), ("cpu", 192, True), ("cuda", 128, True), ("cuda", 64, True), ("cuda", 192, False),
    ("cuda", 576, False), ("apple", 128, True), ("apple", 576, True), ("apple", 24, False),
])
def test_auto_follows_what_the_backend_runs(device: str, head: int, expected: bool) -> None:
    got = attention.resolve("auto", device=device, head_k=head, head_v=head, kv_dtype="f16", gguf_arch="llama")
    assert got is expected


def test_auto_with_a_quantized_v_cache_is_on_and_grok_is_off() -> None:
    assert attention.resolve("auto", device="cuda", head_k=192, head_v=192, kv_dtype="q8_0", gguf_arch="llama")
    assert not attention.resolve("on", device="cpu", head_k=128, head_v=128, kv_dtype="f16", gguf_arch="grok")
    assert not attention.resolve("auto", device="cpu", head_k=128, head_v=128, kv_dtype="f16", gguf_arch="grok")


def test_off_with_a_quantized_kv_cache_is_refused(fleet: Any) -> None:
    out = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--kv-dtype", "q8_0", "--flash-attn", "off", "--json")
    assert out.returncode == 2
    assert "requires flash attention" in out.json()["reason"]
    auto = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--kv-dtype", "q8_0", "--ram-mb", "65536", "--json")
    assert (auto.returncode, auto.json()["working_set"]["flash_attn"]) == (0, "on")


def test_the_flag_on_an_engine_without_it_is_a_usage_error(fleet: Any) -> None:
    out = fleet("estimate", "--model", "Qwen2.5-7B", "--framework", "vllm", "--flash-attn", "on", "--json")
    assert out.returncode == 2
    assert "sizes its attention its own way" in out.json()["reason"]


@pytest.mark.parametrize("command", ["estimate", "guard"])
def test_a_bad_flag_value_is_exit_2(fleet: Any, command: str) -> None:
    out = fleet(command, "--model", "qwen2.5-7B-Q4_K_M", "--flash-attn", "sometimes", "--json")
    assert out.returncode == 2
    doc = out.json()
    assert (doc["allowed"], doc["error"]) == (False, "usage_error")
    assert "--flash-attn" in doc["reason"]


def test_guard_and_estimate_agree_with_flash_attention_off(fleet: Any, bench_model: Path) -> None:
    args = ("--model", str(bench_model), "--framework", "llama_cpp", "--ctx", "8192", "--ram-mb", "16384")
    guard = fleet("guard", *args, "--flash-attn", "off", "--json")
    assert guard.returncode == 0, guard.stdout
    ws = guard.json()["checks"]["gpu"]["working_set"]
    est = fleet("estimate", *args, "--flash-attn", "off", "--json").json()["working_set"]
    assert {k: v for k, v in ws.items() if k != "requested_mb"} == est
    assert (ws["flash_attn"], ws["activations_mb"]) == ("off", 412)
    default = fleet("guard", *args, "--json").json()["checks"]["gpu"]["working_set"]
    assert (default["flash_attn"], default["activations_mb"]) == ("on", 67)


def test_the_estimate_says_it_in_text(fleet: Any, bench_model: Path) -> None:
    out = fleet("estimate", "--model", str(bench_model), "--ctx", "8192", "--ram-mb", "16384")
    assert "flash attention on (auto)" in out.stdout
    off = fleet("estimate", "--model", str(bench_model), "--ctx", "8192", "--ram-mb", "16384", "--flash-attn", "off")
    assert "flash attention off" in off.stdout


def test_guard_flash_attn_without_a_model_is_a_usage_error(fleet: Any) -> None:
    out = fleet("guard", "--port", "18999", "--flash-attn", "on", "--json")
    assert (out.returncode, out.json()["allowed"]) == (2, False)
    assert "--model" in out.json()["reason"]


@pytest.mark.parametrize(("cmd", "flash"), [
    ("llama-server -m /m/x.gguf --port 8080", None),
    ("llama-server -m /m/x.gguf -fa", "on"),
    ("llama-server -fa -m /m/x.gguf", "on"),
    ("llama-server -m /m/x.gguf -fa on", "on"),
    ("llama-server -m /m/x.gguf -fa off", "off"),
    ("llama-server -m /m/x.gguf -fa auto", "auto"),
    ("llama-server -m /m/x.gguf -fa 1", "on"),
    ("llama-server -m /m/x.gguf -fa 0", "off"),
    ("llama-server -m /m/x.gguf -fa -1", "auto"),
    ("llama-server -m /m/x.gguf --flash-attn enabled", "on"),
    ("llama-server -m /m/x.gguf --flash-attn disabled", "off"),
    ("llama-server -m /m/x.gguf --flash-attn=false", "off"),
    ("llama-server -m /m/x.gguf --flash-attn=true", "on"),
    ("llama-server -m /m/x.gguf -fa off --flash-attn on", "on"),
    ("llama-server -m /m/x.gguf -fa sometimes", None),
    ("python3 -m llama_cpp.server --model /m/x.gguf", "off"),
    ("python3 -m llama_cpp.server --model /m/x.gguf --flash_attn true", "on"),
    ("python3 -m llama_cpp.server --model /m/x.gguf --flash_attn=1", "on"),
    ("python3 -m llama_cpp.server --model /m/x.gguf --flash_attn no", "off"),
    ("vllm serve Qwen/Qwen2.5-7B-Instruct -fa on", None),
])
def test_command_lines(cmd: str, flash: str | None) -> None:
    parsed = parse_command(cmd)
    assert parsed is not None
    assert parsed.flash_attn == flash


def test_off_on_a_command_line_keeps_an_f16_v_cache() -> None:
    parsed = parse_command("llama-server -m /m/x.gguf -fa off -ctk q8_0")
    assert parsed is not None
    assert (parsed.flash_attn, parsed.kv_dtype) == ("off", None)
    kept = parse_command("llama-server -m /m/x.gguf -fa on -ctk q8_0")
    assert kept is not None
    assert kept.kv_dtype == "q8_0"


def test_discovery_estimates_follow_the_command_line(bench_model: Path) -> None:
    base = f"llama-server -m {bench_model} -c 8192"
    on, off, default = (estimate_from_command(settings(ram_mb=65536), f"{base} {extra}")
                        for extra in ("-fa on", "-fa off", ""))
    assert on is not None
    assert off is not None
    kv = 96  # 8192 cells x 12 layers x 1 KiB (f16 K and V of 4 heads of 64)
    assert (on, off) == (int(384 + (kv + 67) * 1.1 + 8 + 0.999), int(384 + (kv + 412) * 1.1 + 8 + 0.999))
    assert default == on  # llama-server's auto is on, on a CPU
    python = estimate_from_command(settings(ram_mb=65536), f"python -m llama_cpp.server --model {bench_model} "
                                   "--n_ctx 8192")
    assert python == off


def test_python_m_names_the_module_not_the_model() -> None:
    parsed = parse_command("python3 -m llama_cpp.server --model /m/x.gguf --n_ctx 8192")
    assert parsed is not None
    assert (parsed.framework, parsed.model, parsed.ctx) == ("llama_cpp", "/m/x.gguf", 8192)
