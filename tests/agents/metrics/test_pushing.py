"""Pushing: remote_write into a real Prometheus, a real Pushgateway, and the retry rules."""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import aiohttp
import cramjam
import pytest

from sidecarkit.agents.metrics import exposition, promtext, pushing
from tests.agents.metrics.test_agent import _get, _query, _wait, agent, prometheus
from tests.support.webhooks import free_port


def _family(name: str, value: float, **labels: str) -> exposition.Family:
    return exposition.Family(
        name, "gauge", None, None, [exposition.Sample(name, tuple(labels.items()), value)]
    )


def _decode(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """Protobuf fields of ``buf`` as (number, wire type, payload)."""
    out: list[tuple[int, int, bytes | int]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, i = _varint(buf, i)
            out.append((number, wire, buf[i : i + length]))
            i += length
        elif wire == 1:
            out.append((number, wire, buf[i : i + 8]))
            i += 8
        else:
            value, i = _varint(buf, i)
            out.append((number, wire, value))
    return out


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def test_write_request_wire_format_and_stale_markers() -> None:
    writer = pushing.RemoteWriter("http://127.0.0.1:1/api/v1/write")
    writer.body([_family("a", 1.5, job="x", empty=""), _family("b", 2.0)], now_ms=1000)
    body = writer.body([_family("b", 3.0)], now_ms=2000)
    request = _decode(bytes(cramjam.snappy.decompress_raw(body)))
    series = {}
    for number, _, payload in request:
        assert number == 1
        assert isinstance(payload, bytes)
        labels, samples = [], []
        for field, _, inner in _decode(payload):
            assert isinstance(inner, bytes)
            parts = {n: p for n, _, p in _decode(inner)}
            if field == 1:
                labels.append((parts[1].decode(), parts[2].decode()))  # type: ignore[union-attr]
            else:
                value = struct.unpack("<d", parts[1])[0]  # type: ignore[arg-type]
                samples.append((value, parts[2]))
        series[tuple(labels)] = samples
    assert series[(("__name__", "b"),)] == [(3.0, 2000)]
    ((stale_value, stale_ts),) = series[(("__name__", "a"), ("job", "x"))]
    assert math.isnan(stale_value)
    assert struct.pack("<d", stale_value) == struct.pack("<Q", 0x7FF0000000000002)
    assert stale_ts == 2000


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A remote_write receiver that answers a scripted list of statuses."""

    statuses: ClassVar[list[int]] = []
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(dict(self.headers))
        status = self.statuses.pop(0) if self.statuses else 204
        body = b"" if status == 204 else b"no"  # a 204 has no body
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/write"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("statuses", "ok", "attempts"),
    [
        ([204], True, 1),
        ([500, 503, 200], True, 3),
        ([429, 204], True, 2),
        ([400], False, 1),
        ([404], False, 1),
        ([503] * 1000, False, None),
    ],
)
def test_retries_only_on_5xx_and_429(
    receiver: str, statuses: list[int], ok: bool, attempts: int | None
) -> None:
    _Receiver.statuses = list(statuses)

    async def run() -> pushing.PushResult:
        async with aiohttp.ClientSession() as session:
            writer = pushing.RemoteWriter(receiver)
            return await writer.push(session, [_family("a", 1)], deadline=time.monotonic() + 1.5)

    result = asyncio.run(run())
    assert result.ok is ok
    if attempts is not None:
        assert result.attempts == attempts
    else:
        assert result.attempts > 3
    headers = _Receiver.seen[0]
    assert headers["Content-Encoding"] == "snappy"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["User-Agent"].startswith("sidecarkit/")


def test_remote_write_into_a_real_prometheus_with_stale_markers(tmp_path: Path) -> None:
    app_body = {"text": b"app_jobs_total 7\napp_queue 3\n"}

    class App(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = app_body["text"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, name="app", daemon=True).start()
    app = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        # Prometheus scrapes nothing here (its own config points at a closed port): every series
        # it has came in through remote_write.
        with (
            prometheus(free_port(), tmp_path) as base,
            agent(
                "--target",
                app,
                "--interval",
                "300ms",
                "--remote-write-url",
                f"{base}/api/v1/write",
                tmp=tmp_path,
            ),
        ):
            assert _wait(lambda: bool(_query(base, "app_queue")), timeout=60)
            (series,) = _query(base, "app_queue")
            assert series["metric"]["pod"] == "web-7f9c"  # type: ignore[index]
            assert series["value"][1] == "3"  # type: ignore[index]
            app_body["text"] = b"app_jobs_total 8\n"
            assert _wait(lambda: not _query(base, "app_queue"), timeout=30), "no stale marker"
            assert _query(base, "app_jobs_total")[0]["value"][1] == "8"  # type: ignore[index]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def pushgateway(tmp: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway (Debian package) is not installed")
    port = free_port()
    log = (tmp / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            # Debian's build persists to /var/lib/prometheus by default, shared by every run.
            f"--persistence.file={tmp / 'pushgateway.data'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert _wait(lambda: _get(f"{base}/-/ready")[0] == 200, timeout=30)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def test_pushes_to_a_real_pushgateway_grouped_by_pod(tmp_path: Path) -> None:
    with (
        pushgateway(tmp_path) as base,
        agent(
            "--statsd-port",
            "0",
            "--pushgateway-url",
            base,
            "--push-interval",
            "300ms",
            tmp=tmp_path,
        ) as (_, _statsd),
    ):

        def pushed() -> bool:
            families = promtext.parse(_get(f"{base}/metrics")[2])
            return any(f.name == "push_time_seconds" for f in families)

        assert _wait(pushed, timeout=30)
        families = {f.name: f for f in promtext.parse(_get(f"{base}/metrics")[2])}
        sample = families["sidecarkit_metrics_statsd_packets_total"].samples[0]
        labels = dict(sample.labels)
        assert labels["job"] == "sidecarkit"
        assert labels["pod"] == "web-7f9c"
        assert labels["namespace"] == "shop"
        groups = json.loads(_get(f"{base}/api/v1/metrics")[2])["data"]
        assert groups[0]["labels"] == {"job": "sidecarkit", "namespace": "shop", "pod": "web-7f9c"}


def test_grouping_paths_encode_slashes() -> None:
    assert pushing.grouping_path("batch", [("pod", "a/b")]) == (
        "/metrics/job/batch/pod/YS9i@base64"
    )
    assert pushing.grouping_path("j", [("pod", "")]) == "/metrics/job/j/pod/=@base64"


def test_series_encoded_once_carry_each_pushs_timestamp_whatever_its_length() -> None:
    # Each series' encoding up to its value is kept from push to push; a timestamp of another
    # length (1 ms, then a 2023 time) must not reuse a prefix sized for the old one.
    writer = pushing.RemoteWriter("http://127.0.0.1:1/api/v1/write")
    for now_ms in (1, 1_700_000_000_000, 300, 1_700_000_000_500):
        body = writer.body([_family("a", 1.5, job="x"), _family("b", 2.0)], now_ms=now_ms)
        request = _decode(bytes(cramjam.snappy.decompress_raw(body)))
        assert len(request) == 2
        for _, _, series in request:
            assert isinstance(series, bytes)
            (sample,) = [inner for field, _, inner in _decode(series) if field == 2]
            assert isinstance(sample, bytes)
            parts = {n: p for n, _, p in _decode(sample)}
            assert parts[2] == now_ms
