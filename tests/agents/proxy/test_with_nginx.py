"""The proxy in front of a real nginx (Debian's package), as a production app server would be."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.proxy.support import Proxy, connection, free_port, read_response, start_proxy

CONF = """worker_processes 1; daemon off; master_process off;
pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/octet-stream;
  client_body_temp_path {d}/cb; proxy_temp_path {d}/pt; fastcgi_temp_path {d}/ft;
  uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;
  server {{ listen 127.0.0.1:{port}; root {d}/www;
    location /echo {{ return 200 "$http_x_forwarded_for|$http_x_request_id|$http_connection"; }}
  }} }}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(binary), "nginx is missing: apt-get install nginx (.ci/run does)"
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big").write_bytes(os.urandom(65536))
    port = free_port()
    (tmp_path / "nginx.conf").write_text(CONF.format(d=tmp_path, port=port))
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "nginx.conf")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with connection(port, 1):
                break
        except OSError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def proxy(nginx: str) -> Iterator[Proxy]:
    p = start_proxy(inbound_app=nginx)
    yield p
    p.stop()


def test_files_from_nginx_arrive_whole_on_one_kept_alive_connection(
    proxy: Proxy, tmp_path: Path
) -> None:
    want = (tmp_path / "www" / "big").read_bytes()
    with connection(proxy.ports["inbound"]) as s:
        for _ in range(5):
            s.sendall(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
            status, headers, body = read_response(s)
            assert status == 200
            assert body == want
            assert headers.get("connection") != "close"
        s.sendall(b"GET /missing HTTP/1.1\r\nHost: app\r\n\r\n")
        assert read_response(s)[0] == 404
        s.sendall(b"HEAD /big HTTP/1.1\r\nHost: app\r\n\r\n")
        status, headers, _ = read_response(s, head_only=True)
        assert headers["content-length"] == "65536"
    assert proxy.metric("tcp_open_total", direction="inbound", peer="dst") == 1


def test_nginx_sees_the_forwarded_client_a_request_id_and_no_hop_by_hop_fields(
    proxy: Proxy,
) -> None:
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, x-drop\r\n\r\n")
        _, _, body = read_response(s)
    forwarded, request_id, conn = body.decode().split("|")
    assert forwarded == "127.0.0.1"
    assert len(request_id) == 36
    assert conn == ""
