"""HTTP/2 and gRPC through the proxy: real grpcio servers and clients on loopback.

The app and the upstream endpoints are ``grpcbackend.py`` processes (grpcio's server); the
callers are grpcio channels, which speak h2c with prior knowledge to the proxy's port. Inbound:
``inbound.protocol: http2``; outbound: ``protocol: http2`` on an upstream.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from sidecarkit.agents.proxy import settings as proxy_settings
from sidecarkit.webhook import certificates
from tests.agents.proxy import support
from tests.agents.proxy.support import Proxy, free_port, start_proxy

HERE = Path(__file__).parent
OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.enable_retries", 0),
]


class App:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.address = f"127.0.0.1:{port}"


def start_app(name: str, port: int | None = None) -> App:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "grpcbackend.py"), str(port), name], stdout=subprocess.PIPE
    )
    support.STARTED.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return App(proc, port)


@pytest.fixture
def app() -> Iterator[App]:
    backend = start_app("app")
    yield backend
    backend.proc.kill()
    backend.proc.wait(10)


def _inbound(tmp_path: Path, app: App, extra: str = "") -> Proxy:
    config = tmp_path / "proxy.yaml"
    config.write_text(f"inbound:\n  app: {app.address}\n  protocol: http2\n{extra}")
    return start_proxy(config=config, inbound_app=app.address)


def _outbound(tmp_path: Path, endpoints: list[str], extra: str = "") -> Proxy:
    listen = free_port()
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "upstreams:\n  - name: echo\n    protocol: http2\n    balancer: round-robin\n"
        f"    listen: 127.0.0.1:{listen}\n    endpoints: [{', '.join(endpoints)}]\n{extra}"
    )
    proxy = start_proxy(config=config)
    proxy.ports["echo"] = listen
    return proxy


def _channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)


def _unary(channel: grpc.Channel) -> Any:
    return channel.unary_unary("/test.Echo/Unary")


def test_grpc_unary_and_streaming_calls_reach_a_grpc_app_through_the_inbound_port(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app)
    with _channel(proxy.ports["inbound"]) as channel:
        assert _unary(channel)(b"hello", timeout=10) == b"app:hello"
        stream = channel.stream_stream("/test.Echo/Stream")
        answers = list(stream(iter([b"one", b"two", b"three"]), timeout=10))
    assert answers == [b"app:one", b"app:two", b"app:three"]
    labels = {"direction": "inbound", "endpoint": app.address}
    assert proxy.metric("request_total", **labels) == 2
    assert proxy.metric("response_total", **labels, grpc_status="0", classification="success") == 2
    assert proxy.metric("response_latency_ms_count", **labels) == 2
    assert proxy.stop() == 0


def test_a_grpc_error_status_reaches_the_client_and_counts_as_a_failure(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app)
    with _channel(proxy.ports["inbound"]) as channel, pytest.raises(grpc.RpcError) as caught:
        _unary(channel)(b"fail:5", timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "failed as asked with 5"
    counted = proxy.metric(
        "response_total", direction="inbound", grpc_status="5", classification="failure"
    )
    assert counted == 1
    assert proxy.stop() == 0


def test_messages_of_twenty_mebibytes_pass_both_ways_intact_under_flow_control(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app)
    big = bytes(range(256)) * (20 << 12)  # 20 MiB
    with _channel(proxy.ports["inbound"]) as channel:
        assert _unary(channel)(big, timeout=60) == b"app:" + big
        assert len(_unary(channel)(b"size:%d" % (20 << 20), timeout=60)) == 20 << 20
    assert proxy.rss_mb() < 120  # the windows bound what is held: not a whole message twice
    assert proxy.stop() == 0


def test_two_hundred_concurrent_calls_on_one_connection_all_complete(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app)
    with _channel(proxy.ports["inbound"]) as channel:
        unary = _unary(channel)
        calls = [unary.future(b"sleep:0.2 %d" % i, timeout=60) for i in range(200)]
        answers = [call.result() for call in calls]
    assert answers == [b"app:sleep:0.2 %d" % i for i in range(200)]
    assert proxy.metric("tcp_open_total", direction="inbound", peer="src") == 1
    assert proxy.metric("requests_in_flight", direction="inbound") == 0
    assert proxy.stop() == 0


def test_calls_on_one_client_connection_are_balanced_per_call_over_the_endpoints(
    tmp_path: Path,
) -> None:
    apps = [start_app(name) for name in ("a", "b", "c")]
    proxy = _outbound(tmp_path, [a.address for a in apps])
    with _channel(proxy.ports["echo"]) as channel:
        answers = [_unary(channel)(b"x", timeout=10) for _ in range(30)]
    assert sorted(set(answers)) == [b"a:x", b"b:x", b"c:x"]
    assert proxy.metric("tcp_open_total", direction="outbound", peer="src") == 1
    for a in apps:
        assert proxy.metric("request_total", direction="outbound", endpoint=a.address) == 10
    assert proxy.stop() == 0


def test_an_endpoint_that_is_down_is_skipped_and_none_up_gives_unavailable(
    tmp_path: Path,
) -> None:
    live = start_app("live")
    dead = f"127.0.0.1:{free_port()}"
    proxy = _outbound(tmp_path, [dead, live.address])
    with _channel(proxy.ports["echo"]) as channel:
        answers = [_unary(channel)(b"x", timeout=10) for _ in range(6)]
        assert answers == [b"live:x"] * 6
        live.proc.kill()
        live.proc.wait(10)
        with pytest.raises(grpc.RpcError) as caught:
            _unary(channel)(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert proxy.stop() == 0


def test_a_cancelled_call_is_reset_at_the_app_and_leaves_nothing_in_flight(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app)
    with _channel(proxy.ports["inbound"]) as channel:
        call = _unary(channel).future(b"sleep:3", timeout=30)
        # The channel connects on this first call: on a busy machine that takes a while.
        deadline = time.monotonic() + 2.5
        while proxy.metric("requests_in_flight", direction="inbound") == 0 and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert proxy.metric("requests_in_flight", direction="inbound") == 1
        call.cancel()
        assert call.cancelled()
        deadline = time.monotonic() + 10
        while proxy.metric("requests_in_flight", direction="inbound") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert proxy.metric("requests_in_flight", direction="inbound") == 0
        assert _unary(channel)(b"after", timeout=10) == b"app:after"
    assert proxy.stop() == 0


def test_drain_finishes_the_calls_in_flight_and_says_goaway(tmp_path: Path, app: App) -> None:
    proxy = _inbound(tmp_path, app, "drain:\n  grace: 10s\n")
    results: list[Any] = []
    with _channel(proxy.ports["inbound"]) as channel:
        unary = _unary(channel)
        assert unary(b"warm", timeout=10) == b"app:warm"
        calls = [unary.future(b"sleep:1.5 %d" % i, timeout=30) for i in range(20)]
        deadline = time.monotonic() + 1  # each call takes 1.5 s at the app
        while proxy.metric("requests_in_flight", direction="inbound") < 20 and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        proxy.proc.send_signal(signal.SIGTERM)
        results = [call.result() for call in calls]
        with pytest.raises(grpc.RpcError) as caught:  # the port is closed after the GOAWAY
            unary(b"late", timeout=5, wait_for_ready=False)
    assert results == [b"app:sleep:1.5 %d" % i for i in range(20)]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert proxy.proc.wait(20) == 0


def test_an_http11_request_on_an_http2_port_gets_505(tmp_path: Path, app: App) -> None:
    proxy = _inbound(tmp_path, app)
    with support.connection(proxy.ports["inbound"]) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        status, _, body = support.read_response(s)
    assert status == 505
    assert b"HTTP/2 only" in body
    assert proxy.stop() == 0


def test_the_http2_port_passes_the_h2spec_conformance_suite(tmp_path: Path, app: App) -> None:
    built = subprocess.run(
        ["bash", str(HERE / "build_h2spec.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, f"h2spec did not build: {built.stderr}"
    proxy = _inbound(tmp_path, app)
    run = subprocess.run(
        [built.stdout.strip(), "-S", "-p", str(proxy.ports["inbound"]), "-o", "5",
         "-j", str(tmp_path / "h2spec.xml")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:]
    assert " 0 failed" in summary
    assert proxy.stop() == 0


def test_a_slow_grpc_reader_holds_back_the_app_instead_of_filling_the_proxy(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app)
    got: list[int] = []
    with _channel(proxy.ports["inbound"]) as channel:
        stream = channel.stream_stream("/test.Echo/Stream")
        asks = iter([b"size:%d" % (4 << 20)] * 16)  # 64 MiB in all, read slowly
        for answer in stream(asks, timeout=120):
            got.append(len(answer))
            if len(got) <= 4:
                time.sleep(0.5)
                assert proxy.rss_mb() < 150
    assert got == [4 << 20] * 16
    assert proxy.stop() == 0


def test_bad_http2_settings_name_the_key_and_the_fix() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"inbound": {"protocol": "http3"}}, "inbound.protocol: 'http3' is unknown; use http"),
        (
            {"upstreams": [{"name": "a", "listen": 1, "endpoints": ["x:1"], "protocol": "h2"}]},
            "upstreams[0].protocol: 'h2' is unknown; use http, http2 or tcp",
        ),
        (
            {"upstreams": [{"name": "a", "endpoints": ["x:1"], "protocol": "http2"}]},
            "upstreams[0].listen: a http2 upstream needs its own port",
        ),
    ]
    for data, message in bad:
        with pytest.raises(ValueError, match=r"^proxy\.yaml: ") as caught:
            proxy_settings.from_mapping(data, source="proxy.yaml")
        assert message in str(caught.value)


def test_a_grpc_client_over_tls_gets_h2_by_alpn_and_reaches_the_app(
    tmp_path: Path, app: App
) -> None:
    ca = certificates.new_ca(common_name="test ingress CA")
    pair = certificates.issue(ca, names=["grpc.example.test"], days=1)
    certificates.write_pair(pair, tmp_path / "tls", stem="tls")
    proxy = _inbound(
        tmp_path, app,
        f"  tls:\n    certificates:\n      - {{cert: {tmp_path / 'tls' / 'tls.crt'}, "
        f"key: {tmp_path / 'tls' / 'tls.key'}}}\n",
    )  # fmt: skip
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert)
    options = [*OPTIONS, ("grpc.ssl_target_name_override", "grpc.example.test")]
    target = f"127.0.0.1:{proxy.ports['inbound']}"
    with grpc.secure_channel(target, credentials, options=options) as channel:
        assert _unary(channel)(b"secret", timeout=10) == b"app:secret"
    context = ssl.create_default_context(cadata=ca.cert.decode())
    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", proxy.ports["inbound"]), 10)
    with context.wrap_socket(raw, server_hostname="grpc.example.test") as s:
        assert s.selected_alpn_protocol() == "h2"
    assert proxy.stop() == 0


def test_an_endpoint_shutting_down_with_goaway_finishes_its_calls_and_gets_no_new_ones(
    tmp_path: Path,
) -> None:
    leaving, staying = start_app("leaving"), start_app("staying")
    proxy = _outbound(tmp_path, [leaving.address, staying.address])
    with _channel(proxy.ports["echo"]) as channel:
        unary = _unary(channel)
        assert {unary(b"x", timeout=10) for _ in range(4)} == {b"leaving:x", b"staying:x"}
        slow = [unary.future(b"sleep:1.5", timeout=30) for _ in range(6)]
        time.sleep(0.5)
        leaving.proc.send_signal(signal.SIGTERM)  # grpcio: GOAWAY, then up to 5 s for calls
        time.sleep(0.3)
        later = [unary(b"y", timeout=10) for _ in range(6)]
        finished = [call.result() for call in slow]
    assert sorted(set(finished)) == [b"leaving:sleep:1.5", b"staying:sleep:1.5"]
    assert later == [b"staying:y"] * 6
    assert leaving.proc.wait(20) == 0
    assert proxy.stop() == 0


def test_a_call_past_the_request_timeout_gets_deadline_exceeded(tmp_path: Path, app: App) -> None:
    proxy = _inbound(tmp_path, app, "timeouts:\n  request: 1s\n")
    with _channel(proxy.ports["inbound"]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _unary(channel)(b"sleep:3", timeout=20)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _unary(channel)(b"quick", timeout=10) == b"app:quick"
    assert proxy.metric("response_total", direction="inbound", grpc_status="4") == 1
    assert proxy.stop() == 0


def test_an_endpoint_that_speaks_only_http11_fails_the_call_fast_as_unavailable(
    tmp_path: Path,
) -> None:
    old = support.start_backend(tmp_path / "h1")  # HTTP/1.1 only: answers the preface 400
    proxy = _outbound(tmp_path, [old.address])
    with _channel(proxy.ports["echo"]) as channel, pytest.raises(grpc.RpcError) as caught:
        _unary(channel)(b"x", timeout=20)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert proxy.metric("response_total", direction="outbound", grpc_status="14") == 1
    old.kill()
    assert proxy.stop() == 0


def test_the_access_log_has_one_json_line_a_call_with_its_grpc_status(
    tmp_path: Path, app: App
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(f"inbound:\n  app: {app.address}\n  protocol: http2\naccess_log: true\n")
    proxy = start_proxy(config=config, inbound_app=app.address, stdout=subprocess.PIPE)
    try:
        with _channel(proxy.ports["inbound"]) as channel:
            assert _unary(channel)(b"12345", timeout=10) == b"app:12345"
            with pytest.raises(grpc.RpcError):
                _unary(channel)(b"fail:7", timeout=10)
    finally:
        proxy.stop()
    assert proxy.proc.stdout is not None
    lines = [json.loads(line) for line in proxy.proc.stdout.read().splitlines()]
    assert [(r["method"], r["path"], r["status"], r["grpc_status"]) for r in lines] == [
        ("POST", "/test.Echo/Unary", 200, 0),
        ("POST", "/test.Echo/Unary", 200, 7),
    ]
    assert lines[0]["protocol"] == "HTTP/2"
    assert lines[0]["endpoint"] == app.address
    assert lines[0]["request_bytes"] == 5 + 5  # gRPC's 5-byte frame header, then the message
    assert len(lines[0]["request_id"]) == 36


def test_an_app_killed_mid_stream_ends_the_call_with_an_error_not_a_clean_end(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app)
    got: list[bytes] = []

    def read_all(answers: Iterator[bytes]) -> None:
        for answer in answers:
            got.append(answer)
            if len(got) == 2:
                app.proc.kill()  # the third answer never comes

    with _channel(proxy.ports["inbound"]) as channel:
        stream = channel.stream_stream("/test.Echo/Stream")
        answers = stream(iter([b"1", b"2", b"sleep:30"]), timeout=60)
        with pytest.raises(grpc.RpcError) as caught:
            read_all(answers)
    assert got == [b"app:1", b"app:2"]
    assert caught.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    assert proxy.metric("requests_in_flight", direction="inbound") == 0
    assert proxy.stop() == 0


def test_a_silent_connection_and_an_idle_http2_connection_are_closed_in_time(
    tmp_path: Path, app: App
) -> None:
    proxy = _inbound(tmp_path, app, "timeouts:\n  header: 1s\n  idle: 2s\n")
    silent = socket.create_connection(("127.0.0.1", proxy.ports["inbound"]), 10)
    idle = socket.create_connection(("127.0.0.1", proxy.ports["inbound"]), 10)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    idle.sendall(client.data_to_send())
    started = time.monotonic()
    silent.settimeout(10)
    assert silent.recv(100) == b""  # closed without a word: it never spoke HTTP
    idle.settimeout(10)
    frames = b""
    while chunk := idle.recv(65536):
        frames += chunk
    events = client.receive_data(frames)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)  # GOAWAY first
    assert time.monotonic() - started < 9
    silent.close()
    idle.close()
    assert proxy.stop() == 0
