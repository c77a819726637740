"""Quant tables, name parsing, catalog, the llama.cpp type mix and the KV formulas, against known values."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from fleet_watch.core.estimator.arch import architecture_from_mapping
from fleet_watch.core.estimator.kv import llama_cpp_kv_bytes, paged_kv_bytes
from fleet_watch.core.estimator.mix import gguf_weight_bytes
from fleet_watch.core.estimator.naming import match_catalog, parse_size
from fleet_watch.core.estimator.quant import GGML_BLOCKS, parse_quant
from fleet_watch.service.estimate import catalog

MIB = 1024 * 1024
# A copy of shared/data/estimator (the project's research tables), kept in the repo so a fresh clone tests alone.
SHARED = Path(__file__).resolve().parents[1] / "data" / "estimator"


def arch(name: str):  # type: ignore[no-untyped-def]
    return architecture_from_mapping(name, catalog()["models"][name])


def test_block_table_is_the_gguf_packages() -> None:
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert GGML_BLOCKS[qtype.name] == (block, size), qtype.name


@pytest.mark.parametrize(("text", "label"), [
    ("qwen2.5-7B-Q4_K_M", "Q4_K_M"), ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("x-IQ4_XS.gguf", "IQ4_XS"),
    ("x-iq2_xxs", "IQ2_XXS"), ("x.Q8_0.gguf", "Q8_0"), ("x-q5_k", "Q5_K_M"), ("x-Q6_K", "Q6_K"),
    ("Qwen2.5-7B-Instruct-4bit", "MLX-4bit"), ("x-8-bit", "MLX-8bit"), ("Qwen/Qwen2.5-7B-Instruct-AWQ", "AWQ-4bit"),
    ("TheBloke/x-GPTQ", "GPTQ-4bit"), ("Qwen3-8B-FP8", "FP8"), ("gemma-2-9b-bf16", "BF16"), ("x-f16.gguf", "F16"),
])
def test_quant_names(text: str, label: str) -> None:
    quant = parse_quant(text)
    assert quant is not None
    assert quant.label == label


@pytest.mark.parametrize(("text", "size", "experts", "active"), [
    ("qwen2.5-0.5B", 0.5, 0, None), ("Qwen2.5-1.5B-Instruct", 1.5, 0, None), ("Qwen3-0.6B", 0.6, 0, None),
    ("mixtral-8x7B", 7, 8, None), ("Qwen3-30B-A3B", 30, 0, 3), ("deepseek-r1:1.5b", 1.5, 0, None),
    ("phi-3.8b", 3.8, 0, None), ("gpt-oss-20b", 20, 0, None),
])
def test_sizes_parse_decimals_and_moe(text: str, size: float, experts: int, active: float | None) -> None:
    token = parse_size(text)
    assert token is not None
    assert (token.params_b, token.experts, token.active_b) == (size, experts, active)


def test_4bit_is_not_a_size() -> None:
    assert parse_size("Qwen3-4bit") is None


@pytest.mark.parametrize(("text", "key"), [
    ("qwen2.5-7B-Q4_K_M", "Qwen2.5-7B"), ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Llama-3.1-8B"),
    ("mixtral-8x7b", "Mixtral-8x7B"), ("Qwen3-30B-A3B", "Qwen3-30B-A3B"), ("gpt-oss-20b", "gpt-oss-20b"),
    ("DeepSeek-V3", "DeepSeek-V3"), ("QWEN2.5-0.5B-INSTRUCT", "Qwen2.5-0.5B"), ("qwen2.5:1.5b", "Qwen2.5-1.5B"),
    ("llama3.1:8b", "Llama-3.1-8B"), ("Llama-3.2-3B-Instruct", "Llama-3.2-3B"), ("gemma3:4b", "Gemma-3-4B"),
    ("Phi-3-mini-4k-instruct", "Phi-3-mini-4k"), ("mlx-community/Qwen2.5-7B-Instruct-4bit", "Qwen2.5-7B"),
])
def test_catalog_resolves_names(text: str, key: str) -> None:
    match = match_catalog(text, catalog())
    assert match is not None
    assert match.key == key


def test_distilled_r1_is_not_deepseek_v3() -> None:
    assert match_catalog("deepseek-r1:7b", catalog()) is None


def test_every_architectures_csv_row_is_in_the_catalog_with_a_source() -> None:
    rows = (SHARED / "architectures.csv").read_text().splitlines()[1:]
    names = {r.split(",")[0].replace(" (text)", "") for r in rows if r}
    models = catalog()["models"]
    assert names <= set(models)
    assert all(row.get("source") for row in models.values())


def test_parameter_totals_match_published_counts() -> None:
    table = json.loads((SHARED / "architectures.json").read_text())["table"]
    assert table  # the shared table exists; spot-check the published totals below
    assert round(arch("Qwen2.5-7B").n_params() / 1e9, 3) == 7.616
    assert round(arch("Llama-3.1-70B").n_params() / 1e9, 2) == 70.55
    assert round(arch("DeepSeek-V3").n_params() / 1e9, 1) == 671.0
    assert round(arch("Mixtral-8x7B").n_params_active() / 1e9, 2) == 12.88


@pytest.mark.parametrize(("name", "ftype", "expected"), [
    ("Llama-3.1-8B", "Q4_K_M", 4912898048), ("Llama-3.1-8B", "Q8_0", 8532934656),
    ("Qwen2.5-7B", "Q4_K_M", 4677120000), ("Qwen2.5-0.5B", "Q4_K_M", 391859712),
    ("Mistral-7B-v0.3", "Q3_K_M", 3522183168),
    ("Llama-3.1-70B", "Q2_K", 26367246336),
])
def test_llama_cpp_type_mix_reproduces_real_files(name: str, ftype: str, expected: int) -> None:
    assert gguf_weight_bytes(arch(name), ftype) == expected


def test_q4_k_m_is_not_half_a_byte_per_parameter() -> None:
    a = arch("Qwen2.5-7B")
    assert gguf_weight_bytes(a, "Q4_K_M") / a.n_params() > 0.6


@pytest.mark.parametrize(("name", "ctx", "mib"), [
    ("Qwen2.5-7B", 32768, 1792), ("Llama-3.1-8B", 8192, 1024), ("Gemma-3-1B", 8192, 54), ("Gemma-2-9B", 8192, 2100),
    ("gpt-oss-20b", 8192, 210), ("DeepSeek-V3", 32768, 2196), ("Qwen2.5-0.5B", 8192, 96),
])
def test_llama_cpp_kv_matches_engine_allocations(name: str, ctx: int, mib: int) -> None:
    assert llama_cpp_kv_bytes(arch(name), ctx, "f16") // MIB == mib


def test_kv_types_padding_and_streams() -> None:
    a = arch("Llama-3.1-8B")
    assert llama_cpp_kv_bytes(a, 8000, "f16") == llama_cpp_kv_bytes(a, 8192, "f16")  # padded to 256
    assert llama_cpp_kv_bytes(a, 8192, "q8_0") == llama_cpp_kv_bytes(a, 8192, "f16") * 34 // 64
    assert llama_cpp_kv_bytes(a, 32768, "f16", n_seq=4) == llama_cpp_kv_bytes(a, 32768, "f16")
    # Phi-3.5-mini at 131072 in vLLM: 48.01 GiB for one request (vLLM's error message)
    phi = arch("Phi-3-mini-4k")
    assert round(paged_kv_bytes(phi, 131072, "f16") / 1024**3, 1) == 48.0
