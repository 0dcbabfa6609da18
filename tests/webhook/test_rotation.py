"""Certificate rotation under load: no failed request, and new connections see the new cert."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from pathlib import Path

from cryptography import x509

from sidecarkit.webhook import certificates, serving
from tests.support import webhooks

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-"},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def _serial_seen_by_a_new_connection(port: int, tls: webhooks.Tls) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=tls.client_context(), timeout=5)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    assert isinstance(conn.sock, ssl.SSLSocket)
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    conn.close()
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_rotation_while_a_load_generator_runs(tls: webhooks.Tls) -> None:
    body = json.dumps(webhooks.review_for(POD)).encode()
    with webhooks.process(tls, "--reload-interval", "100ms") as (_, port):
        first = _serial_seen_by_a_new_connection(port, tls)
        stop = threading.Event()
        counts = {"ok": 0, "failed": 0, "new_connections": 0}
        errors: list[str] = []
        lock = threading.Lock()

        def load(reconnect_every: int) -> None:
            n = 0
            conn: http.client.HTTPSConnection | None = None
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    if conn is None or n % reconnect_every == 0:
                        if conn is not None:
                            conn.close()
                        conn = http.client.HTTPSConnection(
                            "127.0.0.1", port, context=tls.client_context(), timeout=5
                        )
                        with lock:
                            counts["new_connections"] += 1
                    conn.request(
                        "POST",
                        "/inject/namespace",
                        body=body,
                        headers={"Content-Type": "application/json"},
                    )
                    response = conn.getresponse()
                    data = response.read()
                    ok = response.status == 200 and b'"patch"' in data
                    with lock:
                        counts["ok" if ok else "failed"] += 1
                except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                    with lock:
                        counts["failed"] += 1
                        errors.append(repr(exc))
                    conn = None
                n += 1
            if conn is not None:
                conn.close()

        workers = [
            threading.Thread(target=load, args=(every,), name=f"load-{i}")
            for i, every in enumerate((1, 5, 50, 10_000))
        ]
        for w in workers:
            w.start()
        time.sleep(0.5)
        serials = []
        for _ in range(3):
            new_cert = tls.rotate()
            serials.append(x509.load_pem_x509_certificate(new_cert).serial_number)
            time.sleep(0.7)
        latest = serials[-1]
        deadline = time.monotonic() + 5
        seen = _serial_seen_by_a_new_connection(port, tls)
        while seen != latest and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = _serial_seen_by_a_new_connection(port, tls)
        stop.set()
        for w in workers:
            w.join(30)

    assert seen == latest != first
    assert counts["failed"] == 0, errors[:5]
    assert counts["ok"] > 200
    assert counts["new_connections"] > 100


def test_a_rotation_racing_the_reloads_never_serves_a_mismatched_pair(
    tls: webhooks.Tls, tmp_path: Path
) -> None:
    """Files rewritten one at a time (certificate, then key) as fast as possible, while the
    server reloads as fast as it can and clients open new connections: every handshake must
    succeed, because the live context only ever takes a certificate and key read together."""
    directory = tmp_path / "racing"
    directory.mkdir()
    pairs = [certificates.issue(tls.ca, names=["127.0.0.1"]) for _ in range(8)]
    certificates.write_pair(pairs[0], directory, stem="tls")
    settings = serving.Settings(
        tls_cert=directory / "tls.crt",
        tls_key=directory / "tls.key",
        host="127.0.0.1",
        port=0,
        reload_interval=0.0005,
    )
    stop = threading.Event()

    def rotate() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            pair = pairs[i % len(pairs)]
            for name, data in (("tls.crt", pair.cert), ("tls.key", pair.key)):
                temp = directory / f".{name}.tmp"
                temp.write_bytes(data)
                temp.replace(directory / name)

    failures: list[str] = []
    handshakes = 0
    with webhooks.in_thread(settings) as server:
        assert server.port is not None
        rotator = threading.Thread(target=rotate)
        rotator.start()
        context = tls.client_context()
        deadline = time.monotonic() + 6
        try:
            while time.monotonic() < deadline and handshakes < 3000:
                try:
                    with (
                        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
                        context.wrap_socket(raw, server_hostname="127.0.0.1"),
                    ):
                        handshakes += 1
                except (ssl.SSLError, OSError) as exc:
                    failures.append(repr(exc))
        finally:
            stop.set()
            rotator.join(10)
        reloads = server.metrics.registry.render().decode()
    assert handshakes > 100
    assert 'what="certificate",result="ok"' in reloads
    assert not failures, f"{len(failures)} of {handshakes} handshakes failed: {failures[:3]}"
