"""remote_write timing: each scrape sent right after it, stamped with its scrape time; a late
push skipped and counted.

The receiver here is a local server implementing the remote_write 1.0 receiving side as
documented (snappy-compressed protobuf WriteRequest, 204 on success); a real Prometheus
receiving remote_write is tested in test_pushing.
"""

from __future__ import annotations

import http.server
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import cramjam

from tests.agents.metrics.test_agent import IDENTITY, _samples, _wait, agent
from tests.agents.metrics.test_pushing import _decode

Received = tuple[float, dict[str, str], float, int]  # arrival, labels, value, timestamp (ms)


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[Received]] = []
    delay: ClassVar[float] = 0.0
    in_flight: ClassVar[int] = 0
    most_in_flight: ClassVar[int] = 0
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
        try:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrived = time.time()
            request = _decode(bytes(cramjam.snappy.decompress_raw(body)))
            for _, _, series in request:
                assert isinstance(series, bytes)
                labels: dict[str, str] = {}
                samples: list[tuple[float, int]] = []
                for number, _, inner in _decode(series):
                    assert isinstance(inner, bytes)
                    parts = {n: p for n, _, p in _decode(inner)}
                    if number == 1:
                        labels[parts[1].decode()] = parts[2].decode()  # type: ignore[union-attr]
                    else:
                        value = struct.unpack("<d", parts[1])[0]  # type: ignore[arg-type]
                        samples.append((value, int(parts[2])))
                with cls.lock:
                    cls.received.extend((arrived, labels, v, ts) for v, ts in samples)
            self._wait_unless_abandoned(cls.delay)
            self.send_response(204)
            self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with cls.lock:
                cls.in_flight -= 1

    def _wait_unless_abandoned(self, delay: float) -> None:
        """Answer after ``delay``, or stop at once when the client gives up and closes: then
        ``in_flight`` counts only the requests the agent still waits for."""
        end = time.monotonic() + delay
        waiting = select.poll()  # not select(): the test run may hold descriptors past 1024
        waiting.register(self.connection, select.POLLIN)
        while time.monotonic() < end:
            if waiting.poll(20) and self.connection.recv(1, socket.MSG_PEEK) == b"":
                raise ConnectionResetError

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextmanager
def receiving(delay: float = 0.0) -> Iterator[str]:
    _Receiver.received, _Receiver.delay = [], delay
    _Receiver.in_flight = _Receiver.most_in_flight = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/write"
    finally:
        server.shutdown()
        server.server_close()


class _Counting(http.server.BaseHTTPRequestHandler):
    """An app whose counter is the number of the scrape; it notes when each scrape came."""

    scraped_at: ClassVar[list[float]] = []

    def do_GET(self) -> None:
        type(self).scraped_at.append(time.time())
        body = b"app_scrapes_total %d\n" % len(self.scraped_at)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextmanager
def counting_app() -> Iterator[str]:
    _Counting.scraped_at = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, name="app", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_each_scrape_is_sent_right_after_it_stamped_with_its_scrape_time(tmp_path: Path) -> None:
    with (
        counting_app() as app,
        receiving() as url,
        agent("--target", app, "--interval", "2s", "--remote-write-url", url, tmp=tmp_path),
    ):

        def sent() -> list[Received]:
            return [r for r in _Receiver.received if r[1]["__name__"] == "app_scrapes_total"]

        assert _wait(lambda: len(sent()) >= 3, timeout=40)
        # Pushed on a timer of its own, the value read by scrape n went out with the time of
        # scrape n + 1, an interval (2 s) later; now it carries its own scrape's time and
        # leaves before the next scrape. The bounds are loose for a loaded machine: the
        # benchmark (bench/metrics_agent.py) measures how soon.
        for arrived, _, value, timestamp in sent()[:3]:
            scraped = _Counting.scraped_at[int(value) - 1]  # the scrape that read this value
            assert abs(timestamp / 1000 - scraped) < 1.0, (value, timestamp / 1000 - scraped)
            assert arrived - scraped < 1.5, (value, arrived - scraped)


def test_a_late_push_is_skipped_and_counted_not_piled_up(tmp_path: Path) -> None:
    with (
        counting_app() as app,
        receiving(delay=1.0) as url,
        agent("--target", app, "--interval", "300ms", "--remote-write-url", url, tmp=tmp_path) as (
            port,
            _,
        ),
    ):
        skipped = (
            "sidecarkit_metrics_pushes_total",
            frozenset({("to", "remote_write"), ("result", "skipped"), *IDENTITY}),
        )
        assert _wait(lambda: _samples(port).get(skipped, 0) >= 3, timeout=30)
        started = time.monotonic()
        before = len(_Counting.scraped_at)
        time.sleep(2.0)
        scrapes = len(_Counting.scraped_at) - before
        elapsed = time.monotonic() - started
    # One push at a time for the target, one for the agent's own series, each maybe beside
    # one the receiver has not yet seen abandoned: never a pile.
    assert _Receiver.most_in_flight <= 4
    # Scraping went on at its interval while pushes were slow.
    assert scrapes >= elapsed / 0.3 * 0.25
    log = next(tmp_path.glob("agent-*.log")).read_text()
    assert "skipped" in log


class _Outage(_Receiver):
    """The receiver down (503) until ``up_at``, then taking everything."""

    up_at: ClassVar[float] = 0.0

    def do_POST(self) -> None:
        if time.monotonic() < self.up_at:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_POST()


def test_samples_scraped_during_a_receiver_outage_arrive_in_order_after_it(
    tmp_path: Path,
) -> None:
    _Receiver.received, _Receiver.delay = [], 0.0
    _Outage.up_at = time.monotonic() + 3.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Outage)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="outage", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/write"
    try:
        with (
            counting_app() as app,
            agent(
                "--target", app, "--interval", "500ms", "--remote-write-url", url, tmp=tmp_path
            ) as (port, _),
        ):

            def values() -> list[float]:
                return [
                    r[2]
                    for r in _Receiver.received
                    if r[1]["__name__"] == "app_scrapes_total" and not math.isnan(r[2])
                ]

            assert _wait(lambda: time.monotonic() > _Outage.up_at + 2 and len(values()) >= 6)
            skipped = (
                "sidecarkit_metrics_pushes_total",
                frozenset({("to", "remote_write"), ("result", "skipped"), *IDENTITY}),
            )
            lost = _samples(port).get(skipped, 0)
        got = values()
        assert got == sorted(got), got  # in order, as the receiver needs
        # Every scrape up to the last one sent is there, the first ones (during the outage)
        # included, but for any the agent counted as skipped.
        assert len(set(got)) >= got[-1] - lost, (got, lost)
        assert got[0] == 1
    finally:
        server.shutdown()
        server.server_close()
