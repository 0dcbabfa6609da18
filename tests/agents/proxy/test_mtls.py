"""mTLS between proxies: workload certificates from ``sidecarkit ca``, real TLS handshakes.

The CA is a real ``sidecarkit ca serve`` process; proxies get their certificates from it with
bootstrap tokens; clients are the stdlib's TLS with certificates from the same CA, from another
one, or without a SPIFFE ID.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from sidecarkit.security import authority, contexts, spiffe, workload
from tests.agents.proxy.support import (
    Backend,
    Proxy,
    connection,
    read_response,
    request,
    start_backend,
    start_proxy,
)
from tests.security.support import CaProcess, init_ca, new_token, running_ca
from tests.support.webhooks import free_port

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
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


def _config(path: Path, ca: CaProcess, account: str, extra: str) -> Path:
    path.write_text(
        "identity:\n"
        f"  trust_bundle: {ca.directory / 'root.crt'}\n"
        f"  ca: {ca.url}\n"
        f"  token: {ca.directory.parent / (account + '.token')}\n" + extra
    )
    return path


def _mesh_proxy(tmp_path: Path, ca: CaProcess, app: Backend, mode: str) -> Proxy:
    config = _config(tmp_path / f"{mode}.yaml", ca, "web", f"inbound:\n  mtls: {mode}\n")
    return start_proxy(config=config, inbound_app=app.address)


def _client_context(ca: CaProcess, account: str = "client") -> ssl.SSLContext:
    issued = workload.fetch(ca.url, ca.directory.parent / f"{account}.token", bundle=ca.bundle)
    context = contexts.client_context(ca.bundle)
    contexts.load_pair(context, issued.pair)
    return context


def _tls_get(
    port: int, context: ssl.SSLContext, headers: str = ""
) -> tuple[int, dict[str, str], bytes, bytes]:
    """GET /echo over TLS; (status, headers, body, the server's certificate DER)."""
    raw = socket.create_connection(("127.0.0.1", port), 10)
    with context.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True) or b""
        s.sendall(f"GET /echo HTTP/1.1\r\nHost: app\r\n{headers}\r\n".encode())
        status, head, body = read_response(s)
        return status, head, body, der


def _echoed(body: bytes) -> dict[str, str]:
    data = json.loads(body)
    return {k.lower(): v for k, v in data["headers"]}


def test_strict_mtls_passes_the_verified_client_identity_to_the_app_and_overwrites_a_forged_one(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    proxy = _mesh_proxy(tmp_path, ca, app, "strict")
    forged = "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/kube-system/sa/admin\r\n"
    status, _, body, der = _tls_get(proxy.ports["inbound"], _client_context(ca), forged)
    assert status == 200
    header = _echoed(body)["x-forwarded-client-cert"]
    assert f"URI={CLIENT_ID}" in header
    assert f"By={SERVER_ID}" in header
    assert "kube-system" not in json.dumps(_echoed(body))
    server_cert = x509.load_der_x509_certificate(der)
    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SERVER_ID]
    proxy.stop()


def test_a_plaintext_client_on_a_strict_port_is_refused_and_the_app_sees_nothing(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    proxy = _mesh_proxy(tmp_path, ca, app, "strict")
    status, _, body = request(proxy.ports["inbound"], "/echo")
    assert status == 400
    assert b"mTLS only" in body
    assert app.received() == []
    assert proxy.metric("mtls_refused_connections", reason="plaintext") == 1
    proxy.stop()


def test_a_client_certificate_from_another_ca_and_trust_domain_is_refused(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    other = init_ca(tmp_path / "other", "other.example")
    (other / "tokens").touch()
    token = new_token(other, "shop", "client")
    (tmp_path / "client.token").write_text(token)
    with running_ca(other) as foreign:
        issued = workload.fetch(foreign.url, tmp_path / "client.token", bundle=foreign.bundle)
    context = contexts.client_context(ca.bundle)  # trusts our server, offers a foreign cert
    contexts.load_pair(context, issued.pair)
    proxy = _mesh_proxy(tmp_path, ca, app, "strict")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls_get(proxy.ports["inbound"], context)
    assert app.received() == []
    assert proxy.metric("mtls_refused_connections", reason="handshake") >= 1
    proxy.stop()


def _certificate_without_spiffe_id(ca: CaProcess) -> authority.Pair:
    """Signed by the mesh's own intermediate, so only the missing SPIFFE ID is wrong."""
    inter = x509.load_pem_x509_certificate((ca.directory / "intermediate.crt").read_bytes())
    signer = serialization.load_pem_private_key(
        (ca.directory / "intermediate.key").read_bytes(), password=None
    )
    key = authority.new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
        .issuer_name(inter.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("client.shop")]), False)
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    pem = serialization.Encoding.PEM
    return authority.Pair(cert.public_bytes(pem) + inter.public_bytes(pem), authority.pem_key(key))


