"""Start stand-in model servers (``stand_in.py``) under the real programs' names.

``bin/<program>`` is a wrapper script (the kernel shows ``python .../bin/ollama serve``, as for an installed console
script); ``python -m sglang.launch_server`` is a real module in a temp package. Every process goes to the
``children`` fixture, which kills and reaps it (and only it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import stand_ins

STAND_IN = Path(__file__).with_name("stand_in.py")


class StandIns:
    def __init__(self, children: Any, root: Path) -> None:
        self.children = children
        self.bin = root / "bin"
        self.pkgs = root / "pkgs"
        self.logs = root / "logs"
        self.count = 0
        for d in (self.bin, self.pkgs, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    def start(self, fake: str, argv: list[str], *, mode: str = "ok", models: list[dict[str, Any]] | None = None,
              busy: bool = False, port: int = 0) -> subprocess.Popen[str]:
        """``argv[0]`` is a program name (``ollama``) or ``-m <module>``; the rest are its arguments."""
        if argv[0] == "-m":
            stand_ins.module(self.pkgs, argv[1], STAND_IN)
            cmd = [sys.executable, *argv]
        else:
            cmd = [str(stand_ins.program(self.bin, argv[0], STAND_IN)), *argv[1:]]
        self.count += 1
        log = self.logs / f"{self.count}.log"
        env = {**os.environ, "PYTHONPATH": str(self.pkgs), "FAKE_PROGRAM": fake, "FAKE_MODE": mode,
               "FAKE_LOG": str(log), "FAKE_PORT": str(port)}
        if models is not None:
            env["FAKE_MODELS"] = json.dumps(models)
        if busy:
            env["FAKE_BUSY"] = "1"
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        self.children.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.port = int(line)  # type: ignore[attr-defined]
        proc.log = log  # type: ignore[attr-defined]
        return proc


def requests_seen(proc: subprocess.Popen[str]) -> list[str]:
    path: Path = proc.log  # type: ignore[attr-defined]
    return path.read_text().splitlines() if path.exists() else []
