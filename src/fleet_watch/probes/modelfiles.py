"""Reading model files without loading them: GGUF headers, safetensors headers, the Hugging Face cache.

* GGUF: ``probes.gguf_header`` parses the header on the standard library (metadata and tensor infos); the tensor
  data is never touched, so a 40 GB file, or a partial download of one, costs what its header costs. Split
  files: every shard's header.
* safetensors: an 8-byte little-endian header length, then a JSON header with each tensor's dtype, shape and data
  offsets (huggingface/safetensors format spec); stdlib only.
* Hugging Face cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
  ``~/.cache/huggingface/hub``; ``models--{org}--{name}/snapshots/<rev>`` with ``refs/main`` naming the revision.
  Offline: nothing is downloaded.
"""

from __future__ import annotations

import errno
import re
import stat
import struct
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from fleet_watch import jsonio
from fleet_watch.core.estimator.arch import Architecture
from fleet_watch.core.estimator.formats import (
    GGUF_FILE_TYPES,
    architecture_from_gguf,
    architecture_from_hf_config,
    quant_from_hf_config,
)
from fleet_watch.core.estimator.naming import shown
from fleet_watch.core.estimator.quant import Quant, parse_quant
from fleet_watch.errors import UsageError

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# More weights than any model has (the largest open models are a few TB at 16 bits): a header that claims more is
# damaged or hostile, and its figure would overflow the registry's integers.
MAX_WEIGHTS_BYTES = 1 << 50
_SAFETENSORS_SHARD_RE = re.compile(r"^(?P<stem>.*)-(?P<idx>\d{5})-of-(?P<n>\d{5})\.safetensors$")


def _plausible_weights(path: Path, total: int) -> int:
    if total > MAX_WEIGHTS_BYTES:
        raise UsageError(f"{_p(path)}: claims {total} bytes of weights, more than any model has (damaged header?)")
    return total
_SHARD_RE = re.compile(r"^(?P<stem>.*)-(?P<idx>\d{5})-of-(?P<n>\d{5})\.gguf$")


class ModelFile(NamedTuple):
    """What a model file or folder says about itself."""

    arch: Architecture
    weights_bytes: int
    quant: Quant
    model_source: str  # "gguf_header", "hf_folder", "hf_cache"
    path: str
    tensor_types: Mapping[str, int] = MappingProxyType({})  # ggml type -> bytes
    repack_bytes: int = 0  # Q4_0 / IQ4_NL matrices that llama.cpp copies into a CPU_REPACK buffer
    group_size: int = 64
    weights_exact: bool = True


