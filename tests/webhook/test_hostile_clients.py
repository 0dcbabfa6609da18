"""Clients that attack the connection rather than the body, against a real webhook process.

Slowloris (connections that never finish their headers, or never finish the TLS handshake),
clients that pipeline requests and never read the answers, and pods so large that deciding
them takes a noticeable fraction of a second. The server must keep answering normal reviews,
close the attackers within its documented timeouts, and keep its memory bounded.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import statistics
import threading
import time
import warnings
from typing import Any

import orjson
import pytest

from tests.support import webhooks

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-", "labels": {"sidecarkit.io/inject": "true"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def _pod_with(containers: int) -> dict[str, Any]:
    spec = {"containers": [{"name": f"c{i}", "image": "nginx"} for i in range(containers)]}
    return {**POD, "spec": spec}


def _request_bytes(review: Any, path: str = "/inject") -> bytes:
    body = orjson.dumps(review)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _timed_review(client: webhooks.Client) -> float:
    started = time.monotonic()
    answer = client.review(webhooks.review_for(POD))
    assert answer["response"]["allowed"] is True
    return time.monotonic() - started


def test_slowloris_connections_are_closed_within_the_header_timeout(
    tls: webhooks.Tls,
) -> None:
    header_timeout = 4.0
    slow_tls, slow_tcp = 800, 200
    with webhooks.process(tls, "--header-timeout", f"{header_timeout}s") as (proc, port):
        context = tls.client_context()
        selector = selectors.DefaultSelector()
        first_byte: dict[socket.socket, float] = {}
        closed_after: dict[socket.socket, float] = {}
        try:
            for _ in range(slow_tcp):  # TCP only: the TLS handshake never starts
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                raw.setblocking(False)
                first_byte[raw] = time.monotonic()
                selector.register(raw, selectors.EVENT_READ)
            for _ in range(slow_tls):  # TLS done, then headers that never end
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
                conn.sendall(b"POST /inject HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                first_byte[conn] = time.monotonic()
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ)
            client = webhooks.Client(port, tls, timeout=10)
            latencies = [_timed_review(client) for _ in range(5)]
            client.close()
            deadline = time.monotonic() + header_timeout + 15
            next_trickle = time.monotonic()
            while len(closed_after) < len(first_byte) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.2):
                    sock: Any = key.fileobj
                    try:
                        while sock.recv(65536):
                            pass
                    except (ssl.SSLWantReadError, BlockingIOError):
                        continue
                    except OSError:
                        pass
                    closed_after[sock] = time.monotonic() - first_byte[sock]
                    selector.unregister(sock)
                if time.monotonic() >= next_trickle:  # one more header line each second
                    next_trickle += 1.0
                    for sock in first_byte:
                        if sock not in closed_after and isinstance(sock, ssl.SSLSocket):
                            with contextlib.suppress(ssl.SSLWantWriteError, OSError):
                                sock.send(b"X-Slow: 1\r\n")
            assert proc.poll() is None, "the webhook died"
        finally:
            for sock in first_byte:
                sock.close()
            selector.close()
    # Normal reviews were answered while 1,000 attackers were connected (timing: the bench).
    assert max(latencies) < header_timeout, latencies
    assert len(closed_after) == len(first_byte), (
        f"{len(first_byte) - len(closed_after)} slow connections still open"
    )
    # Closed within the header timeout (plus scheduling slack on a loaded machine).
    assert max(closed_after.values()) < header_timeout + 5, max(closed_after.values())
    assert min(closed_after.values()) > header_timeout * 0.5


def test_a_client_that_never_reads_its_answers_is_dropped_and_memory_stays_bounded(
    tls: webhooks.Tls,
) -> None:
    connections, seconds = 40, 20.0
    review = webhooks.review_for(_pod_with(300))  # ~90 KB of patch per answer
    request = _request_bytes(review) * 8
    with webhooks.process(tls, "--write-timeout", "3s") as (proc, port):
        client = webhooks.Client(port, tls)
        for _ in range(20):
            client.review(review)
        before = webhooks.rss_kib(proc.pid)
        context = tls.client_context()
        socks = []
        for _ in range(connections):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.setblocking(False)
            socks.append(conn)
        dropped: set[int] = set()
        peak = before
        deadline = time.monotonic() + seconds
        while len(dropped) < connections and time.monotonic() < deadline:
            for i, conn in enumerate(socks):
                if i in dropped:
                    continue
                try:
                    conn.send(request)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except OSError:
                    dropped.add(i)
            peak = max(peak, webhooks.rss_kib(proc.pid))
            time.sleep(0.05)
        for conn in socks:
            conn.close()
        assert proc.poll() is None, "the webhook died"
        assert _timed_review(client) < 10
        client.close()
    growth_mib = (peak - before) / 1024
    assert growth_mib < 150, f"RSS grew {growth_mib:.0f} MiB"
    assert len(dropped) == connections, f"only {len(dropped)} of {connections} were dropped"


def test_huge_pods_do_not_hold_up_small_ones(tls: webhooks.Tls) -> None:
    huge = _request_bytes(webhooks.review_for(_pod_with(40_000)))
    stop = threading.Event()
    big_answers: list[int] = []

    def send_huge(port: int) -> None:
        context = tls.client_context()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=60) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            reader = conn.makefile("rb")
            while not stop.is_set():
                conn.sendall(huge)
                status = reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                big_answers.append(int(status.split()[1]))

    with webhooks.process(tls) as (proc, port):
        client = webhooks.Client(port, tls)
        threads = [threading.Thread(target=send_huge, args=(port,)) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            latencies: list[float] = []
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and len(latencies) < 300:
                latencies.append(_timed_review(client))
                time.sleep(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        client.close()
        assert proc.poll() is None
    assert big_answers
    assert set(big_answers) == {200}, big_answers[:5]
    # bench/webhook.py measures the 100 ms bound; here, robust to a loaded machine, the median
    # must stay well clear of what the huge pods cost on the event loop (about 1 s before).
    assert statistics.median(latencies) < 0.3, (statistics.median(latencies), max(latencies))


def _closed_within(sock: ssl.SSLSocket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closed ``sock`` (sending ``trickle`` every 0.5 s), or None."""
    sock.setblocking(False)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        except OSError:
            return time.monotonic() - started
        if trickle:
            with contextlib.suppress(ssl.SSLWantWriteError, BlockingIOError):
                sock.send(trickle)
        time.sleep(0.5)
    return None


