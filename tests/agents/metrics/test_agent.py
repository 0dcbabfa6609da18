"""``sidecarkit agent metrics`` as a real process, scraped by a real Prometheus 2.42."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sidecarkit.agents.metrics import openmetrics, promtext
from tests.support.webhooks import free_port

APP_METRICS = (
    b"# HELP app_requests_total Requests handled.\n"
    b"# TYPE app_requests_total counter\n"
    b'app_requests_total{route="/"} 42\n'
    b'app_requests_total{route="/items"} 7\n'
    b"# TYPE app_latency_seconds histogram\n"
    b'app_latency_seconds_bucket{le="0.1"} 3\n'
    b'app_latency_seconds_bucket{le="+Inf"} 5\n'
    b"app_latency_seconds_sum 1.5\n"
    b"app_latency_seconds_count 5\n"
    b"app_temperature_celsius 21.5\n"
)


class _App(http.server.BaseHTTPRequestHandler):
    body = APP_METRICS
    accept_seen: list[str] = []  # noqa: RUF012 - shared with the test on purpose

    def do_GET(self) -> None:
        type(self).accept_seen.append(self.headers.get("Accept", ""))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def app() -> Iterator[str]:
    _App.body = APP_METRICS
    _App.accept_seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, name="app", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def _get(url: str, accept: str | None = None, timeout: float = 5) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def _wait(predicate: object, timeout: float = 20.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return True
        except OSError:
            pass
        time.sleep(every)
    return False


#: The agent processes running, by admin port: a test may read one's /proc.
PROCESSES: dict[int, subprocess.Popen[bytes]] = {}


@contextmanager
def agent(*args: str, tmp: Path) -> Iterator[tuple[int, int]]:
    """The agent as its own process; yields (admin port, StatsD port)."""
    port, statsd_port = free_port(), _free_udp_port()
    env = dict(
        os.environ,
        SIDECARKIT_POD_NAME="web-7f9c",
        SIDECARKIT_POD_NAMESPACE="shop",
        SIDECARKIT_NODE_NAME="node-a",
    )
    log = (tmp / f"agent-{port}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "agent",
            "metrics",
            "--port",
            str(port),
            "--statsd-port",
            str(statsd_port),
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    PROCESSES[port] = proc
    try:
        assert _wait(lambda: _get(f"http://127.0.0.1:{port}/ready")[0] == 200), "agent not ready"
        yield port, statsd_port
    finally:
        del PROCESSES[port]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(
    port: int, accept: str | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    _, content_type, body = _get(f"http://127.0.0.1:{port}/metrics", accept)
    parse = openmetrics.parse if "openmetrics" in content_type else promtext.parse
    return {(s.name, frozenset(s.labels)): s.value for f in parse(body) for s in f.samples}


IDENTITY = {("pod", "web-7f9c"), ("namespace", "shop"), ("node", "node-a")}


def instance(url: str) -> tuple[str, str]:
    """The label each target's series get: ``instance``, its host:port, as Prometheus sets."""
    return ("instance", url.split("/")[2])


def test_scrapes_enriches_and_exposes_in_both_formats(app: str, tmp_path: Path) -> None:
    with agent(
        "--target", app, "--interval", "200ms", "--label", "team=payments", tmp=tmp_path
    ) as (port, _):
        assert _wait(
            lambda: (
                _samples(port).get(
                    (
                        "up",
                        frozenset(
                            {("target", app), instance(app), *IDENTITY, ("team", "payments")}
                        ),
                    )
                )
                == 1
            )
        )
        for accept in (None, "application/openmetrics-text;version=1.0.0"):
            got = _samples(port, accept)
            team = frozenset({instance(app), *IDENTITY, ("team", "payments")})
            assert got[("app_requests_total", team | {("route", "/")})] == 42
            assert got[("app_latency_seconds_count", team)] == 5
        _, content_type, _ = _get(
            f"http://127.0.0.1:{port}/metrics", "application/openmetrics-text;version=1.0.0"
        )
        assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert _App.accept_seen[0].startswith("application/openmetrics-text;version=1.0.0")


def test_a_failing_target_is_down_and_its_series_go(app: str, tmp_path: Path) -> None:
    with agent(
        "--target",
        app,
        "--target",
        "http://127.0.0.1:1/metrics",
        "--interval",
        "200ms",
        tmp=tmp_path,
    ) as (port, _):
        closed = "http://127.0.0.1:1/metrics"
        down = frozenset({("target", closed), instance(closed), *IDENTITY})
        assert _wait(lambda: _samples(port).get(("up", down)) == 0.0)
        assert _samples(port)[("scrape_samples_scraped", down)] == 0
        _App.body = b"app_broken{ 1\n"
        up = frozenset({("target", app), instance(app), *IDENTITY})
        assert _wait(lambda: _samples(port).get(("up", up)) == 0.0)
        assert not any(name.startswith("app_") for name, _ in _samples(port))


