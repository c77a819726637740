"""Running the service managers' own tools (``systemctl``, ``launchctl``): found on PATH, run with a timeout,
their answer returned as data. A missing or hanging tool is ``Unavailable`` (exit 7), never a traceback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

from fleet_watch.errors import Unavailable

TIMEOUT_S = 30.0


class ToolResult(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """The tool's own first line of complaint, for a one-line error."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return text[0][:300] if text else f"exit status {self.returncode}"


def which(name: str) -> str | None:
    return shutil.which(name)


def run(argv: list[str], timeout_s: float = TIMEOUT_S) -> ToolResult:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as err:
        raise Unavailable(f"{argv[0]} not found") from err
    except subprocess.TimeoutExpired as err:
        raise Unavailable(f"{' '.join(argv)} did not answer within {timeout_s:g} s") from err
    except OSError as err:
        raise Unavailable(f"cannot run {argv[0]}: {err.strerror}") from err
    return ToolResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def lingering(user: str, linger_dir: Path = Path("/var/lib/systemd/linger")) -> bool:
    """Whether ``loginctl enable-linger`` is on for ``user`` (logind keeps a flag file per user)."""
    return (linger_dir / user).exists()