def test_a_body_that_never_finishes_arriving_is_cut_off_at_the_body_timeout(
    tls: webhooks.Tls,
) -> None:
    with webhooks.process(tls, "--body-timeout", "2s") as (proc, port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(
                b"POST /inject HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
            closed = _closed_within(conn, 15, trickle=b" ")
        client = webhooks.Client(port, tls)
        assert _timed_review(client) < 10
        client.close()
        assert proc.poll() is None
    assert closed is not None, "the server kept reading a body that never ended"
    assert 1.0 < closed < 2 + 5, closed


def test_at_the_connection_cap_the_oldest_idle_connection_makes_room(tls: webhooks.Tls) -> None:
    with webhooks.process(tls, "--max-connections", "20") as (proc, port):
        context = tls.client_context()
        held = []
        for _ in range(20):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))
        client = webhooks.Client(port, tls)
        assert _timed_review(client) < 10, "a new connection got in at the cap"
        client.close()
        oldest = _closed_within(held[0], 5)
        newest = _closed_within(held[-1], 1)
        for sock in held:
            sock.close()
        assert proc.poll() is None
    assert oldest is not None, "the oldest idle connection was not closed to make room"
    assert newest is None


def test_a_body_over_the_cap_gets_413_and_tls_below_1_2_is_refused(
    server: int, tls: webhooks.Tls
) -> None:
    client = webhooks.Client(server, tls)
    status, _ = client.request("POST", "/inject", b"{" + b" " * (4 * 1024 * 1024 + 1) + b"}")
    assert status == 413
    client.close()
    old = tls.client_context()
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", server), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")


def test_admissions_past_the_cap_wait_for_a_slot(tls: webhooks.Tls) -> None:
    args = ("--max-admissions", "1", "--body-timeout", "2s")
    with webhooks.process(tls, *args) as (proc, port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as holder:
            # Takes the only slot and keeps it while its body dribbles in.
            holder.sendall(
                b"POST /inject HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
            time.sleep(0.3)
            client = webhooks.Client(port, tls)
            waited = _timed_review(client)
            client.close()
        assert proc.poll() is None
    # It got the slot when the holder was cut off at the body timeout, not before.
    assert waited > 1.0, waited
