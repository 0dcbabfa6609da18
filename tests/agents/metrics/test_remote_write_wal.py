"""remote_write's WAL with the real agent: a receiver outage, a kill -9 of the agent in the
middle of it and a restart; then every sample arrives once, in order, or its loss is counted.

Receivers: a real Prometheus (--web.enable-remote-write-receiver), stopped for the outage and
started again on its TSDB; and the local remote_write 1.0 receiver of test_remote_write, which
records every sample it is sent, so a duplicate would show.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from tests.agents.metrics.test_agent import _get, _samples, _wait, prometheus
from tests.agents.metrics.test_remote_write import _Counting, _Receiver, counting_app
from tests.support.webhooks import free_port

#: How long before a kill -9 a scrape may have been taken without its body reaching the disk
#: yet (it is encoded in a worker thread first); such a sample was never the agent's to keep.
#: The scrapes' interval (1 s) is also their timeout: long enough that none fails on a loaded
#: machine, as a failed scrape would be a value missing for another reason.
KILL_WINDOW = 1.0


def _start(*args: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SIDECARKIT_POD_NAME="web-7f9c", SIDECARKIT_POD_NAMESPACE="shop")
    log = (tmp / f"agent-{time.monotonic_ns()}.log").open("wb")
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
            "0",
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    assert _wait(lambda: _get(f"http://127.0.0.1:{port}/ready")[0] == 200), "agent not ready"
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


class _Switch(_Receiver):
    """The local receiver, answering 503 while ``down``."""

    down: ClassVar[bool] = False

    def do_POST(self) -> None:
        if type(self).down:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_POST()


@contextmanager
def switched_receiver() -> Iterator[str]:
    _Receiver.received, _Receiver.delay, _Switch.down = [], 0.0, False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Switch)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/write"
    finally:
        server.shutdown()
        server.server_close()


def _received_values(name: str = "app_scrapes_total") -> list[float]:
    return [r[2] for r in _Receiver.received if r[1]["__name__"] == name and not math.isnan(r[2])]


def _missing_only_at_the_kill(got: set[int], killed_at: float) -> list[int]:
    """The scrapes up to the last one received that did not arrive and were not taken just
    before the kill."""
    return [
        v
        for v in range(1, max(got) + 1)
        if v not in got and not killed_at - KILL_WINDOW <= _Counting.scraped_at[v - 1] <= killed_at
    ]


def test_an_outage_and_a_kill_9_lose_nothing_and_send_nothing_twice(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    with counting_app() as app, switched_receiver() as url:
        args: tuple[str, ...] = ("--target", app, "--interval", "1s", "--remote-write-url", url)
        args += ("--remote-write-wal-dir", str(wal))
        port = free_port()
        first = _start(*args, port=port, tmp=tmp_path)
        try:
            assert _wait(lambda: len(_received_values()) >= 3, timeout=30)
            _Switch.down = True
            time.sleep(5)
            killed_at = time.time()
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            time.sleep(0.5)
            second = _start(*args, port=port, tmp=tmp_path)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        try:
            time.sleep(2)
            resumed = len(_Counting.scraped_at)
            _Switch.down = False
            assert _wait(lambda: max(_received_values(), default=0) >= resumed + 3, timeout=60)
        finally:
            _stop(second)
    got = _received_values()
    # In order, as the receiver needs, and each sample once: what the dead agent left on disk
    # was sent by the new one, before anything it scraped itself.
    assert got == sorted(got), got
    assert len(got) == len(set(got)), [v for v in got if got.count(v) > 1]
    assert _missing_only_at_the_kill({int(v) for v in got}, killed_at) == []
    # The outage was long enough to matter: samples from before the kill came after it.
    outage_values = [v for v in got if _Counting.scraped_at[int(v) - 1] < killed_at - 1]
    assert len(outage_values) >= 5


def _raw_samples(base: str, promql: str) -> list[tuple[float, float]]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    body = json.loads(_get(url)[2])
    assert body["status"] == "success", body
    results = body["data"]["result"]
    if not results:
        return []
    (series,) = results
    return [(float(t), float(v)) for t, v in series["values"]]


def test_a_real_prometheus_stopped_while_the_agent_is_killed_gets_every_sample_in_order(
    tmp_path: Path,
) -> None:
    wal = tmp_path / "wal"
    prometheus_port = free_port()
    with counting_app() as app:
        base = f"http://127.0.0.1:{prometheus_port}"
        args: tuple[str, ...] = (
            "--target",
            app,
            "--interval",
            "1s",
            "--remote-write-url",
            f"{base}/api/v1/write",
        )
        args += ("--remote-write-wal-dir", str(wal))
        port = free_port()
        with prometheus(free_port(), tmp_path, port=prometheus_port):
            first = _start(*args, port=port, tmp=tmp_path)
            assert _wait(lambda: len(_raw_samples(base, "app_scrapes_total[10m]")) >= 3, 60)
        # Prometheus is down (stopped, its port closed) from here on.
        try:
            time.sleep(3)
            killed_at = time.time()
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            second = _start(*args, port=port, tmp=tmp_path)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        try:
            time.sleep(2)
            with prometheus(free_port(), tmp_path, port=prometheus_port):
                resumed = len(_Counting.scraped_at)

                def arrived() -> list[tuple[float, float]]:
                    return _raw_samples(base, "app_scrapes_total[10m]")

                assert _wait(lambda: max(v for _, v in arrived()) >= resumed + 3, timeout=60)
                samples = arrived()
                metrics = _samples(port)
        finally:
            _stop(second)
    values = [v for _, v in samples]
    stamps = [t for t, _ in samples]
    # Prometheus refuses a sample older than the series' last one: every value being there
    # shows they came in order.
    assert values == sorted(values)
    assert stamps == sorted(stamps)
    got = {int(v) for v in values}
    assert len(got) == len(values)
    assert _missing_only_at_the_kill(got, killed_at) == []
    # Each sample carries its own scrape's time.
    for stamp, value in samples:
        assert abs(stamp - _Counting.scraped_at[int(value) - 1]) < 0.5, (value, stamp)
    assert metrics[("sidecarkit_metrics_remote_write_dropped_samples_total", _pod())] == 0


def _pod() -> frozenset[tuple[str, str]]:
    return frozenset({("pod", "web-7f9c"), ("namespace", "shop")})


class _Wide(http.server.BaseHTTPRequestHandler):
    """An app with ``SERIES`` series besides the scrape count, hard to compress."""

    SERIES: ClassVar[int] = 2000
    scraped_at: ClassVar[list[float]] = []

    def do_GET(self) -> None:
        type(self).scraped_at.append(time.time())
        n = len(self.scraped_at)
        lines = [b"app_scrapes_total %d\n" % n]
        lines += [
            b'app_wide{i="%d"} %d\n' % (i, (n * 7919 + i * 104729) % 1000003)
            for i in range(self.SERIES)
        ]
        body = b"".join(lines)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def test_past_the_wal_size_the_oldest_samples_are_dropped_and_counted(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    _Wide.scraped_at = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Wide)
    threading.Thread(target=server.serve_forever, name="wide", daemon=True).start()
    app = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        with switched_receiver() as url:
            _Switch.down = True
            args: tuple[str, ...] = (
                "--target",
                app,
                "--interval",
                "500ms",
                "--remote-write-url",
                url,
            )
            args += ("--remote-write-wal-dir", str(wal), "--remote-write-wal-size", "256KiB")
            port = free_port()
            proc = _start(*args, port=port, tmp=tmp_path)
            try:
                key = ("sidecarkit_metrics_remote_write_dropped_samples_total", _pod())
                assert _wait(lambda: _samples(port).get(key, 0) > 0, timeout=60)
                on_disk = sum(p.stat().st_size for p in wal.glob("*.wal"))
                assert on_disk <= (256 << 10) + (64 << 10) * 2  # the bound, a segment written
                _Switch.down = False
                resumed = len(_Wide.scraped_at)
                assert _wait(lambda: max(_received_values(), default=0) >= resumed + 2, 60)
                dropped = _samples(port)[key]
            finally:
                _stop(proc)
        got = [int(v) for v in _received_values()]
        assert got == sorted(got)
        assert len(got) == len(set(got))
        missing = [v for v in range(1, max(got) + 1) if v not in set(got)]
        # The oldest went, the newest stayed; and no sample went missing uncounted.
        assert missing
        assert min(missing) == 1
        assert len(missing) * (_Wide.SERIES + 1) <= dropped
    finally:
        server.shutdown()
        server.server_close()


def _refused(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "metrics", "--statsd-port", "0", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr.decode()


def test_a_wal_that_cannot_be_kept_is_refused_with_the_fix(tmp_path: Path) -> None:
    url = "--remote-write-url=http://127.0.0.1:9/api/v1/write"
    a_file = tmp_path / "not-a-directory"
    a_file.write_text("")
    code, err = _refused(url, "--remote-write-wal-dir", str(a_file), "--port", str(free_port()))
    assert code == 3
    assert f"remote_write_wal_dir {a_file}: cannot be written" in err
    assert "Traceback" not in err
    code, err = _refused(
        url, "--remote-write-wal-dir", str(tmp_path), "--remote-write-wal-size", "1KiB"
    )
    assert code == 3
    assert "remote_write_wal_size must be at least 64KiB" in err


def test_what_a_target_gone_since_left_in_the_wal_is_still_delivered(tmp_path: Path) -> None:
    from tests.agents.metrics.test_targets import serving  # noqa: PLC0415

    wal = tmp_path / "wal"
    with counting_app() as app, serving(b"other_app_up 1\n") as other, switched_receiver() as url:
        _Switch.down = True
        common = (
            "--interval",
            "300ms",
            "--remote-write-url",
            url,
            "--remote-write-wal-dir",
            str(wal),
        )
        port = free_port()
        first = _start("--target", app, *common, port=port, tmp=tmp_path)
        try:
            assert _wait(lambda: len(_Counting.scraped_at) >= 5, timeout=30)
            time.sleep(0.5)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        scraped = len(_Counting.scraped_at)
        _Switch.down = False
        # The new agent scrapes another target only: the first one's samples still go out.
        second = _start("--target", other, *common, port=port, tmp=tmp_path)
        try:
            assert _wait(lambda: len(set(_received_values())) >= scraped - 1, timeout=60)
            assert _wait(lambda: bool(_received_values("other_app_up")), timeout=30)
        finally:
            _stop(second)
    got = _received_values()
    assert got == sorted(got)
    assert len(got) == len(set(got))
