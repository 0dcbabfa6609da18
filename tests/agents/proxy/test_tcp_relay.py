"""L4 mode: opaque TCP relayed whole, both directions, half-close kept, balanced per connection."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.agents.proxy.support import free_port, start_proxy


class HalfCloseServer:
    """Reads until the client's FIN, then answers with the SHA-256 of what it read and its own
    port, and closes: a peer that works only if half-close is passed through."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        digest = hashlib.sha256()
        with conn:
            while chunk := conn.recv(1 << 16):
                digest.update(chunk)
            conn.sendall(b"%s %d" % (digest.hexdigest().encode(), self.port))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def servers() -> Iterator[list[HalfCloseServer]]:
    started = [HalfCloseServer() for _ in range(2)]
    yield started
    for s in started:
        s.close()


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 10) as s:

        def send() -> None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got = b""
        while chunk := s.recv(1 << 16):
            got += chunk
        sender.join()
    return got


def test_bytes_pass_whole_both_ways_and_half_close_reaches_the_endpoint(
    servers: list[HalfCloseServer],
) -> None:
    port = free_port()
    eps = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    proxy = start_proxy("--tcp-upstream", f"db=127.0.0.1:{port}={eps}", "--balancer", "round-robin")
    try:
        payload = os.urandom(20 << 20)
        answer = _exchange(port, payload)
        assert answer.split()[0] == hashlib.sha256(payload).hexdigest().encode()
        ports = {int(_exchange(port, b"x").split()[1]) for _ in range(4)}
        assert ports == {s.port for s in servers}
        assert proxy.metric("tcp_read_bytes_total", upstream="db", peer="src") >= 20 << 20
    finally:
        proxy.stop()


def test_a_dead_endpoint_is_skipped_for_the_next_one(servers: list[HalfCloseServer]) -> None:
    port = free_port()
    dead = free_port()
    eps = f"127.0.0.1:{dead},127.0.0.1:{servers[0].port}"
    proxy = start_proxy("--tcp-upstream", f"db=127.0.0.1:{port}={eps}")
    try:
        for _ in range(6):
            assert int(_exchange(port, b"hello").split()[1]) == servers[0].port
    finally:
        proxy.stop()


def test_bytes_sent_right_after_connecting_are_not_lost(servers: list[HalfCloseServer]) -> None:
    port = free_port()
    proxy = start_proxy("--tcp-upstream", f"db=127.0.0.1:{port}=127.0.0.1:{servers[0].port}")
    try:
        for i in range(30):
            payload = b"first bytes %d" % i
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.sendall(payload)  # before the relay has its endpoint connection
                s.shutdown(socket.SHUT_WR)
                answer = s.recv(1 << 16)
            assert answer.split()[0] == hashlib.sha256(payload).hexdigest().encode()
    finally:
        proxy.stop()
