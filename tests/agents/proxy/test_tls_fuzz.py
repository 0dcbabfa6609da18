"""10,000 malformed TLS ClientHellos against an mTLS port and a TLS-terminating port: no
crash, no traceback, no flood in the log, and a good client is still served afterwards.

The hellos are mutations of a real one (the stdlib client's first flight): bit flips,
truncations, lengths that lie, random tails. Each goes on its own connection, which the client
half-closes after sending so that a truncated hello ends instead of waiting out the handshake
timeout. Seeded: a failure reproduces.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sidecarkit.webhook import certificates
from tests.agents.proxy.support import Backend, read_response, start_backend, start_proxy

HELLOS = 10_000
SEED = 18


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


def _real_hello() -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="a.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def _mutations(hello: bytes, count: int, rng: random.Random) -> Iterator[bytes]:
    for _ in range(count):
        data = bytearray(hello)
        kind = rng.randrange(6)
        if kind == 0:  # bit flips anywhere after the record type
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(1, len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # cut short
            data = data[: rng.randrange(1, len(data))]
        elif kind == 2:  # the record length lies
            data[3:5] = struct.pack(">H", rng.choice([0, 1, 5, 0x4000, 0xFFFF, len(data)]))
        elif kind == 3:  # the handshake length lies
            data[6:9] = rng.randbytes(3)
        elif kind == 4:  # a random tail after a real header
            data = data[: rng.randrange(5, 60)] + bytearray(rng.randbytes(rng.randrange(400)))
        else:  # extension bytes scrambled
            start = rng.randrange(43, len(data) - 1)
            data[start:] = bytearray(rng.sample(list(data[start:]), len(data) - start))
        yield bytes(data)


def _send(port: int, payload: bytes) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.settimeout(5)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while len(got) < 1 << 16 and (chunk := s.recv(4096)):
                got += chunk
            return got
    except OSError:
        return b""


def _fuzz(port: int, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    payloads = list(_mutations(_real_hello(), count, rng))
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda p: _send(port, p), payloads))


def _good_request(port: int, context: ssl.SSLContext, name: str) -> int:
    raw = socket.create_connection(("127.0.0.1", port), 10)
    with context.wrap_socket(raw, server_hostname=name) as s:
        s.sendall(f"GET /ok HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        return read_response(s)[0]


def test_malformed_client_hellos_never_crash_a_terminating_port_or_reach_the_app(
    tmp_path: Path, app: Backend
) -> None:
    ca = certificates.new_ca()
    certificates.write_pair(
        certificates.issue(ca, names=["a.example.test"], days=1), tmp_path, stem="tls"
    )
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "inbound:\n  tls:\n    certificates:\n"
        f"      - {{cert: {tmp_path / 'tls.crt'}, key: {tmp_path / 'tls.key'}}}\n"
    )
    log = tmp_path / "proxy.log"
    with log.open("wb") as err:
        proxy = start_proxy(config=config, inbound_app=app.address, stderr=err)
    port = proxy.ports["inbound"]
    answers = _fuzz(port, HELLOS // 2, SEED)
    assert proxy.proc.poll() is None
    assert not any(a.startswith(b"HTTP/1.1 5") for a in answers)
    context = ssl.create_default_context(cadata=ca.cert.decode())
    assert _good_request(port, context, "a.example.test") == 200
    assert proxy.stop() == 0
    text = log.read_text(errors="replace")
    assert "Traceback" not in text
    assert text.count("\n") < 200, text[-2000:]
    assert all(b"GET" not in r for r in app.received()[:-1])


def test_malformed_client_hellos_never_crash_an_mtls_port(tmp_path: Path, app: Backend) -> None:
    from tests.agents.proxy.test_mtls import _client_context, _config  # noqa: PLC0415
    from tests.security.support import init_ca, new_token, running_ca  # noqa: PLC0415

    directory = init_ca(tmp_path / "ca")
    for account in ("web", "client"):
        (tmp_path / f"{account}.token").write_text(new_token(directory, "shop", account))
    with running_ca(directory) as ca:
        config = _config(tmp_path / "mesh.yaml", ca, "web", "inbound:\n  mtls: strict\n")
        log = tmp_path / "proxy.log"
        with log.open("wb") as err:
            proxy = start_proxy(config=config, inbound_app=app.address, stderr=err)
        port = proxy.ports["inbound"]
        answers = _fuzz(port, HELLOS // 2, SEED + 1)
        assert proxy.proc.poll() is None
        assert not any(a.startswith(b"HTTP/1.1 5") for a in answers)
        assert _good_request(port, _client_context(ca), "web") == 200
        refused = proxy.metric("mtls_refused_connections")
    assert proxy.stop() == 0
    assert refused >= HELLOS // 4  # nearly every hello was refused, and counted
    text = log.read_text(errors="replace")
    assert "Traceback" not in text
    assert text.count("\n") < 200, text[-2000:]
    assert app.received()[:-1] == []
