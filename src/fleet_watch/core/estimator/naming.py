"""Reading a model name: family, size (decimals and MoE forms), and the catalog row it names.

Pure: the catalog document is passed in (``fleet_watch/data/models.json``, loaded by the service).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

# "0.5b", "1.5B", "8x7b", "30b-a3b", "235B-A22B", "20b", "405m": a size is digits (with decimals) then b/m,
# standing alone between separators, so "4bit", "qwen2.5" and "q4_k_m" are not sizes.
_SIZE_RE = re.compile(
    r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?:-a(\d+(?:\.\d+)?)b)?(?![a-z0-9])")


class SizeToken(NamedTuple):
    params_b: float  # the number in the name (per expert for "8x7b")
    experts: int = 0  # "8x7b" -> 8
    active_b: float | None = None  # "30b-a3b" -> 3

    @property
    def label(self) -> str:
        base = f"{self.experts}x{self.params_b:g}B" if self.experts else f"{self.params_b:g}B"
        return base + (f"-A{self.active_b:g}B" if self.active_b else "")


def normalize(text: str) -> str:
    """Lowercase; drop a directory and the ``.gguf`` suffix; turn ``_ : / space`` into ``-``."""
    low = text.strip().lower()
    low = re.sub(r"\.gguf$", "", low)
    low = re.sub(r"-\d{5}-of-\d{5}$", "", low)  # split-file shard suffix
    return re.sub(r"[\s_:/]+", "-", low)


def parse_size(text: str) -> SizeToken | None:
    """The model size in ``text``; the last standalone size wins (``llama-3.2-1b`` -> 1B, ``gpt-oss-20b`` -> 20B).

    Billions win over millions: in ``Qwen2.5-7B-Instruct-1M`` the ``1M`` is the context length, not the size.
    """
    billions: SizeToken | None = None
    millions: SizeToken | None = None
    for m in _SIZE_RE.finditer(normalize(text)):
        value = float(m.group(2))
        if value <= 0:
            continue
        experts = int(m.group(1)) if m.group(1) else 0
        active = float(m.group(4)) if m.group(4) else None
        if m.group(3) == "m":
            millions = SizeToken(value / 1000.0, experts, active)
        else:
            billions = SizeToken(value, experts, active)
    return billions or millions


def parse_bare_size(text: str) -> SizeToken | None:
    """A --model that is only a size, like ``7B``, ``0.5b`` or ``1T`` (trillions only here: inside a model name a
    ``t`` suffix is too often something else)."""
    stripped = text.strip()
    tera = re.fullmatch(r"(\d+(?:\.\d+)?)[tT]", stripped)
    if tera:
        return SizeToken(float(tera.group(1)) * 1000.0) if float(tera.group(1)) > 0 else None
    if re.fullmatch(r"(?:\d+x)?\d+(?:\.\d+)?[bBmM](?:-[aA]\d+(?:\.\d+)?[bB])?", stripped):
        return parse_size(stripped)
    return None


class CatalogMatch(NamedTuple):
    key: str
    row: Mapping[str, Any]
    size: SizeToken | None


def _size_matches(row: Mapping[str, Any], size: SizeToken) -> bool:
    if abs(float(row["size_b"]) - size.params_b) > 1e-6:
        return False
    if size.experts and row.get("experts_in_name") not in (None, size.experts):
        return False
    return not (size.active_b and row.get("active_b") not in (None, size.active_b))


def match_catalog(text: str, document: Mapping[str, Any]) -> CatalogMatch | None:
    """The catalog row that ``text`` names, case-insensitively, or None.

    The family comes from ``family_patterns`` (the longest match wins, so ``llama-3.2`` beats ``llama-3``), the
    row from the size in the name; a family with a single row (DeepSeek-V3) needs no size, nor does a row whose
    alias appears (``phi-3-mini``).
    """
    name = normalize(text)
    best_family, best_len = None, 0
    for family, patterns in document["family_patterns"].items():
        for pattern in patterns:
            m = re.search(pattern, name)
            if m and len(m.group(0)) > best_len:
                best_family, best_len = family, len(m.group(0))
    if best_family is None:
        return None
    rows = {k: v for k, v in document["models"].items() if v["family"] == best_family}
    size = parse_size(name)
    if size is not None:
        for key, row in rows.items():
            if _size_matches(row, size):
                return CatalogMatch(key, row, size)
        if size.experts == 0 and size.active_b is None and best_family == "deepseek-v3" and size.params_b < 600:
            return None  # "deepseek-r1:7b" is a distilled Qwen/Llama, not DeepSeek-V3
    for key, row in rows.items():
        if any(re.search(rf"(?<![a-z0-9]){re.escape(alias)}(?![a-z0-9])", name) for alias in row.get("aliases", [])):
            return CatalogMatch(key, row, size)
    if size is None and len(rows) == 1:
        key, row = next(iter(rows.items()))
        return CatalogMatch(key, row, None)
    return None


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for an error message: escaped (repr), and cut at ``limit`` characters with its length
    said, so that a 100,000-character argument is not echoed whole."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
