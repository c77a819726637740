"""Start fake model servers whose command lines look like the real thing, as the kernel shows them.

A wrapper script named after the real program (``bin/vllm``, ``bin/llama-server``, ``bin/ollama``) runs
``fake_server.py``; the kernel records ``python .../bin/vllm serve ...`` as the command line, just as
for a pip-installed console script. ``mlx_lm.server`` is a real ``python -m`` module in a temp package.
Every process is appended to the ``children`` fixture, which kills and reaps it (and only it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import stand_ins

FAKE_SERVER = Path(__file__).with_name("fake_server.py")


class Servers:
    def __init__(self, children: Any, root: Path) -> None:
        self.children = children
        self.bin = root / "bin"
        self.pkgs = root / "pkgs"
        self.started: list[subprocess.Popen[str]] = []
        self.bin.mkdir(parents=True, exist_ok=True)
        self.pkgs.mkdir(parents=True, exist_ok=True)

    def _start(self, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(self.pkgs)}
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                cwd=cwd)
        self.children.procs.append(proc)
        self.started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.bound_ports = [int(p) for p in line.split()]  # type: ignore[attr-defined]
        return proc

    def program(self, name: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        """``bin/<name> *args`` (include ``--port 0`` flags for listeners)."""
        return self._start([str(stand_ins.program(self.bin, name, FAKE_SERVER)), *args], cwd=cwd)

    def module(self, dotted: str, *args: str) -> subprocess.Popen[str]:
        """``python -m <dotted> *args``."""
        stand_ins.module(self.pkgs, dotted, FAKE_SERVER)
        return self._start([sys.executable, "-m", dotted, *args])


    def close(self) -> None:
        """Stop what this helper started (only that) and close the pipes to it."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def command(proc: subprocess.Popen[str], line: str) -> str:
    """Send a control line to a fake server and return its one-line answer."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()
