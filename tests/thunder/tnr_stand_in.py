"""A stand-in for Thunder Compute's ``tnr`` (installed as ``bin/tnr`` on a temp PATH): prints what the test put in
``$FAKE_TNR_DIR`` (files ``stdout``, ``stderr``, ``exit``, ``sleep``) and appends its arguments to ``calls``.
Like thunder-cli 2.0.x, the "Fetching instances..." progress line goes to stderr when it is not on a terminal.
"""

import os
import sys
import time
from pathlib import Path

state = Path(os.environ["FAKE_TNR_DIR"])
with open(state / "calls", "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\n")
sys.stderr.write("Fetching instances...\n")
if (state / "sleep").exists():
    time.sleep(float((state / "sleep").read_text()))
if (state / "stdout").exists():
    sys.stdout.buffer.write((state / "stdout").read_bytes())
if (state / "stderr").exists():
    sys.stderr.buffer.write((state / "stderr").read_bytes())
sys.exit(int((state / "exit").read_text()) if (state / "exit").exists() else 0)
