"""Reading JSON that comes from outside (config, model files, our own state files that anyone may edit).

Stricter than ``json.loads``: ``NaN``/``Infinity`` and numbers that overflow to infinity are refused (they would
leak into output that is then not JSON), and nesting deep enough to exhaust the parser's recursion is an error
like any other malformed document, not an internal crash.
"""

from __future__ import annotations

import json
import math
from typing import Any


class BadJson(ValueError):
    """The text is not JSON this program accepts; the message says why, in one line."""


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"number {text[:40]} is out of range")
    return value


def loads(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except BadJson:
        raise
    except json.JSONDecodeError as err:
        raise BadJson(f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    except RecursionError as err:
        raise BadJson("nested too deeply") from err
    except UnicodeDecodeError as err:
        raise BadJson(f"not UTF-8 ({err.reason} at byte {err.start})") from err
    except ValueError as err:  # e.g. an integer longer than Python's 4300-digit conversion limit
        raise BadJson(f"not acceptable JSON ({str(err).splitlines()[0][:120]})") from err
