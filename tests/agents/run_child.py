"""A stand-in workload for the `fleet run` tests. It records what it saw when it started, logs the signals it gets,
and exits when told (a file appears) or when a signal tells it to; it gives up by itself after two minutes.

    run_child.py OUT_DIR [--exit N] [--go FILE] [--stay-on-int] [ARGS...]

On start it writes OUT_DIR/<pid>.json: its pid, argv, $PORT, and the PIDs that hold GPU claims in the registry at
that moment (read straight from registry.db, so that the snapshot is taken within milliseconds of the start).
"""

import json
import os
import signal
import sqlite3
import sys
import time

out = sys.argv[1]
args = sys.argv[2:]
code = int(args[args.index("--exit") + 1]) if "--exit" in args else 0
go = args[args.index("--go") + 1] if "--go" in args else None
stay_on_int = "--stay-on-int" in args
pid = os.getpid()


def on_signal(signo, frame):
    with open(os.path.join(out, f"{pid}.signals"), "a") as fh:
        fh.write(signal.Signals(signo).name + "\n")
    if signo == signal.SIGINT and stay_on_int:
        return
    sys.exit(100 + signo)


for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, on_signal)

seen = []
db = os.path.join(os.environ["FLEET_WATCH_HOME"], "registry.db")
if os.path.exists(db):
    with sqlite3.connect(db, timeout=10) as conn:
        seen = [row[0] for row in conn.execute(
            "SELECT p.pid FROM processes p JOIN claims c ON c.process_id = p.id WHERE c.kind = 'gpu'")]
tmp = os.path.join(out, f".{pid}.tmp")
with open(tmp, "w") as fh:
    json.dump({"pid": pid, "argv": sys.argv, "port_env": os.environ.get("PORT"), "seen_gpu_pids": seen,
               "session_env": os.environ.get("FLEET_SESSION_ID")}, fh)
os.replace(tmp, os.path.join(out, f"{pid}.json"))

deadline = time.monotonic() + 120
while go is not None and not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(code)
