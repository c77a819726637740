"""The guard's entry point, command lines, and ``fleet estimate`` through the real CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.core.estimator.fit import effective_reserve_mb
from fleet_watch.errors import UsageError
from fleet_watch.service.estimate import estimate_from_command, guard_working_set
from tests.estimator.conftest import estimate, llama_meta, llama_tensors, settings, write_gguf

README_KEYS = {"weights_mb", "kv_cache_mb", "activations_mb", "overhead_multiplier", "total_mb", "framework",
               "model_size", "quantization", "physical_ram_mb", "available_after_reserve_mb", "fits", "grounded",
               "source", "suggestion"}


def guard(ram: int, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"framework": "candle", "model": "qwen2.5-7B-Q4_K_M", "ctx": None,
                            "kv_dtype": None, "ram_mb": None, "allocated_mb": 0, **kw}
    out = guard_working_set(settings(ram_mb=ram), **args)
    assert out is not None
    return out


def test_readme_example_denies_on_8gb_and_allows_on_128gb() -> None:
    small, big = guard(8192), guard(131072)
    assert set(small["working_set"]) >= README_KEYS
    assert (small["fits"], small["reason"]) == (False, "working_set_exceeds_physical_ram")
    assert small["working_set"]["available_after_reserve_mb"] == 6144
    assert "exceeds" in small["detail"]
    # Candle loads no smaller K-quant that fits with Qwen2.5's own 32768-token context; a shorter context does.
    assert small["working_set"]["suggestion"] == "Reduce the context to 12288 tokens (~6119 MB working set)"
    assert (big["fits"], big["reason"], big["working_set"]["available_after_reserve_mb"]) == (True, None, 114688)
    assert big["working_set"]["suggestion"] is None
    assert small["working_set"]["total_mb"] == big["working_set"]["total_mb"]


def test_allocated_memory_and_ram_override_count() -> None:
    assert guard(131072, allocated_mb=110000)["fits"] is False
    assert guard(131072, ram_mb=8192)["fits"] is False


def test_nothing_given_is_none_and_nothing_usable_is_insufficient_input() -> None:
    assert guard_working_set(settings(), framework=None, model=None, ctx=None, kv_dtype=None,
                             ram_mb=None, allocated_mb=0) is None
    out = guard(8192, model="my-favourite-model")
    assert (out["fits"], out["reason"]) == (None, "model 'my-favourite-model' is not a file, a cached repo, "
                                                  "a known model or a size")
    assert out["working_set"]["source"] == "insufficient_input"
    assert out["working_set"]["fits"] is None
    assert "No estimate" in out["working_set"]["suggestion"]


def test_size_only_is_a_generic_ungrounded_shape() -> None:
    ws = guard(131072, model="7B", framework="llama_cpp")["working_set"]
    assert (ws["grounded"], ws["source"]) == (False, "fallback_default")
    assert 3500 < ws["weights_mb"] < 4600


def test_context_and_kv_type_change_the_kv() -> None:
    base = guard(131072, framework="llama_cpp", ctx=8192)["working_set"]
    assert base["kv_cache_mb"] == 448
    assert base["context_tokens"] == 8192
    q8 = guard(131072, framework="llama_cpp", ctx=8192, kv_dtype="q8_0")["working_set"]
    assert q8["kv_cache_mb"] == 238
    assert q8["kv_dtype"] == "q8_0"


def test_vllm_claims_its_fraction_whatever_the_model() -> None:
    a = guard(81920, framework="vllm", model="Qwen2.5-0.5B", ctx=8192)["working_set"]
    b = guard(81920, framework="vllm", model="Qwen2.5-7B", ctx=8192)["working_set"]
    assert a["total_mb"] == b["total_mb"] == int(0.9 * 81920)
    assert b["kv_cache_mb"] > b["kv_min_mb"]


def test_config_overrides_the_multiplier() -> None:
    s = settings(gpu_estimator={"framework_overhead": {"candle": 2.5}})
    ws = estimate(s, framework="candle", model="qwen2.5-7B-Q4_K_M")["working_set"]
    assert ws["overhead_multiplier"] == 2.5


@pytest.mark.parametrize(("kw", "message"), [
    ({"framework": "llamafilez"}, "unknown framework"), ({"ctx": 0}, "--ctx"), ({"kv_dtype": "fp8"}, "--kv-dtype"),
    ({"ram_mb": -5}, "--ram-mb"),
])
def test_bad_input_is_a_usage_error(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        guard(8192, **{"framework": "llama_cpp", **kw})


def test_reserve_clamp_is_continuous() -> None:
    values = [m - effective_reserve_mb(m, 16384) for m in range(4096, 200000, 97)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert effective_reserve_mb(8192, 16384) == 2048
    assert effective_reserve_mb(131072, 16384) == 16384


@pytest.mark.parametrize(("cmd", "mb"), [
    ("llama-server -m /models/qwen2.5-7b-instruct-q4_k_m.gguf -c 8192", 5305),
    ("ollama run llama3.1:8b", 5607),
    ("mlx_lm.server --model mlx-community/Qwen2.5-7B-Instruct-4bit --max-kv-size 4096", 4900),
    ("vllm serve Qwen/Qwen2.5-7B-Instruct --max-model-len 8192 --gpu-memory-utilization 0.5", 65536),
])
def test_estimate_from_command(cmd: str, mb: int) -> None:
    assert estimate_from_command(settings(), cmd) == mb


@pytest.mark.parametrize("cmd", ["ollama serve", "python -m http.server 8000", "", "vllm serve"])
def test_estimate_from_command_without_a_model(cmd: str) -> None:
    assert estimate_from_command(settings(), cmd) is None


CATALOG = ["qwen2.5-7B-Q4_K_M", "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "mixtral-8x7b", "Qwen3-30B-A3B",
           "gpt-oss-20b", "DeepSeek-V3"]


@pytest.mark.parametrize("model", CATALOG)
def test_cli_estimate_json_for_catalog_models(fleet: Any, model: str) -> None:
    res = fleet("estimate", "--model", model, "--ram-mb", str(2 * 1024 * 1024), "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert set(out["working_set"]) >= README_KEYS
    assert out["working_set"]["model_source"] == "catalog"
    assert out["architecture"]["source"] == "catalog"
    assert out["context_tokens"] == out["working_set"]["context_tokens"]


def test_cli_json_is_the_guard_working_set(fleet: Any, fleet_home: Path) -> None:
    res = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--framework", "candle", "--ram-mb", "8192", "--json")
    assert res.returncode == 1
    out = res.json()
    g = guard(8192, ram_mb=8192)["working_set"]
    mine = dict(out["working_set"])
    g.pop("requested_mb", None)
    assert mine == g
    assert [(a["kind"], a["quantization"], a["context_tokens"]) for a in out["alternatives"]] == [
        ("context", "Q4_K_M", 12288)]


def test_cli_human_output_and_errors(fleet: Any, tmp_path: Path) -> None:
    res = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--framework", "candle", "--ram-mb", "8192")
    assert res.returncode == 1
    assert "DOES NOT FIT" in res.stdout
    assert "Suggestion:" in res.stdout
    assert "kv cache" in res.stdout
    bad = fleet("estimate", "--model", "qwen2.5-7B", "--kv-dtype", "nope", "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"] == "usage_error"
    assert fleet("estimate", "--model", "qwen2.5-7B", "--ctx", "abc").returncode == 2
    assert fleet("estimate", "--model", str(tmp_path / "missing.gguf"), "--json").returncode == 3  # unknown
    unknown = fleet("estimate", "--model", "whatever", "--json")
    assert unknown.json()["working_set"]["source"] == "insufficient_input"


def test_cli_reads_a_gguf_file(fleet: Any, tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    exact = write_gguf(path, "llama", llama_meta("llama", 2, 256, 4, 2, 512, ctx=2048),
                       llama_tensors(2, 256, 4, 2, 512, 1024, matrix="Q8_0"))
    out = fleet("estimate", "--model", str(path), "--ram-mb", "4096", "--json").json()
    assert out["working_set"]["model_source"] == "gguf_header"
    assert out["working_set"]["weights_mb"] == -(-exact // (1024 * 1024))
    assert out["architecture"]["context_length"] == 2048
