"""mTLS on L4 (TCP relay) ports: an outbound ``protocol: tcp`` upstream with ``mtls: true``
dials the other proxy with this workload's certificate, and an inbound ``protocol: tcp`` port
in strict mode takes only mesh clients. Real CA, real handshakes, real bytes."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecarkit.security import contexts, workload
from tests.agents.proxy.support import Proxy, free_port, start_proxy
from tests.security.support import CaProcess, init_ca, new_token, running_ca

SERVER_ID = "spiffe://cluster.local/ns/shop/sa/db"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaProcess]:
    directory = init_ca(tmp_path_factory.mktemp("l4mesh") / "ca")
    for account in ("db", "client"):
        (directory.parent / f"{account}.token").write_text(new_token(directory, "shop", account))
    with running_ca(directory) as process:
        yield process


@pytest.fixture
def database() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


class EchoServer:
    """Sends back every chunk it reads, until the client closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    @staticmethod
    def _one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while chunk := conn.recv(1 << 16):
                conn.sendall(chunk)

    def close(self) -> None:
        self.sock.close()


def _identity(ca: CaProcess, account: str) -> str:
    return (
        "identity:\n"
        f"  trust_bundle: {ca.directory / 'root.crt'}\n"
        f"  ca: {ca.url}\n"
        f"  token: {ca.directory.parent / (account + '.token')}\n"
    )


def _server(tmp_path: Path, ca: CaProcess, app_port: int, port: int) -> Proxy:
    config = tmp_path / "server.yaml"
    config.write_text(
        _identity(ca, "db") + f"inbound:\n  listen: 127.0.0.1:{port}\n  app: 127.0.0.1:{app_port}\n"
        "  protocol: tcp\n  mtls: strict\n"
    )
    return start_proxy(config=config)


def test_a_tcp_upstream_marked_mtls_reaches_a_strict_l4_port_with_the_callers_identity(
    tmp_path: Path, ca: CaProcess, database: EchoServer
) -> None:
    inbound, db, wrong = free_port(), free_port(), free_port()
    server = _server(tmp_path, ca, database.port, inbound)
    config = tmp_path / "client.yaml"
    config.write_text(
        _identity(ca, "client") + "upstreams:\n"
        f"  - {{name: db, listen: {db}, endpoints: ['127.0.0.1:{inbound}'], protocol: tcp,\n"
        f"     mtls: true, peer: '{SERVER_ID}'}}\n"
        f"  - {{name: wrong, listen: {wrong}, endpoints: ['127.0.0.1:{inbound}'], protocol: tcp,\n"
        "     mtls: true, peer: 'spiffe://cluster.local/ns/shop/sa/somebody-else'}\n"
    )
    client = start_proxy(config=config)
    payload = os.urandom(4 << 20)
    assert _echo(db, payload) == payload  # plaintext from the app, mTLS between the proxies
    assert _echo(wrong, b"secret") == b""  # the endpoint is not who it must be: cut
    assert client.metric("mtls_refused_connections", reason="unexpected-peer") >= 1
    assert server.metric("tcp_open_total", direction="inbound") >= 1
    client.stop()
    server.stop()


def test_a_strict_l4_port_refuses_plaintext_and_foreign_certificates_and_takes_mesh_clients(
    tmp_path: Path, ca: CaProcess
) -> None:
    echo = EchoServer()
    port = free_port()
    server = _server(tmp_path, ca, echo.port, port)
    assert _echo(port, b"plain bytes") == b""  # closed, and no HTTP answer on an L4 port
    assert server.metric("mtls_refused_connections", reason="plaintext") >= 1

    other = init_ca(tmp_path / "other", "other.example")
    (other / "tokens").touch()
    (tmp_path / "foreign.token").write_text(new_token(other, "shop", "client"))
    with running_ca(other) as foreign:
        stranger = workload.fetch(foreign.url, tmp_path / "foreign.token", bundle=foreign.bundle)
    context = contexts.client_context(ca.bundle)  # trusts our server, offers a foreign cert
    contexts.load_pair(context, stranger.pair)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls_echo(port, context, b"from outside")
    assert server.metric("mtls_refused_connections", reason="handshake") >= 1
    assert echo.accepted == 0  # nothing reached the app

    member = workload.fetch(ca.url, ca.directory.parent / "client.token", bundle=ca.bundle)
    context = contexts.client_context(ca.bundle)
    contexts.load_pair(context, member.pair)
    assert _tls_echo(port, context, b"from the mesh") == b"from the mesh"
    assert echo.accepted == 1
    server.stop()
    echo.close()


def _tls_echo(port: int, context: ssl.SSLContext, payload: bytes) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), 10)
    with context.wrap_socket(raw) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed by the proxy")
            got += chunk
        return got


def _echo(port: int, payload: bytes) -> bytes:
    """Send ``payload`` and read as much back (or until the proxy closes)."""
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        got = b""
        with contextlib.suppress(ConnectionError):
            while len(got) < len(payload) and (chunk := s.recv(1 << 16)):
                got += chunk
        sender.join()
    return got


def test_authentication_on_a_proxy_whose_only_inbound_port_is_tcp_is_refused(
    tmp_path: Path,
) -> None:
    """Authentication that could guard nothing would read as protection the port does not
    have (rules on such a port: test_tcp_authz)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("authentication:\n  api_keys: {file: /etc/keys}\n")
    config = tmp_path / "proxy.yaml"
    config.write_text("inbound: {listen: '127.0.0.1:0', app: '127.0.0.1:5432', protocol: tcp}\n")
    out = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config", str(config),
         "--policy", str(policy), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 3
    assert "every inbound port is protocol: tcp" in out.stderr
    assert "Traceback" not in out.stderr
    config.write_text("inbound: {listen: '127.0.0.1:0', app: '127.0.0.1:5432', protocol: tcp}\n")
    policy.write_text("outbound: {rate_limits: [{key: upstream, rate: 5/s}]}\n")
    out = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config", str(config),
         "--policy", str(policy), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "protocol: tcp" in out.stdout  # the effective settings keep the port's protocol
