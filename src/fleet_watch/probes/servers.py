"""HTTP to model servers on this machine: loopback only, short timeouts, all requests of a round in parallel.

One round has one deadline. Every request starts at once on its own thread (a hung server occupies its threads, not
the others'); a socket still open at the deadline is shut down, so the round ends at the deadline even if a server
trickles bytes, and no thread outlives it by more than a moment. A server's behaviour is reported (``Answer.failure``,
``status``), never raised. Request headers (an API key) are never copied into an answer.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ALL_COMPLETED, ThreadPoolExecutor, wait
from typing import NamedTuple

from fleet_watch.core.servers import CLOSED, LOOPBACK_V4, LOOPBACK_V6, NOT_HTTP, REFUSED, RESET, TIMEOUT, Answer

MAX_BODY = 4 * 1024 * 1024  # /metrics of a busy vLLM is tens of KB; anything near this is not an API answer
_CHUNK = 65536
_MAX_THREADS = 64
_GRACE_S = 0.05  # after the deadline: time for shut-down sockets to wake their threads


class Request(NamedTuple):
    host: str
    port: int
    path: str
    method: str = "GET"
    body: bytes | None = None
    api_key: str | None = None


class _Round:
    """The sockets a round has open, so that the deadline can close what is still talking."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[int, socket.socket] = {}
        self.expired = False

    def track(self, index: int, sock: socket.socket | None) -> None:
        with self.lock:
            if sock is None:
                self.open.pop(index, None)
            elif self.expired:
                _shutdown(sock)
            else:
                self.open[index] = sock

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.open.values():
                _shutdown(sock)
            self.open.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline")
    return left


def exchange(req: Request, deadline: float, *, tracker: _Round | None = None, index: int = 0) -> Answer:
    """One HTTP request to a loopback address, finished by ``deadline`` (a ``time.monotonic()`` value)."""
    if req.host not in (LOOPBACK_V4, LOOPBACK_V6):
        return Answer(failure=f"refused to ask {req.host}: only loopback is asked")
    headers = {"Accept": "application/json", "Connection": "close", "User-Agent": "fleet-watch"}
    if req.api_key:
        headers["Authorization"] = f"Bearer {req.api_key}"
    if req.body is not None:
        headers["Content-Type"] = "application/json"
    conn: http.client.HTTPConnection | None = None
    try:
        conn = http.client.HTTPConnection(req.host, req.port, timeout=_remaining(deadline))
        conn.connect()
        sock = conn.sock
        assert sock is not None
        if tracker is not None:
            tracker.track(index, sock)
        conn.request(req.method, req.path, body=req.body, headers=headers)
        sock.settimeout(_remaining(deadline))
        resp = conn.getresponse()
        body = bytearray()
        truncated = False
        while True:
            sock.settimeout(_remaining(deadline))
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            body += chunk
            if len(body) > MAX_BODY:
                truncated = True
                break
        return Answer(status=resp.status, content_type=resp.getheader("Content-Type") or "", body=bytes(body),
                      truncated=truncated)
    except ConnectionRefusedError:
        return Answer(failure=REFUSED)
    except http.client.RemoteDisconnected:
        return Answer(failure=CLOSED)
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return Answer(failure=RESET)
    except TimeoutError:  # socket.timeout is TimeoutError
        return Answer(failure=TIMEOUT)
    except http.client.HTTPException:
        return Answer(failure=NOT_HTTP)
    except OSError as err:
        if time.monotonic() >= deadline:  # our own shutdown at the deadline
            return Answer(failure=TIMEOUT)
        return Answer(failure=(err.strerror or type(err).__name__)[:120])
    finally:
        if tracker is not None:
            tracker.track(index, None)
        if conn is not None:
            conn.close()


def fetch_all(requests: Sequence[Request], timeout_s: float) -> list[Answer]:
    """All requests at once; each answer, in order, within ``timeout_s`` of the call (plus a moment)."""
    if not requests:
        return []
    deadline = time.monotonic() + timeout_s
    tracker = _Round()
    answers: list[Answer] = [Answer(failure=TIMEOUT)] * len(requests)
    pool = ThreadPoolExecutor(max_workers=min(_MAX_THREADS, len(requests)), thread_name_prefix="fleet-http")
    try:
        futures = {pool.submit(exchange, r, deadline, tracker=tracker, index=i): i for i, r in enumerate(requests)}
        done, _ = wait(futures, timeout=timeout_s + _GRACE_S, return_when=ALL_COMPLETED)
        tracker.expire()
        for fut in done:
            try:
                answers[futures[fut]] = fut.result()
            except Exception as err:  # noqa: BLE001 - one odd server costs its own answer, never the round
                answers[futures[fut]] = Answer(failure=f"probe error: {type(err).__name__}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return answers


def send(req: Request, timeout_s: float) -> Answer:
    """One request on the calling thread (an unload, its confirmation)."""
    return exchange(req, time.monotonic() + timeout_s)