def test_a_target_over_the_series_limit_fails_with_a_clear_metric(app: str, tmp_path: Path) -> None:
    with agent("--target", app, "--interval", "200ms", "--series-limit", "3", tmp=tmp_path) as (
        port,
        _,
    ):
        labels = frozenset({("target", app), instance(app), *IDENTITY})
        limited = labels | {("limit", "samples")}
        assert _wait(
            lambda: (
                _samples(port).get(("sidecarkit_metrics_scrape_limit_exceeded_total", limited), 0)
                >= 1
            )
        )
        assert _samples(port)[("up", labels)] == 0


def test_statsd_100k_packets_give_exact_totals_and_malformed_ones_are_counted(
    tmp_path: Path,
) -> None:
    with agent("--buckets", "0.01,0.1,1", tmp=tmp_path) as (port, statsd_port):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = ("127.0.0.1", statsd_port)
        total = 100_000
        started = time.monotonic()
        for i in range(total):
            if i % 2:
                sender.sendto(b"orders.placed:2|c|#shop:eu", target)
            else:
                sender.sendto(f"checkout.time:{i % 200}|ms".encode(), target)
            if i % 100 == 99:
                # A bounded rate: every 100 packets, wait until the agent has them all, so the
                # loopback socket buffer never overflows and every packet must arrive.
                want = i + 1
                assert _wait(
                    lambda want=want: (
                        _samples(port)[
                            ("sidecarkit_metrics_statsd_packets_total", frozenset(IDENTITY))
                        ]
                        >= want
                    ),
                    timeout=20,
                    every=0.01,
                )
            assert time.monotonic() - started < 240
        for _ in range(1000):
            sender.sendto(b"not a statsd line", target)
        sender.close()
        assert _wait(
            lambda: (
                _samples(port)[("sidecarkit_metrics_statsd_malformed_total", frozenset(IDENTITY))]
                == 1000
            )
        )
        got = _samples(port)
        assert got[("orders_placed_total", frozenset({("shop", "eu"), *IDENTITY}))] == total
        assert got[("checkout_time_seconds_count", frozenset(IDENTITY))] == total // 2
        fast = frozenset({("le", "0.01"), *IDENTITY})
        # Even i from 0 to 99,998 cycle through i % 200 in 0, 2, ..., 198 ms: 0..10 ms is 6 of 100.
        assert got[("checkout_time_seconds_bucket", fast)] == total // 2 * 6 // 100
        assert _get(f"http://127.0.0.1:{port}/ready")[0] == 200


def _prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed; .ci/run installs Debian's package")
        pytest.skip("prometheus (Debian package) is not installed")
    return binary


@contextmanager
def prometheus(scrape_port: int, tmp: Path, *, port: int | None = None) -> Iterator[str]:
    """A real Prometheus with its TSDB in ``tmp``: started again on the same ``port`` and
    ``tmp``, it is the same receiver after an outage."""
    binary = _prometheus()
    port = port or free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: sidecar\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{scrape_port}']}}]\n"
    )
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait(lambda: _get(f"{base}/-/ready")[0] == 200, timeout=60), "prometheus not ready"
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    body = json.loads(_get(url)[2])
    assert body["status"] == "success"
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_a_real_prometheus_scrapes_the_agent(app: str, tmp_path: Path) -> None:
    with (
        agent("--target", app, "--interval", "500ms", tmp=tmp_path) as (port, statsd_port),
        prometheus(port, tmp_path) as base,
    ):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"jobs.done:5|c", ("127.0.0.1", statsd_port))
        assert _wait(lambda: bool(_query(base, 'app_requests_total{route="/"}')), timeout=60)
        targets = json.loads(_get(f"{base}/api/v1/targets")[2])["data"]["activeTargets"]
        assert targets[0]["health"] == "up", targets[0]["lastError"]
        (series,) = _query(base, 'app_requests_total{route="/"}')
        metric = series["metric"]
        assert isinstance(metric, dict)
        assert metric["pod"] == "web-7f9c"
        assert metric["namespace"] == "shop"
        assert metric["node"] == "node-a"
        assert series["value"][1] == "42"  # type: ignore[index]
        assert _query(base, 'up{job="sidecar"}')[0]["value"][1] == "1"  # type: ignore[index]
        assert _wait(lambda: bool(_query(base, "jobs_done_total")), timeout=30)
        assert _query(base, "app_latency_seconds_count")[0]["value"][1] == "5"  # type: ignore[index]


def test_statsd_over_a_unix_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "statsd.sock"
    with agent("--statsd-socket", str(path), tmp=tmp_path) as (port, _):
        assert _wait(path.exists)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"uploads:3|c|#kind:image", str(path))
            sender.sendto(b"uploads:4|c|#kind:image", str(path))
        key = ("uploads_total", frozenset({("kind", "image"), *IDENTITY}))
        assert _wait(lambda: _samples(port).get(key) == 7)
