"""Race tests' contestants: each imports everything first, says so with a file, then waits for the gate file, so that
all of them hit the database together however slowly a loaded machine starts them."""

from __future__ import annotations


def racer_script(*modules: str) -> str:
    """``python -c`` source: argv is ``gate ready fleet-args...``; ``modules`` are imported before the wait."""
    return f"""
import os, sys, time
from fleet_watch.cli import main
import {", ".join(modules)}
gate, ready = sys.argv[1], sys.argv[2]
open(ready, "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.002)
sys.exit(main(sys.argv[3:]))
"""
