"""Attacks on the policy from the pod network: requests shaped so that what the proxy decides
is not what the app serves.

- h2c smuggling: an HTTP/1.1 request offering ``Upgrade: h2c``, allowed by the rules, that the
  app accepts, turns the connection into an opaque HTTP/2 tunnel whose later requests the
  policy never sees. The app here is ``H2cApp``, a local server implementing RFC 7540
  section 3.2's upgrade with the ``h2`` library (as hypercorn and other ``h2``-based servers
  do), since no Debian server upgrades an h2c request on a plain port.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from tests.agents.proxy import support
from tests.agents.proxy.support import start_proxy
from tests.agents.proxy.test_http2 import _channel, _unary, start_app

FORGED = "spiffe://cluster.local/ns/shop/sa/admin"


class H2cApp(support.ThreadedApp):
    """Answers HTTP/1.1 requests with ``http1 <path>``; one offering ``Upgrade: h2c`` with an
    ``HTTP2-Settings`` field is answered 101 and then served as HTTP/2, each stream with
    ``h2 <path>``. Records the request heads it received."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.h2_paths: list[bytes] = []
        super().__init__()

    def connection(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            self.heads.append(head)
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1]
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            if fields.get(b"upgrade", b"").lower() == b"h2c" and b"http2-settings" in fields:
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n"
                             b"upgrade: h2c\r\n\r\n")  # fmt: skip
                self._h2(conn, fields[b"http2-settings"], path, data)
                return
            body = b"http1 " + path
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    def _h2(self, conn: socket.socket, settings: bytes, path: bytes, data: bytes) -> None:
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2conn.initiate_upgrade_connection(settings)
        self._answer(h2conn, 1, path)  # the upgraded request is stream 1
        conn.sendall(h2conn.data_to_send())
        while True:
            for event in h2conn.receive_data(data) if data else ():
                if isinstance(event, h2.events.RequestReceived):
                    fields = dict(event.headers)
                    self._answer(h2conn, event.stream_id, fields[b":path"])
            conn.sendall(h2conn.data_to_send())
            data = conn.recv(65536)
            if not data:
                return

    def _answer(self, h2conn: h2.connection.H2Connection, sid: int, path: bytes) -> None:
        self.h2_paths.append(path)
        body = b"h2 " + path
        h2conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"%d" % len(body))])
        h2conn.send_data(sid, body, end_stream=True)


@pytest.fixture
def h2c_app() -> Iterator[H2cApp]:
    app = H2cApp()
    yield app
    app.stop()


def test_an_h2c_upgrade_is_not_offered_to_the_app_so_no_request_escapes_the_policy(
    tmp_path: Path, h2c_app: H2cApp
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "authorization:\n  rules:\n    - {name: public, action: allow, paths: [/public]}\n"
    )
    proxy = start_proxy("--policy", str(policy), inbound_app=h2c_app.address)
    try:
        port = proxy.ports["inbound"]
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        settings = client.initiate_upgrade_connection()
        offer = (
            b"GET /public HTTP/1.1\r\nhost: app\r\nconnection: upgrade\r\nupgrade: h2c\r\n"
            b"http2-settings: %s\r\n\r\n" % settings
        )
        with support.connection(port, 10) as s:
            s.sendall(offer)
            status, _, body = support.read_response(s)
            assert (status, body) == (200, b"http1 /public")  # served as HTTP/1.1
            # had the app upgraded, this would be an HTTP/2 stream nobody decided
            client.send_headers(3, [(":method", "GET"), (":scheme", "http"),
                                    (":authority", "app"), (":path", "/admin")],
                                end_stream=True)  # fmt: skip
            s.sendall(client.data_to_send())
            s.settimeout(10)
            rest = b""
            with contextlib.suppress(OSError):
                rest = s.recv(65536)
        assert b"h2 /admin" not in rest
        assert h2c_app.h2_paths == []
        assert all(b"h2c" not in head.lower() for head in h2c_app.heads)
        assert all(b"http2-settings" not in head.lower() for head in h2c_app.heads)
        # the plain request for /admin is still refused
        assert support.request(port, "/admin")[0] == 403
    finally:
        proxy.stop()


def test_an_h2c_upgrade_offered_beside_websocket_keeps_the_websocket_offer(
    tmp_path: Path, h2c_app: H2cApp
) -> None:
    proxy = start_proxy(inbound_app=h2c_app.address)
    try:
        key = base64.b64encode(b"0123456789abcdef")
        offer = (
            b"GET /chat HTTP/1.1\r\nhost: app\r\nconnection: upgrade, http2-settings\r\n"
            b"upgrade: h2c, websocket\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n"
            b"sec-websocket-key: %s\r\nsec-websocket-version: 13\r\n\r\n" % key
        )
        with support.connection(proxy.ports["inbound"], 10) as s:
            s.sendall(offer)
            status, _, body = support.read_response(s)
        assert (status, body) == (200, b"http1 /chat")
        head = h2c_app.heads[-1].lower()
        assert b"upgrade: websocket\r\n" in head + b"\r\n"
        assert b"h2c" not in head
        assert b"http2-settings" not in head
    finally:
        proxy.stop()


