"""A stand-in model server: listens on loopback ports, prints them, idles until killed or 10 minutes pass.

Extra arguments are ignored, so a test can give it a command line like ``vllm serve model --port N``.
"""

import argparse
import socket
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--ports", default="0")
parser.add_argument("--lifetime", type=float, default=600.0)
args, _unknown = parser.parse_known_args()

family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
socks = []
for port in (int(p) for p in args.ports.split(",") if p):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((args.host, port))
    s.listen(16)
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
deadline = time.monotonic() + args.lifetime
while time.monotonic() < deadline:
    time.sleep(0.5)
sys.exit(0)
