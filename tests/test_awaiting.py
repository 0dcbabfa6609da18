"""``sidecarkit await``, the legacy-mode hold, against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from sidecarkit import awaiting


class _Readiness(http.server.BaseHTTPRequestHandler):
    """Answers 503 until it has been asked ``ready_after`` times, then 200."""

    calls = 0
    ready_after = 3

    def do_GET(self) -> None:
        type(self).calls += 1
        status = 200 if type(self).calls > type(self).ready_after else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def server() -> Iterator[str]:
    _Readiness.calls = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readiness)
    thread = threading.Thread(target=httpd.serve_forever, name="readiness", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ready"
    httpd.shutdown()
    httpd.server_close()


def test_waits_through_503_until_ready(server: str) -> None:
    ready, outcome = awaiting.wait_ready(server, timeout=10, interval=0.01)
    assert ready
    assert outcome == "HTTP 200"
    assert _Readiness.calls == 4


def test_gives_up_at_the_deadline_and_says_what_it_last_saw(server: str) -> None:
    _Readiness.ready_after = 10**9
    try:
        ready, outcome = awaiting.wait_ready(server, timeout=0.3, interval=0.01)
    finally:
        _Readiness.ready_after = 3
    assert not ready
    assert outcome == "HTTP 503"


def test_a_closed_port_is_retried_until_the_deadline() -> None:
    port = _closed_port()
    ready, outcome = awaiting.wait_ready(f"http://127.0.0.1:{port}/", timeout=0.2, interval=0.01)
    assert not ready
    assert "refused" in outcome.lower()


def test_the_command_exits_0_when_ready_and_1_when_not(server: str) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "await", server, "--timeout", "10s"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0
    port = _closed_port()
    late = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "await",
            f"http://127.0.0.1:{port}/",
            "--timeout",
            "300ms",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert late.returncode == 1
    assert "not ready after 300ms" in late.stderr


def test_a_bad_timeout_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "await", "http://127.0.0.1:1/", "--timeout", "soon"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "is not a duration" in result.stderr


def _closed_port() -> int:
    """A loopback port that was free a moment ago and has nothing listening now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
