"""Real GGUF files (written with gguf.GGUFWriter) and Hugging Face folders (real safetensors headers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_watch.errors import UsageError
from fleet_watch.probes.modelfiles import read_gguf, read_hf_cache, read_hf_folder
from tests.estimator.conftest import estimate, llama_meta, llama_tensors, settings, write_gguf, write_safetensors


@pytest.mark.parametrize("matrix", ["F16", "Q8_0", "Q4_0", "Q4_K", "Q6_K", "IQ4_XS"])
def test_gguf_weights_are_the_exact_tensor_bytes(tmp_path: Path, matrix: str) -> None:
    path = tmp_path / f"tiny-{matrix}.gguf"
    exact = write_gguf(path, "llama", llama_meta("llama", 2, 256, 4, 2, 512, ctx=2048),
                       llama_tensors(2, 256, 4, 2, 512, 1024, matrix=matrix))
    found = read_gguf(path)
    assert found.weights_bytes == exact
    assert (found.arch.layers, found.arch.hidden, found.arch.kv_heads, found.arch.vocab) == (2, 256, 2, 1024)
    assert found.arch.context == 2048
    assert found.tensor_types[matrix] > 0
    assert found.repack_bytes == (exact - 256 * 1024 * 18 // 32 - 5 * 256 * 4 if matrix == "Q4_0" else 0)


def test_gguf_kv_of_a_real_file_uses_its_gqa_shape(tmp_path: Path) -> None:
    path = tmp_path / "gqa.gguf"
    write_gguf(path, "llama", llama_meta("llama", 4, 512, 8, 2, 1024), llama_tensors(4, 512, 8, 2, 1024, 2048,
                                                                                      matrix="F16"))
    ws = estimate(settings(), framework="llama_cpp", model=str(path), ctx=1000, kv_dtype="f16")["working_set"]
    # 4 layers x 1024 cells (1000 padded to 256) x (2 heads x 64) x 2 (K and V) x 2 bytes = 2 MiB
    assert ws["kv_min_mb"] == 2
    assert ws["model_source"] == "gguf_header"


def test_sliding_window_and_moe_files(tmp_path: Path) -> None:
    gemma = tmp_path / "gemma3.gguf"
    write_gguf(gemma, "gemma3", llama_meta("gemma3", 12, 256, 4, 1, 512, ctx=32768, **{
        "attention.sliding_window": 512, "attention.key_length": 256}),
        llama_tensors(12, 256, 4, 1, 512, 1024, matrix="F16", tied=True))
    a = read_gguf(gemma).arch
    assert a.tied
    assert a.global_every == 6
    assert [a.is_sliding(i) for i in range(6)] == [True] * 5 + [False]
    moe = tmp_path / "moe.gguf"
    tensors = llama_tensors(1, 256, 4, 2, 512, 1024, matrix="Q8_0")
    tensors = [t for t in tensors if "ffn_" not in t[0] or "norm" in t[0]]
    tensors += [("blk.0.ffn_gate_inp.weight", (256, 8), "F32"), ("blk.0.ffn_gate_exps.weight", (256, 128, 8), "Q8_0"),
                ("blk.0.ffn_up_exps.weight", (256, 128, 8), "Q8_0"), ("blk.0.ffn_down_exps.weight", (128, 256, 8),
                                                                      "Q8_0")]
    exact = write_gguf(moe, "qwen3moe", llama_meta("qwen3moe", 1, 256, 4, 2, 512, expert_count=8,
                                                   expert_used_count=2, expert_feed_forward_length=128), tensors)
    found = read_gguf(moe)
    assert found.weights_bytes == exact
    assert (found.arch.moe_experts, found.arch.moe_active) == (8, 2)


def test_sparse_header_claiming_a_large_model_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "big-Q4_K_M.gguf"
    layers, hidden, ff, vocab = 80, 8192, 28672, 128256
    claimed = write_gguf(path, "llama", llama_meta("llama", layers, hidden, 64, 8, ff, ctx=131072, file_type=15),
                         llama_tensors(layers, hidden, 64, 8, ff, vocab, matrix="Q4_K", embd="Q4_K"),
                         sparse_size=40 * 1024**3)
    assert path.stat().st_size == 40 * 1024**3
    assert path.stat().st_blocks * 512 < 50 * 1024**2  # the data is a hole: nothing to read
    found = read_gguf(path)  # bench/estimator_inputs.py measures how long this takes
    assert found.weights_bytes == claimed
    assert found.quant.label == "Q4_K_M"


def test_split_gguf_reads_every_shard(tmp_path: Path) -> None:
    tensors = llama_tensors(2, 256, 4, 2, 512, 1024, matrix="F16")
    first = write_gguf(tmp_path / "m-00001-of-00002.gguf", "llama", llama_meta("llama", 2, 256, 4, 2, 512),
                       tensors[:10])
    second = write_gguf(tmp_path / "m-00002-of-00002.gguf", "llama", {}, tensors[10:])
    assert read_gguf(tmp_path / "m-00001-of-00002.gguf").weights_bytes == first + second
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    with pytest.raises(UsageError, match="missing shard"):
        read_gguf(tmp_path / "m-00001-of-00002.gguf")


def test_garbage_gguf_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(UsageError):
        read_gguf(path)


QWEN_CONFIG = {"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1024, "max_position_embeddings": 8192,
               "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def _hf_folder(folder: Path, config: dict[str, object]) -> int:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    a = write_safetensors(folder / "model-00001-of-00002.safetensors", {
        "model.embed_tokens.weight": ("BF16", (1024, 256)), "lm_head.weight": ("BF16", (1024, 256))})
    b = write_safetensors(folder / "model-00002-of-00002.safetensors", {
        f"model.layers.{i}.mlp.up_proj.weight": ("BF16", (512, 256)) for i in range(2)})
    return a + b


def test_hf_folder_weights_from_safetensors_headers(tmp_path: Path) -> None:
    exact = _hf_folder(tmp_path / "qwen", QWEN_CONFIG)
    found = read_hf_folder(tmp_path / "qwen")
    assert found.weights_bytes == exact
    assert found.quant.label == "BF16"
    assert (found.arch.layers, found.arch.kv_heads, found.arch.context) == (2, 2, 8192)


def test_mlx_folder_quantization_is_honoured(tmp_path: Path) -> None:
    cfg = {**QWEN_CONFIG, "quantization": {"group_size": 64, "bits": 4}}
    (tmp_path / "mlx").mkdir()
    (tmp_path / "mlx" / "config.json").write_text(json.dumps(cfg))
    found = read_hf_folder(tmp_path / "mlx")
    assert found.quant.label == "MLX-4bit"
    assert not found.weights_exact  # no safetensors: computed at 4.5 bits per quantized weight
    full = found.arch.n_params()
    assert 0.28 * full < found.weights_bytes < 0.6 * full


def test_hf_cache_is_found_offline_through_env(tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    exact = _hf_folder(snap, QWEN_CONFIG)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("abc123")
    for env in ({"HF_HUB_CACHE": str(tmp_path / "hub")}, {"HF_HOME": str(tmp_path)}):
        found = read_hf_cache("org/tiny", env, None)
        assert found is not None
        assert found.weights_bytes == exact
        assert found.model_source == "hf_cache"
    assert read_hf_cache("org/absent", {"HF_HUB_CACHE": str(tmp_path / "hub")}, None) is None
    ws = estimate(settings(), framework=None, model="org/tiny", environ={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert ws["working_set"]["model_source"] == "hf_cache"
    assert ws["working_set"]["framework"] == "transformers"
