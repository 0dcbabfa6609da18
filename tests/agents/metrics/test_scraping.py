"""Scraping: memory bounded while reading, ordinary large targets by default, clear reasons."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from tests.agents.metrics.test_agent import (
    IDENTITY,
    PROCESSES,
    _samples,
    _wait,
    agent,
    instance,
)
from tests.agents.metrics.test_targets import serving
from tests.support.webhooks import free_port


class _Endless(http.server.BaseHTTPRequestHandler):
    """A hostile target: distinct series without end (at most ``limit`` bytes), sent as fast
    as the scraper reads them, no Content-Length."""

    limit: ClassVar[int] = 150 << 20

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        sent, i = 0, 0
        try:
            while sent < self.limit:
                chunk = "".join(
                    f'hostile_series{{id="{n:09d}",pad="abcdefghijklmnop"}} 1\n'
                    for n in range(i, i + 1000)
                ).encode()
                i += 1000
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_hostile_endless_target_cannot_take_the_agent_past_its_memory_budget(
    tmp_path: Path,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="hostile", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        with agent(
            "--target", url, "--interval", "5s", "--memory-limit", "32MiB", tmp=tmp_path
        ) as (port, _):
            labels = frozenset({("target", url), instance(url), *IDENTITY})
            refused = (
                "sidecarkit_metrics_scrape_limit_exceeded_total",
                labels | {("limit", "memory_bytes")},
            )
            # A 5 s interval leaves the scrape time to reach the budget on a loaded machine
            # (a 1 s timeout could end it first).
            assert _wait(lambda: _samples(port).get(refused, 0) >= 1, timeout=60)
            assert _samples(port)[("up", labels)] == 0
            # 150 MB of series parsed would hold over 1 GB; refused while reading, the agent
            # stays within its 32 MiB budget above what it needs to run.
            assert _peak_rss_mb(PROCESSES[port].pid) < 160
        log = next(tmp_path.glob("agent-*.log")).read_text()
        assert "memory budget" in log
        assert "memory_limit" in log
    finally:
        server.shutdown()
        server.server_close()


def test_a_100k_series_target_is_scraped_with_the_defaults(tmp_path: Path) -> None:
    body = b"# TYPE kube_pod_info gauge\n" + b"".join(
        b'kube_pod_info{namespace="ns-%d",pod="pod-%d"} 1\n' % (i % 50, i) for i in range(100_000)
    )
    with (
        serving(body) as url,
        agent("--target", url, "--interval", "5s", tmp=tmp_path) as (
            port,
            _,
        ),
    ):
        labels = frozenset({("target", url), instance(url), *IDENTITY})
        assert _wait(
            lambda: _samples(port).get(("scrape_samples_scraped", labels)) == 100_000, timeout=60
        )
        assert _samples(port)[("up", labels)] == 1


class _Slow(http.server.BaseHTTPRequestHandler):
    delay: ClassVar[float] = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        body = b"slow_app_up 1\n"
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def test_a_scrape_timeout_is_logged_with_its_reason(tmp_path: Path) -> None:
    _Slow.delay = 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="slow", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        with agent("--target", url, "--interval", "1s", "--timeout", "300ms", tmp=tmp_path) as (
            port,
            _,
        ):
            labels = frozenset({("target", url), instance(url), *IDENTITY})
            assert _wait(lambda: _samples(port).get(("up", labels)) == 1)
            _Slow.delay = 2.0
            assert _wait(lambda: _samples(port).get(("up", labels)) == 0)
        log = next(tmp_path.glob("agent-*.log")).read_text()
        assert f"scrape of {url} failed: no complete answer within 0.3 s" in log
    finally:
        _Slow.delay = 0.0
        server.shutdown()
        server.server_close()


@contextmanager
def _app_on(port: int) -> Iterator[None]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="late app", daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_a_target_that_is_not_up_yet_is_not_reported_until_it_has_answered(
    tmp_path: Path,
) -> None:
    _Slow.delay = 0.0
    app_port = free_port()
    url = f"http://127.0.0.1:{app_port}/metrics"
    with agent("--target", url, "--interval", "100ms", tmp=tmp_path) as (port, _):
        labels = frozenset({("target", url), instance(url), *IDENTITY})
        time.sleep(1.0)  # ten scrapes of an app still starting
        log = next(tmp_path.glob("agent-*.log"))
        assert "failed" not in log.read_text()
        with _app_on(app_port):
            assert _wait(lambda: _samples(port).get(("up", labels)) == 1)
        assert _wait(lambda: _samples(port).get(("up", labels)) == 0)
        assert _wait(lambda: f"scrape of {url} failed" in log.read_text())


class _Gzipped(http.server.BaseHTTPRequestHandler):
    """A target answering gzip when asked, as client_golang does; ``body`` before gzip."""

    body: ClassVar[bytes] = b""
    encodings: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        asked = self.headers.get("Accept-Encoding", "")
        type(self).encodings.append(asked)
        payload = gzip.compress(self.body) if "gzip" in asked else self.body
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        if "gzip" in asked:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def test_gzip_answers_are_read_and_limits_apply_to_what_they_unpack_to(tmp_path: Path) -> None:
    # 20,000 series that pack into a few hundred kilobytes: the body limit counts the bytes
    # unpacked, so a small gzip cannot smuggle a large body past it.
    _Gzipped.body = b"".join(b'packed_series{id="%06d"} 1\n' % i for i in range(20_000))
    _Gzipped.encodings = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gzipped)
    threading.Thread(target=server.serve_forever, name="gzip", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    labels = frozenset({("target", url), instance(url), *IDENTITY})
    try:
        with agent("--target", url, "--interval", "300ms", tmp=tmp_path) as (port, _):
            assert _wait(lambda: _samples(port).get(("scrape_samples_scraped", labels)) == 20_000)
        assert "gzip" in _Gzipped.encodings[0]
        limit = len(_Gzipped.body) // 2
        with agent(
            "--target", url, "--interval", "300ms", "--body-size-limit", str(limit), tmp=tmp_path
        ) as (port, _):
            refused = (
                "sidecarkit_metrics_scrape_limit_exceeded_total",
                labels | {("limit", "body_bytes")},
            )
            assert _wait(lambda: _samples(port).get(refused, 0) >= 1)
    finally:
        server.shutdown()
        server.server_close()
