"""Builders for real model files: GGUF (gguf.GGUFWriter) and Hugging Face folders (real safetensors headers)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from fleet_watch.config import Settings, default_document, merge, settings_from_document


def settings(ram_mb: int | None = 131072, reserve_mb: int = 16384, **raw: Any) -> Settings:
    doc = merge(default_document(131072), raw)
    doc["physical_ram_mb"] = ram_mb
    doc["gpu_reserve_mb"] = reserve_mb
    doc["preferred_ports"] = []
    return settings_from_document(Path("/nonexistent"), doc)


TensorSpec = tuple[str, Sequence[int], str]  # name, shape as (ne0, ne1, ne2), ggml type


def write_gguf(path: Path, arch: str, meta: dict[str, Any], tensors: Sequence[TensorSpec], *,
               sparse_size: int | None = None) -> int:
    """Write a GGUF file; returns the exact tensor bytes. ``sparse_size``: header only, then a hole up to that size."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_uint32(key, value)
    rng = np.random.default_rng(0)
    total = 0
    for name, shape, type_name in tensors:
        qtype = getattr(gguf.GGMLQuantizationType, type_name)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(shape))
        nbytes = n // block * size
        total += nbytes
        np_shape = tuple(reversed(shape))  # numpy order is (ne2, ne1, ne0)
        if sparse_size is not None:
            w.add_tensor_info(name, np_shape, np.dtype(np.float32 if type_name == "F32" else np.float16), nbytes,
                              raw_dtype=qtype)
        elif type_name == "F32":
            w.add_tensor(name, rng.standard_normal(np_shape).astype(np.float32))
        elif type_name == "F16":
            w.add_tensor(name, rng.standard_normal(np_shape).astype(np.float16))
        elif type_name in ("Q8_0", "Q4_0"):
            data = gguf.quants.quantize(rng.standard_normal(np_shape).astype(np.float32), qtype)
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:  # K-quants etc.: right size, random bytes (the header is what is under test)
            rows = n // shape[0]
            raw = rng.integers(0, 255, size=(rows, shape[0] // block * size), dtype=np.uint8)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    if sparse_size is None:
        w.write_tensors_to_file()
    else:
        w.write_ti_data_to_file()
    w.close()
    if sparse_size is not None:
        with path.open("r+b") as fh:
            fh.truncate(sparse_size)
    return total


def llama_tensors(layers: int, hidden: int, heads: int, kv_heads: int, ff: int, vocab: int, *, matrix: str,
                  tied: bool = False, embd: str | None = None) -> list[TensorSpec]:
    hd = hidden // heads
    out: list[TensorSpec] = [("token_embd.weight", (hidden, vocab), embd or matrix)]
    for i in range(layers):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (hidden,), "F32"), (p + "attn_q.weight", (hidden, heads * hd), matrix),
                (p + "attn_k.weight", (hidden, kv_heads * hd), matrix),
                (p + "attn_v.weight", (hidden, kv_heads * hd), matrix),
                (p + "attn_output.weight", (heads * hd, hidden), matrix), (p + "ffn_norm.weight", (hidden,), "F32"),
                (p + "ffn_gate.weight", (hidden, ff), matrix), (p + "ffn_up.weight", (hidden, ff), matrix),
                (p + "ffn_down.weight", (ff, hidden), matrix)]
    out.append(("output_norm.weight", (hidden,), "F32"))
    if not tied:
        out.append(("output.weight", (hidden, vocab), matrix))
    return out


def llama_meta(arch: str, layers: int, hidden: int, heads: int, kv_heads: int, ff: int, ctx: int = 4096,
               file_type: int = 1, **extra: Any) -> dict[str, Any]:
    meta = {f"{arch}.block_count": layers, f"{arch}.embedding_length": hidden, f"{arch}.attention.head_count": heads,
            f"{arch}.attention.head_count_kv": kv_heads, f"{arch}.feed_forward_length": ff,
            f"{arch}.context_length": ctx, "general.file_type": file_type, "general.name": f"test-{arch}"}
    meta.update({f"{arch}.{k}": v for k, v in extra.items()})
    return meta


_ST_DTYPES = {"BF16": 2, "F16": 2, "F32": 4, "U32": 4, "I8": 1, "U8": 1}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, Sequence[int]]]) -> int:
    """A real safetensors file (zeros); returns the data bytes."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = int(np.prod(shape)) * _ST_DTYPES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.write(b"\0" * offset)
    return offset


@pytest.fixture
def gguf_writer() -> Callable[..., int]:
    return write_gguf


def estimate(settings_: Settings, *, environ: dict[str, str] | None = None, allocated_mb: int = 0,
             **request: Any) -> dict[str, Any]:
    """``service.estimate.evaluate`` for a request given as keywords (the fields of ``EstimateRequest``)."""
    from fleet_watch.service.estimate import EstimateRequest, evaluate

    return evaluate(settings_, EstimateRequest(**request), allocated_mb=allocated_mb, environ=environ)