def test_a_client_certificate_of_the_mesh_ca_without_a_spiffe_id_is_refused(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    context = contexts.client_context(ca.bundle)
    contexts.load_pair(context, _certificate_without_spiffe_id(ca))
    proxy = _mesh_proxy(tmp_path, ca, app, "strict")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls_get(proxy.ports["inbound"], context)
    assert app.received() == []
    assert proxy.metric("mtls_refused_connections", reason="identity") == 1
    proxy.stop()


def test_a_permissive_port_takes_plaintext_without_an_identity_and_mtls_with_one(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    proxy = _mesh_proxy(tmp_path, ca, app, "permissive")
    forged = {"X-Forwarded-Client-Cert": f"URI={CLIENT_ID}"}
    status, _, body = request(proxy.ports["inbound"], "/echo", headers=forged)
    assert status == 200
    assert "x-forwarded-client-cert" not in _echoed(body)
    status, _, body, _ = _tls_get(proxy.ports["inbound"], _client_context(ca))
    assert status == 200
    assert f"URI={CLIENT_ID}" in _echoed(body)["x-forwarded-client-cert"]
    proxy.stop()


def test_an_upstream_marked_mtls_is_reached_over_mtls_with_the_callers_identity(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    server = _mesh_proxy(tmp_path, ca, app, "strict")
    inbound = server.ports["inbound"]
    web, wrong = free_port(), free_port()
    upstreams = (
        "upstreams:\n"
        f"  - {{name: web, listen: {web}, endpoints: ['127.0.0.1:{inbound}'], mtls: true,\n"
        f"     peer: '{SERVER_ID}'}}\n"
        f"  - {{name: wrong, listen: {wrong}, endpoints: ['127.0.0.1:{inbound}'], mtls: true,\n"
        "     peer: 'spiffe://cluster.local/ns/shop/sa/somebody-else'}\n"
    )
    client = start_proxy(config=_config(tmp_path / "client.yaml", ca, "client", upstreams))
    with connection(web) as s:  # the app's plaintext call, kept alive over two requests
        for _ in range(2):
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: web\r\n\r\n")
            status, _, body = read_response(s)
            assert status == 200
            assert f"URI={CLIENT_ID}" in _echoed(body)["x-forwarded-client-cert"]
    status, _, body = request(wrong, "/echo")
    assert status == 502
    assert client.metric("mtls_refused_connections", reason="unexpected-peer") >= 1
    assert server.metric("tcp_open_total", direction="inbound") >= 1
    client.stop()
    server.stop()


def test_the_proxy_renews_its_certificate_at_half_life_without_dropping_connections(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    with running_ca(ca.directory, "--ttl", "10s") as short:
        config = _config(tmp_path / "short.yaml", short, "web", "inbound:\n  mtls: strict\n")
        proxy = start_proxy(config=config, inbound_app=app.address)
        client = _client_context(short)
        port = proxy.ports["inbound"]
        raw = socket.create_connection(("127.0.0.1", port), 10)
        with client.wrap_socket(raw) as kept:
            first = kept.getpeercert(binary_form=True)
            serials: set[int] = set()
            failures = 0
            deadline = time.monotonic() + 9  # past the first renewal at 5 s, before expiry
            while time.monotonic() < deadline and len(serials) < 2:
                kept.sendall(b"GET /ok HTTP/1.1\r\nHost: app\r\n\r\n")
                status, _, _ = read_response(kept)
                failures += status != 200
                status, _, _, der = _tls_get(port, client)
                failures += status != 200
                serials.add(x509.load_der_x509_certificate(der).serial_number)
                time.sleep(0.2)
            assert kept.getpeercert(binary_form=True) == first  # the same connection throughout
        log = short.stop()
        proxy.stop()
    assert failures == 0
    assert len(serials) >= 2
    assert log.count(f"issued {SERVER_ID}") >= 2


def test_each_inbound_port_has_its_own_mode(tmp_path: Path, ca: CaProcess, app: Backend) -> None:
    other = start_backend(tmp_path / "other")
    strict, permissive = free_port(), free_port()
    ports = (
        "inbound:\n"
        f"  - {{listen: 127.0.0.1:{strict}, app: {app.address}, mtls: strict}}\n"
        f"  - {{listen: 127.0.0.1:{permissive}, app: {other.address}, mtls: permissive}}\n"
    )
    proxy = start_proxy(config=_config(tmp_path / "ports.yaml", ca, "web", ports))
    refused = request(strict, "/ok")
    taken = request(permissive, "/ok")
    status, _, body, _ = _tls_get(strict, _client_context(ca))
    proxy.stop()
    other.kill()
    assert refused[0] == 400
    assert taken[0] == 200
    assert taken[2] == f"ok {other.port}".encode()
    assert status == 200
    assert f"URI={CLIENT_ID}" in _echoed(body)["x-forwarded-client-cert"]


def test_a_root_added_to_the_trust_bundle_is_trusted_without_a_restart(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    new_root, new_intermediate = authority.new_authority("cluster.local")
    issuer = authority.load_authority(new_intermediate, new_root.cert, source="test")
    key = authority.new_key()
    who = spiffe.parse(CLIENT_ID)
    chain = authority.issue_workload(issuer, authority.new_csr(key), who, ttl=3600)
    context = contexts.client_context(ca.bundle)
    contexts.load_pair(context, authority.Pair(chain, authority.pem_key(key)))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.bundle)
    config = _config(tmp_path / "b.yaml", ca, "web", "inbound:\n  mtls: strict\n")
    config.write_text(config.read_text().replace(str(ca.directory / "root.crt"), str(bundle)))
    proxy = start_proxy(config=config, inbound_app=app.address)
    port = proxy.ports["inbound"]
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls_get(port, context)
    bundle.write_bytes(ca.bundle + new_root.cert)
    deadline = time.monotonic() + 15
    status = 0
    while time.monotonic() < deadline and status != 200:
        try:
            status = _tls_get(port, context)[0]
        except (ssl.SSLError, OSError):
            time.sleep(0.2)
    assert status == 200
    assert _tls_get(port, _client_context(ca))[0] == 200  # the old root still counts
    proxy.stop()


def test_an_endpoint_the_endpoints_file_marks_mtls_is_reached_over_mtls(
    tmp_path: Path, ca: CaProcess, app: Backend
) -> None:
    server = _mesh_proxy(tmp_path, ca, app, "strict")
    inbound = server.ports["inbound"]
    endpoints = tmp_path / "web.endpoints"
    endpoints.write_text(f"127.0.0.1:{inbound} mtls   # it has a sidecar\n")
    web = free_port()
    upstreams = f"upstreams:\n  - {{name: web, listen: {web}, file: {endpoints}}}\n"
    client = start_proxy(config=_config(tmp_path / "client.yaml", ca, "client", upstreams))
    status, _, body = request(web, "/echo")
    assert status == 200
    assert f"URI={CLIENT_ID}" in _echoed(body)["x-forwarded-client-cert"]
    endpoints.write_text(f"127.0.0.1:{inbound} plaintext\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and status == 200:
        status, _, body = request(web, "/echo")
        time.sleep(0.1)
    assert status == 400  # the strict port refused the plaintext the new mark asked for
    assert b"mTLS only" in body
    client.stop()
    server.stop()