def _gguf_shards(path: Path) -> list[Path]:
    m = _SHARD_RE.match(path.name)
    if not m:
        return [path]
    n = int(m.group("n"))
    shards = [path.with_name(f"{m.group('stem')}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise UsageError(f"{_p(path)}: split GGUF is missing shard(s) {', '.join(missing[:3])}")
    return shards


def read_gguf(path: Path) -> ModelFile:
    """Architecture, exact tensor bytes and type mix from a GGUF header (all shards of a split file)."""
    from fleet_watch.core.estimator.quant import ggml_bytes
    from fleet_watch.probes.gguf_header import GgufError, read_header

    meta: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    by_type: Counter[str] = Counter()
    total = 0
    repack = 0
    for shard in _gguf_shards(path):
        try:
            header = read_header(regular_file(shard))
        except GgufError as err:
            raise UsageError(f"{_p(shard)}: not a readable GGUF file ({err})") from err
        except OSError as err:
            raise UsageError(f"{_p(shard)}: cannot read ({err.strerror})") from err
        if not meta:
            meta = {k: v for k, v in header.metadata.items()
                    if not k.startswith("tokenizer.ggml.") or k == "tokenizer.ggml.model"}
        for t in header.tensors:
            shapes[t.name] = list(t.shape)
            n_bytes = ggml_bytes(t.type_name, t.n_elements)
            by_type[t.type_name] += n_bytes
            total += n_bytes
            if t.type_name in ("Q4_0", "IQ4_NL") and len(t.shape) >= 2 and t.name != "token_embd.weight" \
                    and t.shape[1] % 8 == 0:
                repack += n_bytes
    name = meta.get("general.name")
    arch = architecture_from_gguf(meta, shapes, name if isinstance(name, str) and name else path.name)
    file_type = meta.get("general.file_type")
    ftype = GGUF_FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    if ftype is None:
        named = parse_quant(path.name)
        ftype = named.label if named and named.is_gguf else max(by_type, key=lambda k: by_type[k], default="F16")
    total = _plausible_weights(path, total)
    quant = Quant(ftype, "gguf", 8.0 * total / max(1, arch.n_params()))
    return ModelFile(arch, total, quant, "gguf_header", str(path), dict(by_type), repack)


def _p(path: Path) -> str:
    """A path in an error message: quoted, and cut if it is long."""
    return shown(str(path), 200)


_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP)


def kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def path_kind(path: Path) -> str | None:
    """What is at ``path`` ("regular file", "directory", "character device", "FIFO", ...), or None when nothing
    is: no such entry, or a name no file can have (too long for the file system, a symlink loop, a NUL byte).
    Any other OS error (permission denied, I/O error) is raised: the caller says it in one line."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno in _NOT_THERE:
            return None
        raise
    except ValueError:  # an embedded NUL byte
        return None
    return kind_of(mode)


def regular_file(path: Path) -> Path:
    """``path`` if it is a regular file: a FIFO, socket or device would block or stream forever."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise UsageError(f"{_p(path)}: cannot read ({err.strerror})") from err
    if not stat.S_ISREG(mode):
        raise UsageError(f"{_p(path)}: not a regular file (a {kind_of(mode)})")
    return path


def read_safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with regular_file(path).open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise UsageError(f"{_p(path)}: truncated safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_SAFETENSORS_HEADER:
                raise UsageError(f"{_p(path)}: safetensors header of {length} bytes is implausible")
            header = jsonio.loads(fh.read(length))
    except jsonio.BadJson as err:
        raise UsageError(f"{_p(path)}: safetensors header is {err}") from err
    except OSError as err:
        raise UsageError(f"{_p(path)}: not a readable safetensors file ({err.strerror or err})") from err
    if not isinstance(header, dict):
        raise UsageError(f"{_p(path)}: safetensors header is not an object")
    return header


def safetensors_bytes(folder: Path) -> int | None:
    """Sum of the tensor byte ranges over every ``*.safetensors`` in ``folder``; None when there are none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    for f in files:  # a download cut short: `model-00001-of-00031.safetensors` alone is not the model
        m = _SAFETENSORS_SHARD_RE.match(f.name)
        if m:
            n = int(m.group("n"))
            missing = [i for i in range(1, n + 1)
                       if not (folder / f"{m.group('stem')}-{i:05d}-of-{n:05d}.safetensors").is_file()]
            if missing:
                raise UsageError(f"{_p(folder)}: {len(missing)} of its {n} safetensors shards are missing "
                                 f"(first: {missing[0]:05d}); is the download complete?")
    total = 0
    for f in files:
        for key, info in read_safetensors_header(f).items():
            if key == "__metadata__" or not isinstance(info, dict):
                continue
            offsets = info.get("data_offsets")
            if not (isinstance(offsets, list) and len(offsets) == 2
                    and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                    and 0 <= offsets[0] <= offsets[1]):
                raise UsageError(f"{_p(f)}: tensor {shown(key, 80)} has no valid data_offsets "
                                 "(two ascending integers)")
            total += offsets[1] - offsets[0]
    if total == 0:
        raise UsageError(f"{_p(folder)}: its safetensors files hold no tensors (an empty or unfinished download?)")
    return _plausible_weights(folder, total)


def read_hf_folder(folder: Path, *, model_source: str = "hf_folder") -> ModelFile:
    """Shapes from ``config.json``; weights from the safetensors headers (computed from the shape if absent)."""
    try:
        config = jsonio.loads(regular_file(folder / "config.json").read_bytes())
    except jsonio.BadJson as err:
        raise UsageError(f"{_p(folder)}: config.json is {err}") from err
    except OSError as err:
        raise UsageError(f"{_p(folder)}: config.json cannot be read ({err.strerror or err})") from err
    if not isinstance(config, dict):
        raise UsageError(f"{_p(folder)}: config.json must hold an object")
    arch = architecture_from_hf_config(config, str(config.get("_name_or_path") or folder.name))
    quant, group = quant_from_hf_config(config)
    weights = safetensors_bytes(folder)
    if weights is None:
        from fleet_watch.core.estimator.mix import weight_bytes

        return ModelFile(arch, weight_bytes(arch, quant, group_size=group), quant, model_source, str(folder),
                         group_size=group, weights_exact=False)
    return ModelFile(arch, weights, quant, model_source, str(folder), group_size=group)


def hf_cache_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser() / "hub"
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return Path(environ.get("HOME", str(Path.home()))).expanduser() / ".cache" / "huggingface" / "hub"


def hf_cache_snapshot(repo_id: str, environ: Mapping[str, str]) -> Path | None:
    """The cached snapshot folder of ``org/name`` (``refs/main`` first, else the newest), or None."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", repo_id):
        return None
    repo = hf_cache_dir(environ) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        rev = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        rev = ""
    if re.fullmatch(r"[0-9a-fA-F]{7,64}", rev) and (snapshots / rev).is_dir():
        return snapshots / rev
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def read_hf_cache(repo_id: str, environ: Mapping[str, str], quant_hint: Quant | None) -> ModelFile | None:
    try:
        return _read_hf_cache(repo_id, environ, quant_hint)
    except OSError as err:
        where = shown(str(hf_cache_dir(environ)), 120)
        raise UsageError(f"Hugging Face cache {where}: cannot be read ({err.strerror or err})") from err


def _read_hf_cache(repo_id: str, environ: Mapping[str, str], quant_hint: Quant | None) -> ModelFile | None:
    snapshot = hf_cache_snapshot(repo_id, environ)
    if snapshot is None:
        return None
    if (snapshot / "config.json").is_file():
        return read_hf_folder(snapshot, model_source="hf_cache")
    ggufs = sorted(p for p in snapshot.glob("*.gguf") if not _SHARD_RE.match(p.name) or "-00001-of-" in p.name)
    if quant_hint is not None:
        wanted = [p for p in ggufs if (q := parse_quant(p.name)) is not None and q.label == quant_hint.label]
        ggufs = wanted or ggufs
    if not ggufs:
        return None
    found = read_gguf(ggufs[0])
    return ModelFile(found.arch, found.weights_bytes, found.quant, "hf_cache", found.path, found.tensor_types,
                     found.repack_bytes)


def read_model_path(path: Path, kind: str) -> ModelFile:
    """A ``.gguf`` file (or first shard), or a Hugging Face model folder (or a folder holding one GGUF model).
    ``kind``: what ``path_kind`` found there."""
    if kind == "directory":
        if (path / "config.json").is_file():
            return read_hf_folder(path)
        ggufs = sorted(p for p in path.glob("*.gguf") if not _SHARD_RE.match(p.name) or "-00001-of-" in p.name)
        if len(ggufs) == 1:
            return read_gguf(ggufs[0])
        if ggufs:
            names = ", ".join(p.name for p in ggufs[:4]) + (", ..." if len(ggufs) > 4 else "")
            raise UsageError(f"{_p(path)}: holds {len(ggufs)} GGUF models ({names}); pass the file you will run")
        raise UsageError(f"{_p(path)}: a model folder needs a config.json (or a .gguf file)")
    if path.suffix.lower() == ".gguf" or kind == "regular file":
        return read_gguf(path)
    raise UsageError(f"{_p(path)} is a {kind}, not a model file (a .gguf file or a model folder)")
