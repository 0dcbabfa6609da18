"""gRPC between two proxies over mTLS: HTTP/2 inside the mesh's TLS, identities checked.

A real ``sidecarkit ca serve`` issues both workload certificates; the caller's proxy speaks
HTTP/2 with mTLS to the server's proxy, which checks the caller's SPIFFE ID and hands it to the
gRPC app in ``x-forwarded-client-cert``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.agents.proxy.support import free_port, start_proxy
from tests.agents.proxy.test_http2 import App, _channel, _unary, start_app
from tests.security.support import CaProcess, init_ca, new_token, running_ca

CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/shop/sa/web"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaProcess]:
    directory = init_ca(tmp_path_factory.mktemp("mesh") / "ca")
    for account in ("web", "client"):
        token = new_token(directory, "shop", account)
        (directory.parent / f"{account}.token").write_text(token)
    with running_ca(directory) as process:
        yield process


@pytest.fixture
def app() -> Iterator[App]:
    backend = start_app("app")
    yield backend
    backend.proc.kill()
    backend.proc.wait(10)


def _config(path: Path, ca: CaProcess, account: str, extra: str) -> Path:
    path.write_text(
        "identity:\n"
        f"  trust_bundle: {ca.directory / 'root.crt'}\n"
        f"  ca: {ca.url}\n"
        f"  token: {ca.directory.parent / (account + '.token')}\n" + extra
    )
    return path


def test_grpc_calls_cross_the_mesh_as_http2_inside_mtls_with_the_callers_identity(
    tmp_path: Path, ca: CaProcess, app: App
) -> None:
    server_config = _config(
        tmp_path / "server.yaml", ca, "web", "inbound:\n  mtls: strict\n  protocol: http2\n"
    )
    server = start_proxy(config=server_config, inbound_app=app.address)
    listen = free_port()
    upstreams = (
        "upstreams:\n"
        f"  - {{name: web, listen: {listen}, endpoints: ['127.0.0.1:{server.ports['inbound']}'],\n"
        f"     protocol: http2, mtls: true, peer: '{SERVER_ID}'}}\n"
    )
    client = start_proxy(config=_config(tmp_path / "client.yaml", ca, "client", upstreams))
    with _channel(listen) as channel:
        unary = _unary(channel)
        assert unary(b"over mtls", timeout=10) == b"app:over mtls"
        caller = unary(b"meta:x-forwarded-client-cert", timeout=10)
        stream = channel.stream_stream("/test.Echo/Stream")
        assert list(stream(iter([b"1", b"2"]), timeout=10)) == [b"app:1", b"app:2"]
    assert f"URI={CLIENT_ID}".encode() in caller
    assert server.metric("response_total", direction="inbound", grpc_status="0") == 3
    assert client.metric("tcp_open_total", direction="outbound", peer="dst") == 1
    plain = grpc.insecure_channel(f"127.0.0.1:{server.ports['inbound']}")
    with plain, pytest.raises(grpc.RpcError):  # strict: no plaintext past the server's proxy
        _unary(plain)(b"sneak", timeout=5)
    assert client.stop() == 0
    assert server.stop() == 0


def test_a_rule_on_the_callers_spiffe_id_decides_grpc_calls_across_the_mesh(
    tmp_path: Path, ca: CaProcess, app: App
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "authorization:\n  rules:\n"
        "    - {name: mesh, action: allow, namespaces: [shop]}\n"
        f"    - {{name: no-client-streams, action: deny, peers: ['{CLIENT_ID}'],\n"
        "       paths: [/test.Echo/Stream]}\n"
    )
    server_config = _config(
        tmp_path / "server.yaml", ca, "web", "inbound:\n  mtls: strict\n  protocol: http2\n"
    )
    server = start_proxy("--policy", str(policy), config=server_config, inbound_app=app.address)
    listen = free_port()
    upstreams = (
        "upstreams:\n"
        f"  - {{name: web, listen: {listen}, endpoints: ['127.0.0.1:{server.ports['inbound']}'],\n"
        f"     protocol: http2, mtls: true, peer: '{SERVER_ID}'}}\n"
    )
    client = start_proxy(config=_config(tmp_path / "client.yaml", ca, "client", upstreams))
    with _channel(listen) as channel:
        assert _unary(channel)(b"allowed", timeout=10) == b"app:allowed"
        with pytest.raises(grpc.RpcError) as caught:
            list(channel.stream_stream("/test.Echo/Stream")(iter([b"1"]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert server.metric("http_authz_allow_total", rule="mesh") == 1
    assert server.metric("http_authz_deny_total", rule="no-client-streams") == 1
    assert client.stop() == 0
    assert server.stop() == 0
