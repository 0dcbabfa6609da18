"""HTTP probes against a real local server: redirects followed as the kubelet follows them."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest

from sidecarkit.runner import probing, specs


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/hop/"):
            left = int(self.path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", f"/hop/{left - 1}" if left > 1 else "/ok")
        elif self.path == "/loop":
            self.send_response(307)
            self.send_header("Location", "/loop")
        elif self.path == "/ok":
            self.send_response(200)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _probe(port: int, path: str) -> tuple[bool, str]:
    handler = specs.Handler("httpGet", path=path, port=port)
    return asyncio.run(probing.run_handler(handler, env={}, cwd=None, ports={}, timeout=5.0))


def test_same_host_redirects_are_followed_up_to_ten(port: int) -> None:
    assert _probe(port, "/ok") == (True, "HTTP 200")
    assert _probe(port, "/hop/10") == (True, "HTTP 200 after 10 redirects")
    assert _probe(port, "/hop/11") == (False, "stopped after 10 redirects")
    assert _probe(port, "/loop") == (False, "stopped after 10 redirects")


def test_the_last_answer_decides(port: int) -> None:
    assert _probe(port, "/hop/1") == (True, "HTTP 200 after 1 redirect")
    assert _probe(port, "/missing") == (False, "HTTP 404")
