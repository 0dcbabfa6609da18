"""Slow and hostile clients, slow apps, and shutdown: the proxy stays up, bounded and lossless."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from tests.agents.proxy.support import (
    Proxy,
    connection,
    read_response,
    request,
    start_backend,
    start_proxy,
)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    return path


def test_a_thousand_slowloris_connections_do_not_stop_a_normal_client(tmp_path: Path) -> None:
    app = start_backend(tmp_path / "app")
    proxy = start_proxy(
        config=_config(tmp_path, "timeouts:\n  header: 3s\n"), inbound_app=app.address
    )
    slow: list[socket.socket] = []
    try:
        for i in range(1000):
            s = socket.create_connection(("127.0.0.1", proxy.ports["inbound"]), 10)
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: a\r\nX-Slow-%d: " % i)
            slow.append(s)
        for _ in range(3):
            for s in slow[:200]:
                s.sendall(b"a")
            statuses = [request(proxy.ports["inbound"], "/ok")[0] for _ in range(10)]
            assert statuses == [200] * 10
            time.sleep(0.2)
        # past the header timeout the slow ones are answered 408 and closed
        time.sleep(3.5)
        probe = slow[500]
        probe.settimeout(10)
        got = b""
        while chunk := probe.recv(4096):
            got += chunk
        assert got.startswith(b"HTTP/1.1 408 ")
        assert proxy.proc.poll() is None
    finally:
        for s in slow:
            s.close()
        proxy.stop()
        app.kill()


def test_memory_stays_bounded_with_a_client_that_does_not_read(tmp_path: Path) -> None:
    app = start_backend(tmp_path / "app")
    proxy = start_proxy(inbound_app=app.address)
    try:
        before = proxy.rss_mb()
        with connection(proxy.ports["inbound"]) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"GET /big/300000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(4)  # the app wrote 300 MB; the client read none of it
            grown = proxy.rss_mb() - before
            assert grown < 40, f"the proxy grew by {grown:.0f} MB"
            s.settimeout(30)
            status, _, body = read_response(s)
            assert status == 200
            assert len(body) == 300_000_000
    finally:
        proxy.stop()
        app.kill()


def test_memory_stays_bounded_with_an_app_that_does_not_read(tmp_path: Path) -> None:
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(8)
    port = stuck.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(stuck.accept()[0]), daemon=True).start()
    proxy = start_proxy("--drain-grace", "1s", inbound_app=f"127.0.0.1:{port}")
    sent = [0]
    try:
        before = proxy.rss_mb()
        s = socket.create_connection(("127.0.0.1", proxy.ports["inbound"]), 10)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (65536, b"u" * 65536)

        def upload() -> None:
            try:
                for _ in range(4000):  # 256 MB, far more than any buffer
                    s.sendall(piece)
                    sent[0] += len(piece)
            except OSError:
                pass

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        time.sleep(4)
        grown = proxy.rss_mb() - before
        assert grown < 40, f"the proxy grew by {grown:.0f} MB"
        assert sent[0] < 48 << 20, "the client was never held back"  # socket buffers only
        s.close()
    finally:
        proxy.stop()
        stuck.close()
        for a in accepted:
            a.close()


def _ready(proxy: Proxy) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin}/ready", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_sigterm_during_load_loses_no_accepted_request(tmp_path: Path) -> None:
    app = start_backend(tmp_path / "app")
    config = _config(tmp_path, "drain:\n  delay: 1s\n  grace: 10s\n")
    first = start_proxy(config=config, inbound_app=app.address)
    second = start_proxy(config=config, inbound_app=app.address)
    ready = {first.ports["inbound"]: True, second.ports["inbound"]: True}
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def watch() -> None:  # what an endpoints controller does: follow /ready
        while not stop.is_set():
            ready[first.ports["inbound"]] = _ready(first)
            time.sleep(0.05)

    def client(n: int) -> None:
        s: socket.socket | None = None
        while not stop.is_set():
            if s is None:
                port = next(p for p, up in ready.items() if up)
                try:
                    s = socket.create_connection(("127.0.0.1", port), 10)
                except OSError:
                    with lock:
                        outcomes["refused"] += 1  # never accepted: a client tries elsewhere
                    continue
            try:
                s.sendall(b"GET /slow/%d HTTP/1.1\r\nHost: a\r\n\r\n" % (20 + n % 50))
                status, headers, _ = read_response(s)
                with lock:
                    outcomes[str(status)] += 1
                if headers.get("connection") == "close":
                    s.close()
                    s = None
            except OSError as exc:
                with lock:
                    outcomes[f"failed: {exc}"] += 1
                if s is not None:
                    s.close()
                s = None
        if s is not None:
            s.close()

    threads = [threading.Thread(target=watch)] + [
        threading.Thread(target=client, args=(n,)) for n in range(16)
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(20) == 0
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        second.stop()
        app.kill()
    failed = {k: v for k, v in outcomes.items() if k.startswith("failed")}
    assert not failed, outcomes
    assert outcomes["200"] > 100
