"""Running Thunder Compute's CLI: ``tnr --json status`` (ecosystem.md section 6), with a timeout and bounded output.

Fleet Watch never reads Thunder's token itself and never runs ``tnr delete``. The output goes to temporary files and
only the first ``MAX_OUTPUT_BYTES`` (plus one) are read back, so a runaway tool cannot exhaust memory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import NamedTuple

from fleet_watch.core.thunder import MAX_OUTPUT_BYTES
from fleet_watch.errors import ToolFailed, Unavailable

STATUS_ARGS = ("--json", "status")


class ToolRun(NamedTuple):
    returncode: int
    stdout: bytes
    stderr: bytes


def run_status(timeout_s: float) -> ToolRun:
    exe = shutil.which("tnr")
    if exe is None:
        raise Unavailable("tnr (the Thunder Compute CLI) is not on PATH: install it and run `tnr login`")
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run([exe, *STATUS_ARGS], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ToolFailed(f"tnr status did not finish within {timeout_s:g} s; nothing was changed") from exc
        except OSError as exc:
            raise ToolFailed(f"cannot run {exe}: {exc.strerror or exc}") from exc
        out.seek(0)
        err.seek(0)
        return ToolRun(proc.returncode, out.read(MAX_OUTPUT_BYTES + 1), err.read(64 * 1024))
