"""A holder that ignores SIGTERM: listens on a loopback port, prints it, idles until SIGKILL or 10 minutes pass."""

import argparse
import os
import signal
import socket
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--obey", action="store_true", help="exit on SIGTERM (the default handler) instead")
parser.add_argument("--keeper", action="store_true", help="fork a child that inherits the listening socket")
args = parser.parse_args()
if not args.obey:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", args.port))
sock.listen(8)
keeper = 0
if args.keeper:
    keeper = os.fork()
    if keeper == 0:  # the child keeps the socket open after its parent is gone
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(600)
        os._exit(0)
print(sock.getsockname()[1], keeper, flush=True)
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    time.sleep(0.5)
sys.exit(0)
