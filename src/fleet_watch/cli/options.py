"""Parameter types shared by every command, so that one kind of value is checked one way everywhere.

Out-of-range, non-finite and absurdly long numbers are usage errors (exit 2) naming the flag, raised by click
before any command runs: ``--limit 99999999999999999999`` or ``--hours nan`` never reaches SQLite or arithmetic.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    _FloatType = click.ParamType[float]  # generic in the stubs of click >= 8.2; plain at runtime before
    _PortOrAutoType = click.ParamType[int | str]
else:
    _FloatType = _PortOrAutoType = click.ParamType

PORT = click.IntRange(1, 65535)
PID = click.IntRange(1, 2**31 - 1)
MB = click.IntRange(0, 2**40)  # a petabyte of GPU memory is still a number we can add up
PRIORITY = click.IntRange(1, 5)
DEVICE = click.IntRange(0, 4095)
COUNT = click.IntRange(1, 1_000_000)
CONTEXT = click.IntRange(1, 10_000_000)  # core.estimator.arch.MAX_CONTEXT: one range for guard and estimate


class FiniteFloat(_FloatType):
    """A float in [low, high]; NaN and infinities are refused (NaN passes every comparison-based range check)."""

    name = "number"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{str(value)[:40]!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{str(value)[:40]!r} is not a finite number from {self.low:g} to {self.high:g}", param, ctx)
        return number


class PortOrAuto(_PortOrAutoType):
    """A port number, or ``auto``: the first free port that really binds, picked inside the reservation."""

    name = "port|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if value == "auto":
            return "auto"
        return PORT.convert(value, param, ctx)
