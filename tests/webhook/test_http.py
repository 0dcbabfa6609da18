"""The webhook's HTTP/1.1, byte by byte, against a real webhook process over TLS.

Pipelined requests are answered in order, ``Expect: 100-continue`` is honoured (and refused for
a body over the cap before it is sent), chunked bodies are read, oversized heads get 431, wrong
paths and methods 404 and 405, and HTTP/1.0 or ``Connection: close`` end the connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.support import webhooks

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-", "labels": {"sidecarkit.io/inject": "true"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


@pytest.fixture
def conn(server: int, tls: webhooks.Tls) -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", server), timeout=10)
    sock = tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
    yield sock
    sock.close()


class _Reader:
    """Reads responses (status, headers, body) off a socket, Content-Length framed."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock, self.buffer = sock, b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(f"connection closed after {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise EOFError("connection closed inside a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        """True when the server closed the connection (within a few seconds)."""
        self.sock.settimeout(5)
        try:
            return not self._fill()
        except (ConnectionResetError, ssl.SSLError):
            return True


def _review(uid: str) -> bytes:
    return json.dumps(webhooks.review_for(POD, uid=uid)).encode()


def _post(body: bytes, *, extra: str = "", path: str = "/inject") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_pipelined_requests_are_answered_in_order(conn: ssl.SSLSocket) -> None:
    uids = [f"uid-{i}" for i in range(12)]
    conn.sendall(
        b"".join(_post(_review(uid)) for uid in uids[:6])
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"".join(_post(_review(uid)) for uid in uids[6:])
    )
    reader = _Reader(conn)
    answered = []
    for i in range(13):
        status, _, body = reader.response()
        assert status == 200
        answered.append("healthz" if i == 6 else json.loads(body)["response"]["uid"])
    assert answered == [*uids[:6], "healthz", *uids[6:]]


def test_expect_100_continue_is_answered_before_the_body_is_sent(conn: ssl.SSLSocket) -> None:
    body = _review("uid-expect")
    head = _post(b"", extra="Expect: 100-continue\r\n").replace(
        b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
    )
    conn.sendall(head)
    reader = _Reader(conn)
    assert reader.response()[0] == 100
    conn.sendall(body)
    status, _, answer = reader.response()
    assert status == 200
    assert json.loads(answer)["response"]["uid"] == "uid-expect"


def test_a_body_over_the_cap_is_refused_before_it_is_sent_when_the_client_asks_first(
    conn: ssl.SSLSocket,
) -> None:
    head = (
        b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    conn.sendall(head)
    reader = _Reader(conn)
    status, headers, body = reader.response()
    assert (status, headers.get("connection")) == (413, "close"), body
    assert b"too large" in body
    assert reader.closed()


def test_a_chunked_body_is_read(conn: ssl.SSLSocket) -> None:
    body = _review("uid-chunked")
    half = len(body) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    conn.sendall(
        b"POST /inject HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    status, _, answer = _Reader(conn).response()
    assert status == 200
    assert json.loads(answer)["response"]["uid"] == "uid-chunked"


def test_a_head_too_large_gets_431_and_the_connection_closes(conn: ssl.SSLSocket) -> None:
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for _ in range(70):
        conn.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
    reader = _Reader(conn)
    status, _, body = reader.response()
    assert status == 431, body
    assert reader.closed()


def test_unknown_paths_get_404_and_wrong_methods_405(conn: ssl.SSLSocket) -> None:
    conn.sendall(
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /inject HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    reader = _Reader(conn)
    assert reader.response()[0] == 404
    status, headers, _ = reader.response()
    assert (status, headers.get("allow")) == (405, "POST")
    assert reader.response()[:1] == (200,)


def test_malformed_http_gets_400_and_the_connection_closes(conn: ssl.SSLSocket) -> None:
    conn.sendall(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n{}")
    reader = _Reader(conn)
    status, _, body = reader.response()
    assert status == 400
    assert b"malformed HTTP request" in body
    assert reader.closed()


@pytest.mark.parametrize(
    ("request_line", "header"),
    [("HTTP/1.0", ""), ("HTTP/1.1", "Connection: close\r\n")],
    ids=["http-1.0", "connection-close"],
)
def test_a_client_that_asks_for_one_request_gets_its_answer_and_the_connection_closes(
    conn: ssl.SSLSocket, request_line: str, header: str
) -> None:
    body = _review("uid-once")
    conn.sendall(
        (
            f"POST /inject {request_line}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{header}\r\n"
        ).encode()
        + body
    )
    reader = _Reader(conn)
    status, _, answer = reader.response()
    assert status == 200
    assert json.loads(answer)["response"]["uid"] == "uid-once"
    started = time.monotonic()
    assert reader.closed()
    assert time.monotonic() - started < 5


def test_requests_before_a_malformed_one_are_answered_before_the_400(conn: ssl.SSLSocket) -> None:
    conn.sendall(_post(_review("uid-a")) + _post(_review("uid-b")) + b"NOT HTTP AT ALL\r\n\r\n")
    reader = _Reader(conn)
    for uid in ("uid-a", "uid-b"):
        status, _, answer = reader.response()
        assert status == 200
        assert json.loads(answer)["response"]["uid"] == uid
    status, headers, body = reader.response()
    assert (status, headers.get("connection")) == (400, "close"), body
    assert reader.closed()


@pytest.mark.parametrize(
    "sent",
    [
        # a second request after one that closes the connection is not read
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
        # an upgrade is ignored (RFC 9110): answered over HTTP/1.1, nothing after it is read
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    ],
    ids=["after-connection-close", "upgrade"],
)
def test_a_request_that_ends_reading_is_answered_and_the_connection_closes(
    conn: ssl.SSLSocket, sent: bytes
) -> None:
    conn.sendall(sent)
    reader = _Reader(conn)
    status, headers, _ = reader.response()
    assert (status, headers.get("connection")) == (200, "close")
    assert reader.closed()
    assert reader.buffer == b""


@pytest.fixture(scope="module")
def one_slot(tls: webhooks.Tls) -> Iterator[int]:
    """A webhook that decides one admission at a time."""
    with webhooks.process(tls, "--max-admissions", "1") as (_, port):
        yield port


def _connect(port: int, tls: webhooks.Tls) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _in_flight(port: int, tls: webhooks.Tls) -> float:
    client = webhooks.Client(port, tls)
    try:
        _, text = client.request("GET", "/metrics")
    finally:
        client.close()
    for line in text.decode().splitlines():
        if line.startswith("sidecarkit_webhook_in_flight_requests "):
            return float(line.split()[1])
    raise AssertionError("no sidecarkit_webhook_in_flight_requests in /metrics")


def _settles_at(port: int, tls: webhooks.Tls, value: float) -> float:
    deadline = time.monotonic() + 10
    seen = _in_flight(port, tls)
    while seen != value and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = _in_flight(port, tls)
    return seen


def _holding_the_slot(port: int, tls: webhooks.Tls) -> ssl.SSLSocket:
    """A connection whose admission holds the only slot: its head is in, its body is not."""
    holder = _connect(port, tls)
    holder.sendall(
        _post(b"")[: -len(b"Content-Length: 0\r\n\r\n")] + b"Content-Length: 100\r\n\r\n"
    )
    assert _settles_at(port, tls, 2) == 2  # the holder and the /metrics request itself
    return holder


def test_a_client_that_leaves_in_the_middle_of_a_pipelined_request_leaves_no_slot_taken(
    one_slot: int, tls: webhooks.Tls
) -> None:
    for round_ in range(2):
        holder = _holding_the_slot(one_slot, tls)
        leaver = _connect(one_slot, tls)
        # A complete review that must wait for the slot, then the head of another and a
        # little of its body; then the client ends its side of the connection cleanly.
        second = _post(_review("uid-never"))
        leaver.sendall(_post(_review(f"uid-waits-{round_}")) + second[: len(second) - 40])
        assert _settles_at(one_slot, tls, 3) == 3
        leaver.settimeout(3)
        with contextlib.suppress(OSError, ssl.SSLError):
            leaver.unwrap()
        leaver.close()
        holder.sendall(b"x" * 100)
        status, _, _ = _Reader(holder).response()
        assert status == 400
        holder.close()
        assert _settles_at(one_slot, tls, 1) == 1  # only the /metrics request
    client = webhooks.Client(one_slot, tls)
    try:
        status, answer = client.request("POST", "/inject", _review("uid-after"))
    finally:
        client.close()
    assert status == 200, answer


def test_pipelined_admissions_of_one_connection_wait_their_turn_without_queueing_for_slots(
    one_slot: int, tls: webhooks.Tls
) -> None:
    holder = _holding_the_slot(one_slot, tls)
    pipelining = _connect(one_slot, tls)
    uids = [f"uid-p{i}" for i in range(5)]
    pipelining.sendall(b"".join(_post(_review(uid)) for uid in uids))
    # Only the first of the five is in flight (waiting for the slot); the others wait behind
    # it on their connection, holding nothing of the server's.
    assert _settles_at(one_slot, tls, 3) == 3
    time.sleep(0.3)
    assert _in_flight(one_slot, tls) == 2 + 1
    holder.sendall(b"x" * 100)
    assert _Reader(holder).response()[0] == 400
    holder.close()
    reader = _Reader(pipelining)
    answered = [json.loads(reader.response()[2])["response"]["uid"] for _ in uids]
    pipelining.close()
    assert answered == uids
