"""The stdlib GGUF header reader against the ``gguf`` package: files written by ``GGUFWriter``, read by both
``GGUFReader`` (the oracle) and ``fleet_watch.probes.gguf_header``, must agree on every field and tensor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from fleet_watch.core.estimator.quant import GGML_BLOCKS, ggml_bytes
from fleet_watch.probes.gguf_header import GGML_TYPE_NAMES, MAX_ARRAY_KEPT, GgufError, read_header
from tests.estimator.conftest import llama_meta, llama_tensors, write_gguf


def _oracle(path: Path) -> tuple[dict[str, Any], dict[str, tuple[tuple[int, ...], str, int]]]:
    reader = gguf.GGUFReader(path, "r")
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # the reader's own pseudo-fields (version, counts)
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            if len(field.data) > MAX_ARRAY_KEPT:
                meta[key] = None
            elif field.types[1] == gguf.GGUFValueType.STRING:
                meta[key] = [bytes(field.parts[i]).decode() for i in field.data]
            else:
                meta[key] = [field.parts[i].tolist()[0] for i in field.data]
        elif kind == gguf.GGUFValueType.STRING:
            meta[key] = bytes(field.parts[field.data[0]]).decode()
        else:
            meta[key] = field.parts[field.data[0]].tolist()[0]
    tensors = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors}
    return meta, tensors


def _with_vocab(path: Path, n_tokens: int) -> None:
    w = gguf.GGUFWriter(str(path), "qwen2")
    for key, value in llama_meta("qwen2", 2, 256, 4, 2, 512, ctx=32768).items():
        if isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)
    w.add_float32("qwen2.rope.freq_base", 1000000.0)
    w.add_bool("general.flag", True)
    w.add_array("qwen2.small_list", [1, 2, 3])
    w.add_array("general.tags", ["a", "b"])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}".encode() for i in range(n_tokens)])
    w.add_token_types([1] * n_tokens)
    w.add_token_merges([b"a b"] * n_tokens)
    rng = np.random.default_rng(1)
    w.add_tensor("token_embd.weight", rng.standard_normal((1024, 256)).astype(np.float16))
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal((256,)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("matrix", ["F16", "Q8_0", "Q4_0", "Q4_K", "Q6_K", "IQ4_XS", "Q2_K"])
def test_agrees_with_the_gguf_package(tmp_path: Path, matrix: str) -> None:
    path = tmp_path / f"m-{matrix}.gguf"
    write_gguf(path, "llama", llama_meta("llama", 2, 256, 4, 2, 512, file_type=15),
               llama_tensors(2, 256, 4, 2, 512, 1024, matrix=matrix))
    meta, tensors = _oracle(path)
    header = read_header(path)
    assert header.metadata == meta
    assert {t.name: (t.shape, t.type_name, ggml_bytes(t.type_name, t.n_elements)) for t in header.tensors} == tensors


def test_a_real_sized_vocabulary_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    _with_vocab(path, 151_936)  # Qwen2.5's vocabulary size
    meta, tensors = _oracle(path)
    header = read_header(path)  # bench/estimator_inputs.py measures how long this takes
    assert header.metadata == meta
    assert header.metadata["tokenizer.ggml.tokens"] is None
    assert header.metadata["qwen2.small_list"] == [1, 2, 3]
    assert header.metadata["general.tags"] == ["a", "b"]
    assert {t.name for t in header.tensors} == set(tensors)


def test_type_ids_and_block_sizes_match_the_package() -> None:
    for qtype in gguf.GGMLQuantizationType:
        assert GGML_TYPE_NAMES.get(qtype.value) == qtype.name
        assert GGML_BLOCKS[qtype.name] == tuple(gguf.GGML_QUANT_SIZES[qtype])


@pytest.mark.parametrize(("blob", "message"), [
    (b"GGML" + b"\0" * 64, "no GGUF magic"),
    (b"GGUF" + (1).to_bytes(4, "little") + b"\0" * 16, "version 1"),
    (b"GGUF" + (3).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little") + b"\0" * 8, "implausible counts"),
    (b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
     + (1 << 50).to_bytes(8, "little"), "past the end"),
    (b"GGUF" + (3).to_bytes(4, "little"), "ends early"),
])
def test_damaged_headers_are_named(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(blob)
    with pytest.raises(GgufError, match=message):
        read_header(path)


def test_big_endian_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_uint32("llama.block_count", 2)
    w.add_string("general.name", "be")
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float16).byteswap())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    header = read_header(path)
    assert header.metadata["llama.block_count"] == 2
    assert header.metadata["general.name"] == "be"
    assert [(t.name, t.shape, t.type_name) for t in header.tensors] == [("token_embd.weight", (32, 8), "F16")]
