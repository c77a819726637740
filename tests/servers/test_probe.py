"""The HTTP probe against real loopback sockets that misbehave: hang, trickle, reset, refuse, flood."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fleet_watch.core import servers as core
from fleet_watch.probes import servers as http
from tests.helpers.ports import free_port


@pytest.fixture
def listener() -> Iterator[Callable[[Callable[[socket.socket], None] | None], int]]:
    """Loopback listeners; each runs ``behave(conn)`` per accepted connection (None: never accept)."""
    socks: list[socket.socket] = []
    stop = threading.Event()

    def make(behave: Callable[[socket.socket], None] | None) -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        socks.append(s)
        if behave is not None:
            def loop() -> None:
                s.settimeout(0.2)
                while not stop.is_set():
                    try:
                        conn, _ = s.accept()
                    except OSError:
                        continue
                    threading.Thread(target=behave, args=(conn,), daemon=True).start()
            threading.Thread(target=loop, daemon=True).start()
        return int(s.getsockname()[1])

    yield make
    stop.set()
    for s in socks:
        s.close()


def trickle(conn: socket.socket) -> None:
    """Headers, then one byte every 50 ms for at most 20 s: without a round deadline a read would last that long."""
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        end = time.monotonic() + 20
        while time.monotonic() < end:
            conn.sendall(b" ")
            time.sleep(0.05)
    except OSError:
        pass
    finally:
        conn.close()


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def flood(conn: socket.socket) -> None:
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        chunk = b"[" * 65536
        for _ in range(200):  # 13 MB, more than the probe reads
            conn.sendall(chunk)
    except OSError:
        pass
    finally:
        conn.close()


def answer_json(conn: socket.socket) -> None:
    conn.recv(4096)
    body = b'{"models": []}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))
    conn.close()




def test_one_round_reports_each_misbehaviour_and_the_good_answer(listener: Callable[..., int]) -> None:
    hang, slow, rst, big, good = (listener(None), listener(trickle), listener(reset), listener(flood),
                                  listener(answer_json))
    refused = free_port()
    requests = [http.Request("127.0.0.1", p, "/api/ps") for p in (hang, slow, rst, big, good, refused)]
    answers = http.fetch_all(requests, 0.5)
    assert [a.failure for a in answers[:3]] == [core.TIMEOUT, core.TIMEOUT, core.RESET]
    assert answers[3].truncated
    assert len(answers[3].body) > http.MAX_BODY
    assert answers[4].status == 200
    assert answers[4].body == b'{"models": []}'
    assert answers[5].failure == core.REFUSED


def test_only_loopback_is_ever_asked() -> None:
    answer = http.send(http.Request("10.0.0.1", 80, "/"), 0.2)
    assert answer.failure is not None
    assert "only loopback" in answer.failure
