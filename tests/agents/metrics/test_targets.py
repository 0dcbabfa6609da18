"""Several targets behind one agent: each series keeps its target, conflicts are reported."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import ClassVar

import pytest

from sidecarkit.agents.metrics import promtext, settings
from tests.agents.metrics.test_agent import IDENTITY, _get, _samples, _wait, agent
from tests.agents.metrics.test_pushing import pushgateway


class _Body(http.server.BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextmanager
def serving(body: bytes) -> Iterator[str]:
    """A local app whose /metrics answers ``body``; yields its URL."""
    handler = type("App", (_Body,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def apps(*bodies: bytes) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(serving(body)) for body in bodies]


def _instance(url: str) -> str:
    return url.split("/")[2]


SAME = b'# TYPE http_requests_total counter\nhttp_requests_total{code="200"} %d\n'


def test_two_targets_with_the_same_series_keep_both_apart_by_instance(tmp_path: Path) -> None:
    with (
        apps(SAME % 3, SAME % 5) as (one, two),
        agent("--target", one, "--target", two, "--interval", "200ms", tmp=tmp_path) as (port, _),
    ):

        def both() -> bool:
            got = _samples(port)
            values = {
                url: got.get(
                    (
                        "http_requests_total",
                        frozenset({("code", "200"), ("instance", _instance(url)), *IDENTITY}),
                    )
                )
                for url in (one, two)
            }
            return values == {one: 3, two: 5}

        assert _wait(both)


def test_honor_labels_keeps_the_apps_own_instance_label(tmp_path: Path) -> None:
    body = b'app_info{instance="from-app",version="1"} 1\n'
    with apps(body) as (url,):
        with agent("--target", url, "--interval", "200ms", tmp=tmp_path) as (port, _):
            clashing = frozenset(
                {("exported_instance", "from-app"), ("instance", _instance(url)), ("version", "1")}
            )
            assert _wait(lambda: _samples(port).get(("app_info", clashing | IDENTITY)) == 1)
        with agent("--target", url, "--interval", "200ms", "--honor-labels", tmp=tmp_path) as (
            port,
            _,
        ):
            honoured = frozenset({("instance", "from-app"), ("version", "1")})
            assert _wait(lambda: _samples(port).get(("app_info", honoured | IDENTITY)) == 1)


def test_a_family_of_another_type_from_another_target_is_reported(tmp_path: Path) -> None:
    gauge = b"# TYPE jobs gauge\njobs 4\n"
    counter = b"# TYPE jobs counter\njobs 9\n"
    with (
        apps(gauge, counter) as (one, two),
        agent("--target", one, "--target", two, "--interval", "200ms", tmp=tmp_path) as (port, _),
    ):
        conflicts = ("sidecarkit_metrics_conflicts_total", frozenset({("kind", "type"), *IDENTITY}))
        assert _wait(lambda: _samples(port).get(conflicts, 0) >= 1)
        got = _samples(port)
        assert got[("jobs", frozenset({("instance", _instance(one)), *IDENTITY}))] == 4
        assert ("jobs", frozenset({("instance", _instance(two)), *IDENTITY})) not in got
    log = next(tmp_path.glob("agent-*.log")).read_text()
    assert f"family jobs from {two} is a counter" in log
    assert "already a gauge" in log


def test_the_same_series_from_two_targets_without_a_target_label_is_reported(
    tmp_path: Path,
) -> None:
    with (
        apps(SAME % 3, SAME % 5) as (one, two),
        agent(
            "--target",
            one,
            "--target",
            two,
            "--interval",
            "200ms",
            "--target-label",
            "",
            tmp=tmp_path,
        ) as (port, _),
    ):
        duplicate = (
            "sidecarkit_metrics_conflicts_total",
            frozenset({("kind", "duplicate"), *IDENTITY}),
        )
        assert _wait(lambda: _samples(port).get(duplicate, 0) >= 1)
        key = ("http_requests_total", frozenset({("code", "200"), *IDENTITY}))
        assert _samples(port)[key] == 3  # the first target's, in the order given
    log = next(tmp_path.glob("agent-*.log")).read_text()
    assert f"1 series of http_requests_total from {two} already came from {one}" in log


def test_a_pushgateway_push_with_two_targets_succeeds(tmp_path: Path) -> None:
    with (
        apps(SAME % 3, SAME % 5) as (one, two),
        pushgateway(tmp_path) as base,
        agent(
            "--target",
            one,
            "--target",
            two,
            "--interval",
            "200ms",
            "--pushgateway-url",
            base,
            "--push-interval",
            "300ms",
            tmp=tmp_path,
        ) as (port, _),
    ):

        def pushed() -> bool:
            families = {f.name: f for f in promtext.parse(_get(f"{base}/metrics")[2])}
            family = families.get("http_requests_total")
            if family is None:
                return False
            return {dict(s.labels)["instance"]: s.value for s in family.samples} == {
                _instance(one): 3,
                _instance(two): 5,
            }

        assert _wait(pushed, timeout=30)
        ok = (
            "sidecarkit_metrics_pushes_total",
            frozenset({("to", "pushgateway"), ("result", "ok")}),
        )
        failed = (ok[0], frozenset({("to", "pushgateway"), ("result", "failed")}))
        got = _samples(port)
        assert got[(ok[0], ok[1] | IDENTITY)] >= 1
        assert (failed[0], failed[1] | IDENTITY) not in got


class _Counted(http.server.BaseHTTPRequestHandler):
    counts: ClassVar[dict[int, int]] = {}

    def do_GET(self) -> None:
        port = int(self.server.server_address[1])  # type: ignore[index]
        self.counts[port] = self.counts.get(port, 0) + 1
        body = b"counted 1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def test_each_target_can_have_its_own_interval(tmp_path: Path) -> None:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counted) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, name="counted", daemon=True).start()
    fast, slow = (int(s.server_address[1]) for s in servers)
    config = tmp_path / "metrics.yaml"
    config.write_text(
        "targets:\n"
        f"  - {{url: 'http://127.0.0.1:{fast}/metrics', interval: 200ms, timeout: 100ms}}\n"
        f"  - {{url: 'http://127.0.0.1:{slow}/metrics', interval: 1h}}\n"
        "interval: 30s\n"
    )
    try:
        with agent("--config", str(config), tmp=tmp_path):
            assert _wait(lambda: _Counted.counts.get(fast, 0) >= 6)
            assert _Counted.counts.get(slow, 0) == 1  # its first scrape only
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_target_mapping_with_an_unknown_key_is_refused_with_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"targets\[0\]: unknown key 'intervall'; accepted:"):
        settings.from_mapping(
            {"targets": [{"url": "http://127.0.0.1:1/m", "intervall": "1s"}]}, source="f"
        )
    (target,) = settings.from_mapping(
        {"targets": [{"url": "http://127.0.0.1:1/m", "interval": "2s", "timeout": "1s"}]},
        source="f",
    ).targets
    assert (target.interval, target.timeout) == (2.0, 1.0)