def test_a_forged_client_certificate_header_never_reaches_an_http2_app(tmp_path: Path) -> None:
    """The app reads the verified caller from ``x-forwarded-client-cert``, which the proxy
    removes from every inbound request, on HTTP/2 ports as on HTTP/1.1 ones: a plaintext
    client (no mTLS on the port, or ``permissive``) must not name itself a mesh workload."""
    app = start_app("app")
    try:
        config = tmp_path / "proxy.yaml"
        config.write_text(f"inbound:\n  app: {app.address}\n  protocol: http2\n")
        proxy = start_proxy(config=config, inbound_app=app.address)
        forged = (("x-forwarded-client-cert", f"By={FORGED};Hash=00;URI={FORGED}"),)
        try:
            with _channel(proxy.ports["inbound"]) as channel:
                seen = _unary(channel)(b"meta:x-forwarded-client-cert", metadata=forged, timeout=10)
            assert seen == b""
        finally:
            proxy.stop()
    finally:
        app.proc.kill()
        app.proc.wait(10)


def test_an_http2_method_that_is_not_a_token_is_refused_and_cannot_forge_log_fields(
    tmp_path: Path,
) -> None:
    """HTTP/1.1's parser only takes token methods; HTTP/2's ``:method`` is any bytes but CR, LF
    and NUL. A refusal's log line puts the method first, unquoted: ``GET peer=...`` would read
    as a peer the proxy never verified. RFC 9110 makes a method a token; nghttp2 (Envoy)
    refuses others as malformed, and so does the proxy."""
    app = start_app("app")
    try:
        (tmp_path / "policy.yaml").write_text(
            "authorization:\n  rules:\n"
            "    - {name: calls, action: allow, methods: [POST], paths: [/test.Echo/Unary]}\n"
        )
        config = tmp_path / "proxy.yaml"
        config.write_text(f"inbound:\n  app: {app.address}\n  protocol: http2\n")
        proxy = start_proxy(
            "--policy", str(tmp_path / "policy.yaml"), "--log-level", "info",
            config=config, inbound_app=app.address,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        forged = f"GET peer={FORGED} subject=root"
        try:
            answers = _h2_calls(proxy.ports["inbound"], [forged, "P@ST"])
            assert [a[b":status"] for a in answers] == [b"400", b"400"]
            assert proxy.metric("http_authz_deny_total") == 0  # refused before the policy
            assert proxy.metric("request_total", direction="inbound", endpoint=app.address) == 0
        finally:
            proxy.stop()
        assert proxy.proc.stderr is not None
        log = proxy.proc.stderr.read().decode()
        assert FORGED not in log
        assert "Traceback" not in log
    finally:
        app.proc.kill()
        app.proc.wait(10)


def _h2_calls(port: int, methods: list[str]) -> list[dict[bytes, bytes]]:
    """The response head of a request with each ``:method`` (sent unchecked), one stream each."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    heads: dict[int, dict[bytes, bytes]] = {}
    with support.connection(port, 10) as s:
        for method in methods:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", method), (":scheme", "http"),
                                    (":authority", "app"), (":path", "/test.Echo/Unary")],
                              end_stream=True)  # fmt: skip
            heads[sid] = {}
        s.sendall(conn.data_to_send())
        ended: set[int] = set()
        while len(ended) < len(heads):
            data = s.recv(65536)
            assert data, "the proxy closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    heads[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    ended.add(event.stream_id)
            s.sendall(conn.data_to_send())
    return [heads[sid] for sid in sorted(heads)]


def test_a_request_id_the_client_chose_cannot_add_fields_to_a_refusals_log_line(
    tmp_path: Path,
) -> None:
    """``x-request-id`` is the client's: logged as is, ``r1 peer=spiffe://...`` would put a
    second peer on the line, one the proxy never verified. A value that is not a plain token
    is quoted, so the line still parses into the fields the proxy wrote."""
    app = support.start_backend(tmp_path / "app")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "authorization:\n  rules:\n    - {name: reads, action: allow, methods: [GET]}\n"
    )
    proxy = start_proxy(
        "--policy", str(policy), "--log-level", "info", inbound_app=app.address,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        port = proxy.ports["inbound"]
        forged = f"r1 peer={FORGED} subject=root"
        assert support.request(port, "/x", method="POST", body=b"x",
                               headers={"x-request-id": forged})[0] == 403  # fmt: skip
        assert support.request(port, "/x", method="POST", body=b"x",
                               headers={"x-request-id": "call-42"})[0] == 403  # fmt: skip
    finally:
        proxy.stop()
        app.kill()
    assert proxy.proc.stderr is not None
    lines = [ln for ln in proxy.proc.stderr.read().decode().splitlines() if "refused 403" in ln]
    assert len(lines) == 2, lines
    fields = [_fields(line.partition("; ")[2]) for line in lines]
    assert [f["peer"] for f in fields] == [["-"], ["-"]]
    assert [f["subject"] for f in fields] == [["-"], ["-"]]
    assert fields[0]["request_id"] == [repr(forged)]
    assert fields[1]["request_id"] == ["call-42"]  # a plain one is written as it was


def _fields(text: str) -> dict[str, list[str]]:
    """``key=value`` pairs, a value bare or quoted as Python's repr quotes it."""
    out: dict[str, list[str]] = {}
    for key, value in re.findall(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)", text):
        out.setdefault(key, []).append(value)
    return out
