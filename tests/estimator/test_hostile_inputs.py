"""Damaged, hostile and odd inputs: every one is a one-line usage error (exit 2) or an honest answer; none is a
traceback, a hang, or a tiny made-up model that lets the guard allow. How long the refusals take is measured by
``bench/estimator_inputs.py`` (no timing assertions here)."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.core.estimator.naming import parse_size
from fleet_watch.errors import UsageError
from fleet_watch.probes.modelfiles import read_gguf
from fleet_watch.service import memory_target
from fleet_watch.service.estimate import estimate_from_command
from fleet_watch.service.memory_target import machine_memory
from tests.estimator.conftest import estimate, llama_meta, llama_tensors, settings, write_gguf, write_safetensors
from tests.estimator.test_modelfiles import QWEN_CONFIG


def _folder(root: Path, name: str, config: dict[str, Any], *, offsets: object = None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if offsets is not None:
        header = {"w": {"dtype": "BF16", "shape": [2], "data_offsets": offsets}}
        blob = json.dumps(header).encode()
        (folder / "model.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob)
    return folder


# name -> (config.json, what the one-line error must say)
BROKEN_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "mlx-bits-text": ({**QWEN_CONFIG, "quantization": {"bits": "abc", "group_size": 64}},
                      "config.json has a malformed quantization field"),
    "mlx-group-null": ({**QWEN_CONFIG, "quantization": {"bits": 4, "group_size": None}},
                       "config.json has a malformed quantization field"),
    "mlx-group-zero": ({**QWEN_CONFIG, "quantization": {"bits": 4, "group_size": 0}},
                       "config.json declares an implausible quantization: 4 bits, group size 0"),
    "billion-layers": ({**QWEN_CONFIG, "num_hidden_layers": 1_000_000_000},
                       "billion-layers: config.json describes an implausible model: layers=1000000000"),
    "zero-heads": ({**QWEN_CONFIG, "num_attention_heads": 0, "num_key_value_heads": 0},
                   "zero-heads: config.json describes an implausible model: heads=0"),
    "negative-layers": ({**QWEN_CONFIG, "num_hidden_layers": -4},
                        "negative-layers: config.json describes an implausible model: layers=-4"),
    "negative-context": ({**QWEN_CONFIG, "max_position_embeddings": -1},
                         "negative-context: config.json describes an implausible model: context=-1"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_CONFIGS))
def test_broken_hf_folders_are_usage_errors(fleet: Any, tmp_path: Path, name: str) -> None:
    config, message = BROKEN_CONFIGS[name]
    folder = _folder(tmp_path, name, config)
    out = fleet("estimate", "--model", str(folder), "--json", timeout=60)
    assert out.returncode == 2, out.stdout
    doc = json.loads(out.stdout)
    assert doc["error"] == "usage_error"
    assert message in doc["reason"]
    guard = fleet("guard", "--model", str(folder), "--json", timeout=30)
    assert (guard.returncode, guard.json()["allowed"]) == (2, False)


@pytest.mark.parametrize("offsets", [["x", "y"], [10, 2], [-4, 4], [0]])
def test_bad_safetensors_offsets_are_usage_errors(fleet: Any, tmp_path: Path, offsets: object) -> None:
    folder = _folder(tmp_path, "st", QWEN_CONFIG, offsets=offsets)
    out = fleet("estimate", "--model", str(folder), "--json")
    assert out.returncode == 2
    assert "data_offsets" in out.json()["reason"]


def test_a_gguf_header_claiming_a_billion_layers_is_refused_at_once(fleet: Any, tmp_path: Path) -> None:
    path = tmp_path / "huge.gguf"
    write_gguf(path, "llama", llama_meta("llama", 4_000_000_000, 256, 4, 2, 512),
               llama_tensors(2, 256, 4, 2, 512, 1024, matrix="F16"))
    out = fleet("guard", "--model", str(path), "--json", timeout=30)
    assert out.returncode == 2
    assert "implausible" in out.json()["reason"]
    # In discovery the same file is skipped: the process keeps the pattern's default, the cycle goes on.
    assert estimate_from_command(settings(), f"llama-server -m {path} --port 8080") is None


def test_a_partial_download_is_read_from_its_header_and_a_cut_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial.gguf"
    exact = write_gguf(path, "llama", llama_meta("llama", 2, 256, 4, 2, 512),
                       llama_tensors(2, 256, 4, 2, 512, 1024, matrix="F16"))
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)  # the data is cut, the header is whole
    assert read_gguf(path).weights_bytes == exact
    with path.open("r+b") as fh:
        fh.truncate(600)  # inside the tensor infos
    with pytest.raises(UsageError, match="truncated"):
        read_gguf(path)
    path.write_bytes(b"")
    with pytest.raises(UsageError, match="empty file"):
        read_gguf(path)


def test_folder_of_several_gguf_models_asks_which(fleet: Any, tmp_path: Path) -> None:
    for name in ("a-Q4_K_M.gguf", "a-Q8_0.gguf"):
        write_gguf(tmp_path / name, "llama", llama_meta("llama", 2, 256, 4, 2, 512),
                   llama_tensors(2, 256, 4, 2, 512, 1024, matrix="F16"))
    out = fleet("estimate", "--model", str(tmp_path), "--json")
    assert out.returncode == 2
    assert "2 GGUF models" in out.json()["reason"]


def test_hf_cache_ref_that_is_not_text_falls_back_to_the_snapshot(tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(QWEN_CONFIG))
    write_safetensors(snap / "model.safetensors", {"w": ("BF16", (4, 4))})
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_bytes(b"\xff\xfe\x00garbage")
    out = estimate(settings(), framework="vllm", model="org/tiny", environ={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert out["working_set"]["model_source"] == "hf_cache"


@pytest.mark.parametrize(("size", "low", "high"), [("500B", 450, 550), ("1000B", 950, 1050), ("7B", 6.5, 7.5),
                                                    ("0.5B", 0.45, 0.55), ("125M", 0.1, 0.15)])
def test_any_size_gets_a_shape_of_that_size(size: str, low: float, high: float) -> None:
    arch = estimate(settings(), framework="llama_cpp", model=size)["architecture"]
    assert low < arch["params"] / 1e9 < high


def test_absurd_sizes_are_refused(fleet: Any) -> None:
    out = fleet("estimate", "--model", "999999B", "--json")
    assert out.returncode == 2
    assert "implausible" in out.json()["reason"]


@pytest.mark.parametrize(("name", "params_b"), [("Qwen2.5-7B-Instruct-1M", 7), ("Qwen2.5-14B-Instruct-1M", 14),
                                                ("Llama-3.1-8B-Instruct-1M", 8)])
def test_a_1m_suffix_is_context_not_size(name: str, params_b: float) -> None:
    size = parse_size(name)
    assert size is not None
    assert size.params_b == params_b
    ws = estimate(settings(), framework="llama_cpp", model=name, ctx=4096)["working_set"]
    assert ws["weights_mb"] > 3000


def test_config_overhead_keys_in_any_spelling() -> None:
    s = settings(gpu_estimator={"framework_overhead": {"llama.cpp": 1.9, "Candle": 3.0}})
    for fw, mult in (("llama_cpp", 1.9), ("candle", 3.0)):
        ws = estimate(s, framework=fw, model="qwen2.5-7B-Q4_K_M", ctx=4096)["working_set"]
        assert ws["overhead_multiplier"] == mult


def test_mlx_is_offered_mlx_quantizations() -> None:
    out = estimate(settings(ram_mb=8192), framework="mlx", model="qwen2.5-7b-bf16", ctx=4096)
    assert out["fits"] is False
    quants = [a["quantization"] for a in out["alternatives"] if a["kind"] == "quantization"]
    assert quants
    assert quants[0].startswith("MLX-")


@pytest.mark.parametrize(("quant", "framework"), [("AWQ", "llama_cpp"), ("4bit", "candle"), ("Q4_K_M", "mlx")])
def test_a_framework_that_cannot_load_the_weights_is_a_usage_error(fleet: Any, quant: str, framework: str) -> None:
    out = fleet("estimate", "--model", "qwen2.5-7B", "--quant", quant, "--framework", framework, "--json")
    assert out.returncode == 2
    assert "cannot load" in out.json()["reason"]


def test_unknown_model_with_a_bad_kv_type_is_still_a_usage_error(fleet: Any) -> None:
    out = fleet("guard", "--model", "my-favourite-model", "--kv-dtype", "zz", "--json")
    assert (out.returncode, out.json()["allowed"]) == (2, False)


def test_tiny_models_are_sized_in_millions(tmp_path: Path) -> None:
    path = tmp_path / "toy.gguf"
    write_gguf(path, "llama", llama_meta("llama", 2, 256, 4, 2, 512), llama_tensors(2, 256, 4, 2, 512, 1024,
                                                                                      matrix="F16"))
    assert estimate(settings(), framework="llama_cpp", model=str(path))["working_set"]["model_size"].endswith("M")


def test_planning_an_8gb_mac_for_mlx_uses_the_wired_limit() -> None:
    mem = machine_memory(settings(ram_mb=None), 8192, "mlx")
    assert (mem.device, mem.limit_mb, mem.physical_ram_mb) == ("apple", 5461, 8192)
    ws = estimate(settings(ram_mb=None), framework="mlx", model="qwen2.5-0.5B", ram_mb=8192)["working_set"]
    # The RAM above the wired limit (2731MB) already exceeds the 2048MB reserve: nothing more is held back.
    assert ws["available_after_reserve_mb"] == 5461


class _Detected:
    def __init__(self, **kw: Any) -> None:
        self.physical_ram_mb = kw.get("ram", 65536)
        self.gpu_devices = kw.get("devices", ())
        self.apple_wired_limit_mb = kw.get("apple")


class _Dev:
    def __init__(self, free: int, total: int) -> None:
        self.free_mb, self.total_mb = free, total


def test_detected_nvidia_memory_is_free_vram(monkeypatch: pytest.MonkeyPatch) -> None:
    """The detection boundary (NVML, sysctl) is replaced; the real NVML path runs in bench/nvml_check.py."""
    import fleet_watch.probes.machine as machine

    two = (_Dev(10000, 24576), _Dev(20000, 24576))
    monkeypatch.setattr(machine, "detect_memory", lambda: _Detected(devices=two))
    split = memory_target.machine_memory(settings(ram_mb=None), None, "llama_cpp")
    assert (split.limit_mb, split.free_mb, split.origin) == (49152, 30000, "nvidia_free_vram")
    one = memory_target.machine_memory(settings(ram_mb=None), None, "vllm")
    assert (one.limit_mb, one.free_mb) == (24576, 20000)
    small_reserve = settings(ram_mb=None, reserve_mb=1024)
    assert memory_target.available_mb(small_reserve, one, 0) == (1024, 0, 20000)  # free VRAM caps it, not 23552


def test_detected_apple_memory_is_the_wired_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import fleet_watch.probes.machine as machine

    monkeypatch.setattr(machine, "detect_memory", lambda: _Detected(ram=32768, apple=21845))
    mem = memory_target.machine_memory(settings(ram_mb=None, reserve_mb=4096), None, "mlx")
    assert (mem.device, mem.limit_mb, mem.origin) == ("apple", 21845, "apple_wired_limit")
    # This machine keeps its configured reserve, as the ledger does (one budget per machine).
    assert memory_target.reserve_mb(settings(ram_mb=None, reserve_mb=4096), mem) == 4096


def test_a_fifo_is_refused_not_waited_on(fleet: Any, tmp_path: Path, servers: Any) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    out = fleet("estimate", "--model", str(fifo), "--json", timeout=20)
    assert out.returncode == 2
    assert "not a regular file" in out.json()["reason"]
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN_CONFIG))
    os.mkfifo(folder / "model.safetensors")
    assert fleet("estimate", "--model", str(folder), "--json", timeout=20).returncode == 2
    # A server whose command line names the FIFO must not freeze discovery either.
    servers.program("llama-server", "-m", str(fifo), "--port", "0")
    assert fleet("discover", "--json", timeout=30).returncode == 0


def test_deeply_nested_json_in_a_model_folder_is_a_usage_error(fleet: Any, tmp_path: Path) -> None:
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    out = fleet("estimate", "--model", str(folder), "--json")
    assert out.returncode == 2
    assert "nested too deeply" in out.json()["reason"]


def _gguf_with_counts(path: Path, n_tensors: int, n_kv: int, body: bytes = b"") -> None:
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body)


HUGE_ARRAY_KEY = b"tokenizer.ggml.tokens"
HOSTILE_COUNTS = {  # file name -> (tensors, metadata entries, body, the refusal)
    "kv.gguf": (0, (1 << 24) - 1, b"", "implausible counts: 0 tensors, 16777215 metadata entries"),
    "arr.gguf": (0, 1, struct.pack("<Q", len(HUGE_ARRAY_KEY)) + HUGE_ARRAY_KEY + struct.pack("<IIQ", 9, 8, 1 << 28),
                 "a string array claims 268435456 elements (at most 2097152)"),
}


def write_hostile_counts(path: Path) -> None:
    n_tensors, n_kv, body, _ = HOSTILE_COUNTS[path.name]
    _gguf_with_counts(path, n_tensors, n_kv, body)
    with path.open("r+b") as fh:
        fh.truncate(300 * 1024 * 1024)  # sparse zeros: every count "fits" in the file


@pytest.mark.parametrize("name", sorted(HOSTILE_COUNTS))
def test_hostile_gguf_counts_are_refused_before_reading_them(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_hostile_counts(path)
    with pytest.raises(UsageError, match=re.escape(HOSTILE_COUNTS[name][3])):
        read_gguf(path)


@pytest.mark.parametrize(("size", "params_b"), [("1T", 1000), ("1.5t", 1500)])
def test_trillions_as_a_bare_size(size: str, params_b: float) -> None:
    arch = estimate(settings(), framework="llama_cpp", model=size)["architecture"]
    assert abs(arch["params"] / 1e9 - params_b) / params_b < 0.01


def test_a_header_of_many_small_kept_arrays_is_refused_not_walked(tmp_path: Path) -> None:
    """Arrays of up to 4,096 numbers are kept (per-layer figures); 1,100 of them hold 4.5 M values, more than any
    real header, which the reader used to walk one value at a time (tens of seconds for a 66 MB file)."""
    body = b""
    for i in range(1100):
        key = f"junk.{i}".encode()
        body += struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 0, 4096) + b"\0" * 4096  # u8 arrays
    path = tmp_path / "slow.gguf"
    _gguf_with_counts(path, 0, 1100, body)
    with pytest.raises(UsageError, match="strings and array values"):
        read_gguf(path)


def test_a_partly_downloaded_or_empty_hf_folder_is_refused(fleet: Any, tmp_path: Path) -> None:
    """A 72B config.json with only the first of 31 shards, or a shard that holds no tensor, used to estimate the
    weights as what was there (0 MB): an allow for a model that cannot load."""
    partial = _folder(tmp_path, "partial", QWEN_CONFIG)
    write_safetensors(partial / "model-00001-of-00031.safetensors", {"w": ("BF16", [4, 4])})
    empty = _folder(tmp_path, "empty", QWEN_CONFIG)
    blob = b"{}      "
    (empty / "model.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob)
    for folder, said in ((partial, "30 of its 31 safetensors shards are missing"), (empty, "hold no tensors")):
        out = fleet("guard", "--model", str(folder), "--framework", "transformers", "--json")
        assert out.returncode == 2, out.stdout
        assert said in out.json()["reason"]


def test_mla_widths_are_bounded_like_every_other_shape_field(fleet: Any, tmp_path: Path) -> None:
    config = {**QWEN_CONFIG, "model_type": "deepseek_v3", "kv_lora_rank": 512, "q_lora_rank": 1536,
              "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 10**12}
    out = fleet("estimate", "--model", str(_folder(tmp_path, "mla", config)), "--json")
    assert out.returncode == 2, out.stdout
    assert "v_head_dim=" in out.json()["reason"]


def test_a_model_files_own_name_cannot_drive_the_terminal(fleet: Any, tmp_path: Path) -> None:
    path = tmp_path / "named-F16.gguf"
    name = "evil\x1b[2J\x1b]0;title\x07\r\nFITS" + "x" * 5000
    meta = {**llama_meta("llama", 2, 256, 4, 2, 512), "general.name": name}
    write_gguf(path, "llama", meta, llama_tensors(2, 256, 4, 2, 512, 1024, matrix="F16"))
    out = fleet("estimate", "--model", str(path))
    assert out.returncode in (0, 1), out.stderr
    assert "\x1b" not in out.stdout
    assert "\x07" not in out.stdout
    model_line = next(line for line in out.stdout.splitlines() if line.startswith("Model: "))
    assert len(model_line) < 300


def test_guard_and_estimate_take_the_same_context_range(fleet: Any) -> None:
    for command in ("guard", "estimate"):
        assert fleet(command, "--model", "qwen2.5-7B", "--ctx", "2000000", "--json").returncode in (0, 1), command
        refused = fleet(command, "--model", "qwen2.5-7B", "--ctx", "20000000", "--json")
        assert refused.returncode == 2, (command, refused.stdout)
