"""Validation of values that come from outside (flags, JSON, hook payloads): one rule per kind of value.

Each function returns the value it accepts or raises ``UsageError`` with a one-line message that quotes the
input truncated, so that a 100,000-character argument is never echoed whole.
"""

from __future__ import annotations

import math
import unicodedata

from fleet_watch.errors import UsageError

MAX_TEXT = 200  # names, workstreams, session ids, reasons
MAX_PATH = 4096  # PATH_MAX on Linux; longer paths cannot name a directory anyway


def quote(value: object, limit: int = 60) -> str:
    """``repr`` of an outside value, cut to ``limit`` characters with the full length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 3]}... ({len(str(value))} characters)"


_CONTROL = ("Cc", "Cf", "Zl", "Zp")  # what could forge a line or hide text in a table, a log or a terminal
_SURROGATE = "Cs"  # bytes that were not UTF-8 (Python's surrogateescape): SQLite and JSON readers refuse them


def text(label: str, value: str, *, max_len: int = MAX_TEXT, allow_empty: bool = False) -> str:
    """A one-line label: no control characters (newlines would forge lines in tables and logs), bounded length."""
    if not allow_empty and not value.strip():
        raise UsageError(f"{label} must not be empty")
    if len(value) > max_len:
        raise UsageError(f"{label} is {len(value)} characters long; at most {max_len}")
    for ch in value:
        category = unicodedata.category(ch)
        if category in _CONTROL:
            raise UsageError(f"{label} must not contain control characters ({quote(value)})")
        if category == _SURROGATE:
            raise UsageError(f"{label} is not valid UTF-8 ({quote(value)})")
    return value


def from_outside(value: str) -> str:
    """Text another process gave us (a command line, a file name) made storable: bytes that were not UTF-8, which
    Python carries as lone surrogates, are written as ``\\xff`` escapes. Never raises."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")


def is_control(ch: str) -> bool:
    """A character that ``text`` refuses: control (C0, C1, DEL), format (bidi overrides, zero-width), line or
    paragraph separators, and the lone surrogates that stand for bytes that were not UTF-8."""
    category = unicodedata.category(ch)
    return category in _CONTROL or category == _SURROGATE


def one_line(value: str) -> str:
    """``value`` with every character that ``text`` refuses written as an escape (``\\n``, ``\\x1b``,
    ``\\u200b``): for recording something legitimate that holds them, such as a command that ``fleet run`` starts."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if is_control(ch) else ch for ch in value)


def port(value: int | None, label: str = "port") -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise UsageError(f"{label} must be between 1 and 65535, got {quote(value)}")
    return value


def pid(value: int, label: str = "--pid") -> int:
    if not 1 <= value <= 2**31 - 1:
        raise UsageError(f"{label} must be a positive process id, got {quote(value)}")
    return value


def non_negative(value: int | None, label: str, *, maximum: int = 2**53) -> int | None:
    if value is not None and not 0 <= value <= maximum:
        raise UsageError(f"{label} must be between 0 and {maximum}, got {quote(value)}")
    return value


def finite(value: float | None, label: str, *, low: float = 0.0, high: float = 1e9) -> float | None:
    """A float flag: NaN and infinities are refused, not compared (NaN would pass every range test)."""
    if value is not None and (not math.isfinite(value) or not low <= value <= high):
        raise UsageError(f"{label} must be a finite number from {low:g} to {high:g}, got {quote(value)}")
    return value


def priority(value: int) -> int:
    if not 1 <= value <= 5:
        raise UsageError(f"priority must be 1-5, got {quote(value)}")
    return value


def display_width(value: str) -> int:
    """Terminal columns: East Asian wide and full-width characters take two, combining marks none."""
    width = 0
    for ch in value:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def fit(value: str, columns: int) -> str:
    """``value`` cut and padded to exactly ``columns`` terminal columns (wide characters count twice); a control
    character (``is_control``: a line break, a terminal escape) is a space, so a cell stays one cell."""
    out: list[str] = []
    used = 0
    for ch in value:
        if not ch.isprintable() and is_control(ch):
            ch = " "
        w = 0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + w > columns:
            break
        out.append(ch)
        used += w
    return "".join(out) + " " * (columns - used)
