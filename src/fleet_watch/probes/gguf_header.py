"""A GGUF header reader on the standard library: metadata and tensor infos, never the tensor data.

Why not ``gguf.GGUFReader``: it builds a numpy view for every field, the vocabulary included, which took 5.6 s for
a header with Qwen2.5's 151,936 tokens and 150,000 merges (and ``import gguf`` alone 84 ms, for numpy). Here long
arrays are skipped by walking their lengths (tens of milliseconds) and nothing past the tensor infos is read, so a
40 GB file costs what its header costs. The ``gguf`` package stays the oracle: tests write files with
``GGUFWriter`` and check this reader against ``GGUFReader`` field by field.

Layout (ggml-org/ggml ``docs/gguf.md``, versions 2 and 3): magic ``GGUF``, u32 version, u64 tensor count, u64
metadata count; each metadata entry is a string key, a u32 value type and the value (arrays: u32 element type, u64
count, elements); then per tensor a string name, u32 n_dims, u64 dims (ne0 first), u32 ggml type, u64 offset.
Strings are a u64 length and UTF-8 bytes. A file whose version reads byte-swapped is big-endian.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any, NamedTuple

from fleet_watch.core.estimator.naming import shown

# enum ggml_type (ggml/include/ggml.h); the same ids as gguf.GGMLQuantizationType (checked in tests).
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K",
    12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
    20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}
_STRING, _ARRAY = 8, 9
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
MAX_ARRAY_KEPT = 4096  # longer arrays (vocabulary, merges, scores) are skipped: None in the metadata
# Bounds far above real files (tens of metadata entries, a few thousand tensors, vocabularies of 262,144 and merge
# lists of ~500,000), so that a hostile header cannot make the walk take seconds: every element costs a step.
_MAX_KV = 1 << 16
_MAX_TENSORS = 1 << 18
_MAX_STRINGS = 1 << 21
_MAX_DIMS = 8


class GgufError(ValueError):
    """The file is not a GGUF file this reader understands, or its header is damaged or truncated."""


class TensorInfo(NamedTuple):
    name: str
    shape: tuple[int, ...]  # ne0 (row length) first
    type_name: str

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class GgufHeader(NamedTuple):
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]


class _Cursor:
    def __init__(self, buf: mmap.mmap, order: str) -> None:
        self.buf, self.order, self.pos = buf, order, 0
        self.strings_left = 2 * _MAX_STRINGS  # strings and kept numbers, over the whole header, not per array

    def spend(self, count: int) -> None:
        self.strings_left -= count
        if self.strings_left < 0:
            raise GgufError(f"the header holds more than {2 * _MAX_STRINGS} strings and array values")

    def take(self, fmt: str) -> Any:
        st = struct.Struct(self.order + fmt)
        if self.pos + st.size > len(self.buf):
            raise GgufError("header ends early (truncated file?)")
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def string(self) -> str:
        n = self.take("Q")
        if n > len(self.buf) - self.pos:
            raise GgufError("a string runs past the end of the file (damaged or truncated header)")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        length = struct.Struct(self.order + "Q")
        end = len(self.buf)
        pos = self.pos
        for _ in range(count):
            if pos + 8 > end:
                raise GgufError("header ends early (truncated file?)")
            pos += 8 + length.unpack_from(self.buf, pos)[0]
        if pos > end:
            raise GgufError("a string array runs past the end of the file")
        self.pos = pos

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.take("I"), self.take("Q")
            if count > len(self.buf):
                raise GgufError(f"an array claims {count} elements, more than the file has bytes")
            if etype == _STRING:
                if count > _MAX_STRINGS:
                    raise GgufError(f"a string array claims {count} elements (at most {_MAX_STRINGS})")
                self.spend(count)
                if count > MAX_ARRAY_KEPT:
                    self.skip_strings(count)
                    return None
                return [self.string() for _ in range(count)]
            if etype not in _SCALARS:
                raise GgufError(f"unknown array element type {etype}")
            size = struct.calcsize(_SCALARS[etype])
            if count > MAX_ARRAY_KEPT:
                if self.pos + size * count > len(self.buf):
                    raise GgufError("an array runs past the end of the file")
                self.pos += size * count
                return None
            self.spend(count)  # kept values count against the header's budget, as strings do
            st = struct.Struct(f"{self.order}{count}{_SCALARS[etype]}")
            if self.pos + st.size > len(self.buf):
                raise GgufError("an array runs past the end of the file")
            values = list(st.unpack_from(self.buf, self.pos))  # one call, not one per element
            self.pos += st.size
            return values
        if vtype not in _SCALARS:
            raise GgufError(f"unknown metadata value type {vtype}")
        return self.take(_SCALARS[vtype])


def read_header(path: Path) -> GgufHeader:
    """Metadata (arrays longer than ``MAX_ARRAY_KEPT`` as None) and tensor infos of one GGUF file."""
    with path.open("rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as err:  # an empty file cannot be mapped
            raise GgufError("empty file") from err
    with buf:
        if buf[:4] != b"GGUF":
            raise GgufError("no GGUF magic at the start of the file")
        order = "<"
        cur = _Cursor(buf, order)
        cur.pos = 4
        version = cur.take("I")
        if version > 0xFFFF:  # reads byte-swapped: a big-endian file
            cur.order = order = ">"
            cur.pos = 4
            version = cur.take("I")
        if version not in (2, 3):
            raise GgufError(f"GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = cur.take("Q"), cur.take("Q")
        if n_tensors > _MAX_TENSORS or n_kv > _MAX_KV:
            raise GgufError(f"implausible counts: {n_tensors} tensors, {n_kv} metadata entries")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.take("I"))
        tensors: list[TensorInfo] = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.take("I")
            if not 1 <= n_dims <= _MAX_DIMS:
                raise GgufError(f"tensor {shown(name)} has {n_dims} dimensions")
            shape = tuple(cur.take("Q") for _ in range(n_dims))
            type_id = cur.take("I")
            cur.take("Q")  # data offset: the data is never read
            type_name = GGML_TYPE_NAMES.get(type_id)
            if type_name is None:
                raise GgufError(f"tensor {shown(name)} has unknown ggml type {type_id}")
            tensors.append(TensorInfo(name, shape, type_name))
    return GgufHeader(version, metadata, tuple(tensors))
