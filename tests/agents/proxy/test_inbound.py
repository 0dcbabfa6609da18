"""The inbound listener in front of an app: forwarding, framing, limits, headers."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.proxy.support import (
    Backend,
    Proxy,
    connection,
    leftover,
    read_response,
    request,
    start_backend,
    start_proxy,
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


@pytest.fixture(params=["uvloop", "asyncio"])
def proxy(app: Backend, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """The proxy on uvloop and on the stdlib loop: the data path must work on both."""
    p = start_proxy("--drain-grace", "2s", inbound_app=app.address, loop=request.param)
    yield p
    p.stop()


def test_a_request_reaches_the_app_with_forwarded_headers_and_a_request_id(proxy: Proxy) -> None:
    status, _, body = request(
        proxy.ports["inbound"],
        "/echo",
        headers={"X-Forwarded-For": "10.1.2.3", "traceparent": "00-abc-def-01"},
    )
    assert status == 200
    doc = json.loads(body)
    headers = {k.lower(): v for k, v in doc["headers"]}
    assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert headers["forwarded"] == "for=127.0.0.1;proto=http"
    assert len(headers["x-request-id"]) == 36
    assert headers["traceparent"] == "00-abc-def-01"


def test_a_request_id_the_client_sent_is_kept(proxy: Proxy) -> None:
    _, _, body = request(proxy.ports["inbound"], "/echo", headers={"X-Request-Id": "abc-123"})
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert headers["x-request-id"] == "abc-123"


def test_hop_by_hop_headers_and_those_connection_names_are_not_forwarded(proxy: Proxy) -> None:
    _, _, body = request(
        proxy.ports["inbound"],
        "/echo",
        headers={"Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=5",
                 "TE": "trailers", "Upgrade": "h2c", "X-Kept": "yes"},
    )  # fmt: skip
    names = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert not names & {"connection", "x-secret", "keep-alive", "te", "upgrade"}
    assert "x-kept" in names


def test_pipelined_requests_are_answered_in_order_on_one_connection(proxy: Proxy) -> None:
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(
            b"GET /slow/200 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /big/5 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /slow/50 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        bodies = [read_response(s)[2] for _ in range(3)]
    assert bodies[0].startswith(b"slow")
    assert bodies[1] == b"bbbbb"
    assert bodies[2].startswith(b"slow")


def test_a_chunked_upload_streams_through_and_arrives_whole(proxy: Proxy) -> None:
    size = 0
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"z" * 65536
        for _ in range(64):
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            size += len(piece)
        s.sendall(b"0\r\n\r\n")
        status, _, body = read_response(s)
    assert status == 200
    assert json.loads(body)["body"] == size


def test_a_large_response_arrives_whole_with_its_length(proxy: Proxy) -> None:
    status, headers, body = request(proxy.ports["inbound"], "/big/3000000")
    assert status == 200
    assert headers["content-length"] == "3000000"
    assert len(body) == 3000000


def test_head_responses_keep_their_length_and_the_connection_stays_usable(proxy: Proxy) -> None:
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(b"HEAD /big/100 HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, rest = read_response(s, head_only=True)
        assert status == 200
        assert headers["content-length"] == "100"
        assert rest == b""
        s.sendall(b"GET /big/3 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(s)[2] == b"bbb"


def test_an_http_10_client_gets_its_response_and_the_connection_closes(proxy: Proxy) -> None:
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(b"GET /big/4 HTTP/1.0\r\n\r\n")
        status, _, body = read_response(s)
        assert status == 200
        assert body == b"bbbb"
        assert s.recv(10) == b""


def test_headers_over_the_limit_get_431_and_a_long_target_414(proxy: Proxy) -> None:
    status, _, _ = request(
        proxy.ports["inbound"], "/ok", headers={f"x-h{i}": "v" * 1000 for i in range(40)}
    )
    assert status == 431
    status, _, _ = request(proxy.ports["inbound"], "/" + "a" * 40000)
    assert status in (414, 431)
    status, _, _ = request(
        proxy.ports["inbound"], "/ok", headers={f"x-h{i}": "v" for i in range(120)}
    )
    assert status == 431


def test_a_body_over_the_limit_gets_413(app: Backend) -> None:
    p = start_proxy(inbound_app=app.address, config=None)
    p.stop()
    proxy = start_proxy(
        inbound_app=app.address,
        config=_config(app.record.parent, "limits:\n  max_body_bytes: 1000\n"),
    )
    try:
        assert request(proxy.ports["inbound"], "/echo", method="POST", body=b"x" * 1001)[0] == 413
        assert request(proxy.ports["inbound"], "/echo", method="POST", body=b"x" * 1000)[0] == 200
        with connection(proxy.ports["inbound"]) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            s.sendall(b"400\r\n" + b"y" * 1024 + b"\r\n")
            assert read_response(s)[0] == 413
    finally:
        proxy.stop()


def _config(where: Path, text: str) -> Path:
    path = where / "proxy.yaml"
    path.write_text(text)
    return path


def test_requests_past_the_in_flight_limit_are_shed_with_503_and_retry_after(app: Backend) -> None:
    proxy = start_proxy(
        inbound_app=app.address,
        config=_config(app.record.parent, "limits:\n  max_requests_in_flight: 2\n"),
    )
    try:
        socks = [
            socket.create_connection(("127.0.0.1", proxy.ports["inbound"]), 10) for _ in range(2)
        ]
        for s in socks:
            s.sendall(b"GET /slow/5000 HTTP/1.1\r\nHost: a\r\n\r\n")
        deadline = time.monotonic() + 4  # both are answered after 5 s
        while proxy.metric("requests_in_flight", direction="inbound") < 2 and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        status, headers, _ = request(proxy.ports["inbound"], "/ok")
        assert status == 503
        assert headers["retry-after"] == "1"
        assert all(read_response(s)[0] == 200 for s in socks)
        for s in socks:
            s.close()
        assert request(proxy.ports["inbound"], "/ok")[0] == 200
    finally:
        proxy.stop()


def test_golden_metrics_count_requests_by_direction_and_endpoint(
    proxy: Proxy, app: Backend
) -> None:
    for _ in range(3):
        request(proxy.ports["inbound"], "/ok")
    request(proxy.ports["inbound"], "/status/503")
    labels = {"direction": "inbound", "upstream": "app", "endpoint": app.address}
    assert proxy.metric("request_total", **labels) == 4
    assert (
        proxy.metric("response_total", classification="success", status_code="200", **labels) == 3
    )
    assert (
        proxy.metric("response_total", classification="failure", status_code="503", **labels) == 1
    )
    assert proxy.metric("response_latency_ms_count", **labels) == 4
    assert proxy.metric("tcp_read_bytes_total", direction="inbound", peer="src") > 0
    assert proxy.metric("tcp_write_bytes_total", direction="inbound", peer="dst") > 0


def test_the_access_log_has_one_json_line_a_request(app: Backend) -> None:
    proxy = start_proxy("--access-log", inbound_app=app.address, stdout=subprocess.PIPE)
    try:
        request(proxy.ports["inbound"], "/big/7", headers={"X-Request-Id": "rid-1"})
        request(proxy.ports["inbound"], "/echo", method="POST", body=b"12345")
    finally:
        proxy.stop()
    assert proxy.proc.stdout is not None
    lines = [json.loads(line) for line in proxy.proc.stdout.read().splitlines()]
    assert [(r["method"], r["path"], r["status"]) for r in lines] == [
        ("GET", "/big/7", 200),
        ("POST", "/echo", 200),
    ]
    assert lines[0]["request_id"] == "rid-1"
    assert lines[0]["response_bytes"] == 7
    assert lines[1]["request_bytes"] == 5
    assert lines[0]["endpoint"] == app.address
    assert lines[0]["direction"] == "inbound"


def test_an_upgrade_the_app_accepts_becomes_a_tunnel_both_ways(proxy: Proxy) -> None:
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(
            b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"early bytes"
        )
        status, headers, _ = read_response(s, head_only=True)
        assert status == 101
        assert headers["upgrade"] == "websocket"
        assert headers["connection"] == "upgrade"
        got = leftover(s)
        while len(got) < len(b"early bytes"):
            got += s.recv(100)
        assert got == b"early bytes"
        for i in range(20):
            message = b"frame %d" % i
            s.sendall(message)
            got = b""
            while len(got) < len(message):
                got += s.recv(100)
            assert got == message


def test_an_upgrade_the_app_ignores_is_a_plain_request_and_the_connection_goes_on(
    proxy: Proxy,
) -> None:
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(b"GET /big/3 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        assert read_response(s)[2] == b"bbb"
        s.sendall(b"GET /big/4 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(s)[2] == b"bbbb"
