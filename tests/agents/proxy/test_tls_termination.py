"""TLS termination on the inbound port: certificates from files, SNI, ALPN, versions, reload.

Real handshakes with the stdlib's TLS client against the proxy process.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from sidecarkit.webhook import certificates
from tests.agents.proxy.support import Backend, Proxy, read_response, start_backend, start_proxy


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


@pytest.fixture
def ca() -> certificates.Pair:
    return certificates.new_ca(common_name="test ingress CA")


def _write(ca: certificates.Pair, directory: Path, names: list[str]) -> None:
    certificates.write_pair(certificates.issue(ca, names=names, days=1), directory, stem="tls")


def _proxy(tmp_path: Path, ca: certificates.Pair, app: Backend, extra: str = "") -> Proxy:
    _write(ca, tmp_path / "a", ["a.example.test"])
    _write(ca, tmp_path / "b", ["*.b.example.test", "b.example.test"])
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "inbound:\n  tls:\n    certificates:\n"
        f"      - {{cert: {tmp_path / 'a' / 'tls.crt'}, key: {tmp_path / 'a' / 'tls.key'}}}\n"
        f"      - {{cert: {tmp_path / 'b' / 'tls.crt'}, key: {tmp_path / 'b' / 'tls.key'}}}\n"
        + extra
    )
    return start_proxy(config=config, inbound_app=app.address)


def _client(ca: certificates.Pair) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.cert.decode())
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def _get(port: int, context: ssl.SSLContext, name: str) -> tuple[int, ssl.SSLSocket]:
    s = context.wrap_socket(socket.create_connection(("127.0.0.1", port), 10), server_hostname=name)
    s.sendall(f"GET /ok HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
    status, _, _ = read_response(s)
    return status, s


def _names(s: ssl.SSLSocket) -> list[str]:
    cert = x509.load_der_x509_certificate(s.getpeercert(binary_form=True) or b"")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


def test_sni_picks_the_certificate_that_names_the_host_and_the_first_is_the_default(
    tmp_path: Path, ca: certificates.Pair, app: Backend
) -> None:
    proxy = _proxy(tmp_path, ca, app)
    port = proxy.ports["inbound"]
    context = _client(ca)
    for name, expected in (
        ("a.example.test", "a.example.test"),
        ("x.b.example.test", "*.b.example.test"),
        ("b.example.test", "*.b.example.test"),
    ):
        status, s = _get(port, context, name)
        with s:
            assert status == 200
            assert expected in _names(s)
            assert s.selected_alpn_protocol() == "http/1.1"  # h2 offered first, not spoken
    unchecked = _client(ca)
    unchecked.check_hostname = False
    status, s = _get(port, unchecked, "unknown.test")
    with s:
        assert status == 200
        assert _names(s) == ["a.example.test"]
    proxy.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_spoken(
    tmp_path: Path, ca: certificates.Pair, app: Backend, version: ssl.TLSVersion
) -> None:
    proxy = _proxy(tmp_path, ca, app)
    context = _client(ca)
    context.minimum_version = context.maximum_version = version
    status, s = _get(proxy.ports["inbound"], context, "a.example.test")
    with s:
        assert status == 200
        assert s.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    proxy.stop()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_is_refused_by_the_server_and_min_version_1_3_refuses_1_2(
    tmp_path: Path, ca: certificates.Pair, app: Backend
) -> None:
    proxy = _proxy(tmp_path, ca, app, "    min_version: '1.3'\n")
    old = _client(ca)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it: the server must refuse
    for context in (old, _tls12(ca)):
        with pytest.raises(ssl.SSLError) as caught:
            _get(proxy.ports["inbound"], context, "a.example.test")
        # the server said no (an alert, or a hang-up mid-handshake), not the client
        assert isinstance(caught.value, ssl.SSLEOFError) or "PROTOCOL_VERSION" in str(
            caught.value
        ).upper().replace(" ", "_")
    assert app.received() == []
    proxy.stop()


def _tls12(ca: certificates.Pair) -> ssl.SSLContext:
    context = _client(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def test_a_rotated_certificate_is_served_to_new_connections_while_old_ones_go_on(
    tmp_path: Path, ca: certificates.Pair, app: Backend
) -> None:
    proxy = _proxy(tmp_path, ca, app)
    port = proxy.ports["inbound"]
    context = _client(ca)
    status, kept = _get(port, context, "a.example.test")
    assert status == 200
    before = kept.getpeercert(binary_form=True)
    _write(ca, tmp_path / "a", ["a.example.test"])
    new = (tmp_path / "a" / "tls.crt").read_bytes()
    serial = x509.load_pem_x509_certificate(new).serial_number
    deadline = time.monotonic() + 15
    seen = None
    while time.monotonic() < deadline:
        status, s = _get(port, context, "a.example.test")
        with s:
            assert status == 200
            seen = x509.load_der_x509_certificate(s.getpeercert(binary_form=True) or b"")
        if seen.serial_number == serial:
            break
        time.sleep(0.2)
    assert seen is not None
    assert seen.serial_number == serial
    with kept:
        kept.sendall(b"GET /ok HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
        assert read_response(kept)[0] == 200
        assert kept.getpeercert(binary_form=True) == before
    proxy.stop()


def test_a_missing_certificate_file_stops_the_start_with_the_key_to_fix(
    tmp_path: Path, app: Backend
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "inbound:\n  listen: 127.0.0.1:0\n  tls:\n    certificates:\n"
        f"      - {{cert: {tmp_path}/none.crt, key: {tmp_path}/none.key}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config", str(config),
         "--admin", "127.0.0.1:0", "--app", app.address],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode != 0
    assert "inbound.tls.certificates[0]" in done.stderr
    assert "Traceback" not in done.stderr
