"""remote_write over TLS with a CA of our own, with bearer-token and basic auth.

The receiver is a local HTTPS server implementing the remote_write receiving side as
documented (it checks the Authorization header, answers 401 without the right one, 204 with).
"""

from __future__ import annotations

import base64
import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytest

from tests.agents.metrics.test_agent import IDENTITY, _samples, _wait, agent
from tests.support.webhooks import Tls, make_tls


class _Secured(http.server.BaseHTTPRequestHandler):
    expected: ClassVar[str] = ""
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        given = self.headers.get("Authorization", "")
        type(self).seen.append(given)
        self.send_response(204 if given == self.expected else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextmanager
def https_receiver(tls: Tls, expected: str) -> Iterator[str]:
    _Secured.expected, _Secured.seen = expected, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Secured)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="https receiver", daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/api/v1/write"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["bearer", "basic"])
def test_remote_write_over_tls_with_credentials_from_files(tmp_path: Path, kind: str) -> None:
    tls = make_tls(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")  # as a mounted Secret often ends: the newline is not sent
    if kind == "bearer":
        expected = "Bearer s3cr3t"
        auth = f"remote_write_bearer_token_file: {secret}\n"
    else:
        expected = "Basic " + base64.b64encode(b"agent:s3cr3t").decode()
        auth = f"remote_write_username: agent\nremote_write_password_file: {secret}\n"
    with https_receiver(tls, expected) as url:
        config = tmp_path / "metrics.yaml"
        config.write_text(
            f"remote_write_url: {url}\nremote_write_ca_file: {tls.ca_file}\n{auth}"
            "push_interval: 300ms\n"
        )
        with agent("--config", str(config), tmp=tmp_path) as (port, _):
            ok = (
                "sidecarkit_metrics_pushes_total",
                frozenset({("to", "remote_write"), ("result", "ok"), *IDENTITY}),
            )
            assert _wait(lambda: _samples(port).get(ok, 0) >= 1)
            secret.write_text("rotated")  # read before every push: the new one goes out
            assert _wait(
                lambda: any(s.endswith(("rotated", "cm90YXRlZA==")) for s in _Secured.seen)
            )
    assert _Secured.seen[0] == expected


def test_an_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "metrics.yaml"
    config.write_text(
        "remote_write_url: https://127.0.0.1:1/api/v1/write\n"
        f"remote_write_ca_file: {tmp_path / 'missing.pem'}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "metrics", "--config", str(config)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "remote_write_ca_file" in run.stderr
    assert "Traceback" not in run.stderr
