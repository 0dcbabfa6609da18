"""HTTP-proxy mode: the app's ``HTTP_PROXY`` points at the proxy, which routes by authority."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sidecarkit.agents.proxy import routing
from tests.agents.proxy.support import free_port, request, start_backend, start_proxy


def test_the_router_reads_the_authority_from_the_target_before_the_host_header() -> None:
    router = routing.Router({"payments": "P", "search.shop.svc:8080": "S"})
    assert router.route(b"http://payments/orders?id=1", b"other") == (
        "P",
        b"/orders?id=1",
        b"payments",
    )
    assert router.route(b"http://PAYMENTS:9000", None) == ("P", b"/", b"payments:9000")
    assert router.route(b"http://user@payments?q", None) == ("P", b"/?q", b"payments")
    assert router.route(b"/x", b"search.shop.svc:8080") == ("S", b"/x", b"search.shop.svc:8080")
    assert router.route(b"/x", b"search.shop.svc:9090")[0] is None
    assert router.route(b"/x", None)[0] is None


def test_an_app_using_the_proxy_as_http_proxy_reaches_each_upstream_by_name(tmp_path: Path) -> None:
    pay = start_backend(tmp_path / "pay")
    search = start_backend(tmp_path / "search")
    config = tmp_path / "proxy.yaml"
    config.write_text(
        f"upstreams:\n"
        f"  - {{name: payments, endpoints: [{pay.address}]}}\n"
        f"  - {{name: search, hosts: [search.shop.svc], endpoints: [{search.address}]}}\n"
    )
    port = free_port()
    proxy = start_proxy("--http-proxy", f"127.0.0.1:{port}", config=config)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
    )
    try:
        with opener.open("http://payments/ok", timeout=10) as r:
            assert r.read() == b"ok %d" % pay.port
        with opener.open("http://search.shop.svc:8080/ok", timeout=10) as r:
            assert r.read() == b"ok %d" % search.port
        status, _, body = request(port, "/ok")
        assert status == 404  # Host: test names no upstream
        assert b"no upstream is named test" in body
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open("http://unknown.example/ok", timeout=10)
        assert caught.value.code == 404
        assert proxy.metric("request_total", upstream="payments", endpoint=pay.address) == 1
    finally:
        proxy.stop()
        pay.kill()
        search.kill()
