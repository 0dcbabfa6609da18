"""The HTTP sinks' own HTTP/1.1 client, against a scripted server on a real socket.

The server reads each request whole (headers and ``Content-Length`` body) and writes back the
next canned answer byte for byte, so every way an answer may be framed can be tried; it records
the requests and counts connections.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecarkit.agents.logs import sinks
from sidecarkit.agents.logs.sinks import _client, _http

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Scripted:
    """Answers the n-th request with ``answers[n]`` (an empty one: after 2 s of silence);
    ``close_after`` closes a connection after that many requests on it."""

    answers: list[bytes]
    close_after: int = 1000
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    _listener: socket.socket = field(default_factory=socket.socket)

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        served = 0
        with conn:
            while served < self.close_after and len(self.requests) < len(self.answers):
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                answer = self.answers[len(self.requests) - 1]
                if not answer:  # a receiver that hangs
                    time.sleep(2)
                conn.sendall(answer)
                served += 1


@contextmanager
def scripted(*answers: bytes, close_after: int = 1000) -> Iterator[Scripted]:
    server = Scripted(list(answers), close_after)
    server._listener.bind(("127.0.0.1", 0))
    server._listener.listen(8)
    server.port = server._listener.getsockname()[1]
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        yield server
    finally:
        server._listener.close()


def client(port: int, **options: Any) -> _http.Client:
    spec = sinks.Spec("http", f"http://127.0.0.1:{port}/in?x=1", options)
    common, _ = _http.settings(spec, path=None, own={}, example="http://h")
    return _http.Client(common, content_type="application/json", limit=64)


def post_all(c: _http.Client, *bodies: bytes) -> list[_http.Reply]:
    async def scenario() -> list[_http.Reply]:
        try:
            return [await c.post(body) for body in bodies]
        finally:
            await c.close()

    return asyncio.run(scenario())


def test_requests_share_one_kept_alive_connection_and_carry_their_headers() -> None:
    with scripted(OK, OK, OK) as server:
        replies = post_all(client(server.port, headers={"X-Team": "a"}), b"{}", b"[1]", b"")
        assert [(r.status, r.body) for r in replies] == [(200, b"ok")] * 3
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /in?x=1 HTTP/1.1\r\n")
        assert b"\r\nHost: 127.0.0.1:%d\r\n" % server.port in first
        assert b"\r\nX-Team: a\r\n" in first
        assert b"\r\nContent-Type: application/json\r\n" in first
        assert first.endswith(b"Content-Length: 2\r\n\r\n{}")


def test_a_connection_the_receiver_closed_while_idle_is_replaced_without_an_error() -> None:
    with scripted(OK, OK, OK, close_after=1) as server:
        replies = post_all(client(server.port), b"a", b"b", b"c")
        assert [r.status for r in replies] == [200, 200, 200]
        assert server.connections == 3
        assert [r.rpartition(b"\n")[2] for r in server.requests] == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    ("answer", "body", "retry_after"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
            b"ok!!!",
            None,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n+",
            b"+",
            None,
        ),
        (b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n", b"", 7.0),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", b"", None),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", b"until the end", None),
        (b"HTTP/1.1 302 Found\r\nLocation: /else\r\nContent-Length: 0\r\n\r\n", b"", None),
    ],
)
def test_every_framing_of_an_answer_is_read(
    answer: bytes, body: bytes, retry_after: float | None
) -> None:
    with scripted(answer) as server:
        (reply,) = post_all(client(server.port), b"x")
        assert reply.body == body
        assert reply.retry_after == retry_after
        assert server.requests


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, "more than 64"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "not chunked"),
        (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "header line"),
    ],
)
def test_an_answer_that_breaks_http_is_an_error_to_send_again(answer: bytes, message: str) -> None:
    with scripted(answer) as server, pytest.raises(_client.ProtocolError, match=message):
        post_all(client(server.port), b"x")


def test_an_answer_cut_short_is_a_reset_connection() -> None:
    with (
        scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close_after=1) as server,
        pytest.raises(ConnectionResetError, match="before its whole answer"),
    ):
        post_all(client(server.port), b"x")


def test_a_receiver_that_never_answers_times_out() -> None:
    with scripted(b"") as server, pytest.raises(TimeoutError):
        post_all(client(server.port, timeout=0.3), b"x")
