"""A stand-in model server started under a real-looking command line (``vllm serve ...``).

Listens on every ``--port`` (repeatable, comma lists allowed, 0 = any free port) on ``--host``, prints
the bound ports on one line, then obeys stdin: ``open`` opens one more listener and prints its port,
``close N`` closes port N and prints ``closed N``. It exits on EOF or after ``--lifetime`` seconds.
Unknown arguments (``serve``, ``--model``, ...) are ignored, as a real server's would be parsed.
"""

import argparse
import select
import socket
import sys
import time

parser = argparse.ArgumentParser(allow_abbrev=False)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", action="append", default=[])
parser.add_argument("--lifetime", type=float, default=300.0)
parser.add_argument("--busy", action="store_true", help="spin the CPU instead of idling")
args, _unknown = parser.parse_known_args()

family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
socks: dict[int, socket.socket] = {}


def listen(port: int) -> int:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((args.host, port))
    s.listen(8)
    bound = s.getsockname()[1]
    socks[bound] = s
    return bound


ports = [listen(int(p)) for spec in args.port for p in spec.split(",") if p]
print(" ".join(map(str, ports)), flush=True)
deadline = time.monotonic() + args.lifetime
while time.monotonic() < deadline:
    if args.busy:
        spin_until = time.monotonic() + 0.05
        while time.monotonic() < spin_until:
            pass
    ready, _, _ = select.select([sys.stdin], [], [], 0 if args.busy else 0.5)
    if not ready:
        continue
    line = sys.stdin.readline()
    if not line:
        break
    cmd = line.split()
    if cmd[:1] == ["open"]:
        print(listen(0), flush=True)
    elif cmd[:1] == ["close"] and len(cmd) == 2 and int(cmd[1]) in socks:
        socks.pop(int(cmd[1])).close()
        print(f"closed {cmd[1]}", flush=True)
sys.exit(0)
