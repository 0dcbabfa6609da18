"""Reloading the proxy's settings (a changed file or SIGHUP) while real keep-alive connections
and requests are in flight: nothing open is dropped, and a bad file changes nothing."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

from sidecarkit.agents.proxy import reloading
from sidecarkit.agents.proxy import settings as proxy_settings
from tests.agents.proxy import support


def write(path: Path, upstreams: list[dict[str, Any]], **top: Any) -> None:
    """Write the settings in one rename, as a ConfigMap update lands."""
    part = path.with_suffix(".part")
    part.write_text(json.dumps({"upstreams": upstreams, **top}))
    part.replace(path)


def ask(s: socket.socket, path: str = "/ok") -> tuple[int, bytes]:
    """One keep-alive request on an open connection."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    status, headers, body = support.read_response(s)
    assert headers.get("connection") != "close", headers
    return status, body


def wait_reloads(proxy: support.Proxy, result: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proxy.metric("config_reloads_total", result=result) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {result} reload in 20 s: {proxy.metrics()}")


def test_a_changed_file_moves_traffic_and_adds_an_upstream_without_dropping_connections(
    tmp_path: Path,
) -> None:
    a = support.start_backend(tmp_path / "a")
    b = support.start_backend(tmp_path / "b")
    port, extra = support.free_port(), support.free_port()
    config = tmp_path / "proxy.yaml"
    write(config, [{"name": "svc", "listen": port, "endpoints": [a.address]}])
    proxy = support.start_proxy(config=config)
    with support.connection(port) as kept, support.connection(port) as slow:
        assert ask(kept) == (200, b"ok %d" % a.port)
        slow.sendall(b"GET /slow/1500 HTTP/1.1\r\nHost: test\r\n\r\n")  # in flight meanwhile
        write(
            config,
            [
                {"name": "svc", "listen": port, "endpoints": [b.address]},
                {"name": "extra", "listen": extra, "endpoints": [a.address]},
            ],
            timeouts={"idle": "30s"},
        )
        wait_reloads(proxy, "success", 1)
        status, _, _ = support.read_response(slow)
        assert status == 200, "the request in flight across the reload finished"
        assert ask(kept) == (200, b"ok %d" % b.port), "the kept connection uses the new endpoints"
        assert ask(slow) == (200, b"ok %d" % b.port)
    assert support.request(extra)[2] == b"ok %d" % a.port
    assert proxy.metric("config_last_reload_successful") == 1
    assert proxy.stop() == 0


def test_an_invalid_file_on_sighup_is_refused_with_the_key_and_the_old_settings_keep_serving(
    tmp_path: Path,
) -> None:
    a = support.start_backend(tmp_path / "a")
    b = support.start_backend(tmp_path / "b")
    port = support.free_port()
    config = tmp_path / "proxy.yaml"
    write(config, [{"name": "svc", "listen": port, "endpoints": [a.address]}])
    log = tmp_path / "proxy.log"
    proxy = support.start_proxy(config=config, stderr=log.open("wb"))
    with support.connection(port) as kept:
        assert ask(kept) == (200, b"ok %d" % a.port)
        bad = [{"name": "svc", "listen": port, "endpoints": [b.address], "balancer": "fastest"}]
        write(config, bad)
        proxy.proc.send_signal(signal.SIGHUP)
        wait_reloads(proxy, "failure", 1)
        text = log.read_text()
        assert "reload (SIGHUP) refused" in text
        assert f"{config}: upstreams[0].balancer: 'fastest' is unknown; use one of" in text
        assert "the running settings stay in force" in text
        assert "Traceback" not in text
        assert ask(kept) == (200, b"ok %d" % a.port), "the old settings still run"
        assert support.request(port)[2] == b"ok %d" % a.port
        assert proxy.metric("config_last_reload_successful") == 0
        write(config, [{"name": "svc", "listen": port, "endpoints": [b.address]}])
        wait_reloads(proxy, "success", 1)
        assert ask(kept) == (200, b"ok %d" % b.port)
    assert proxy.stop() == 0


def test_a_moved_or_removed_listener_closes_while_its_open_connections_finish(
    tmp_path: Path,
) -> None:
    a = support.start_backend(tmp_path / "a")
    port, gone, moved = support.free_port(), support.free_port(), support.free_port()
    config = tmp_path / "proxy.yaml"
    write(
        config,
        [
            {"name": "svc", "listen": port, "endpoints": [a.address]},
            {"name": "old", "listen": gone, "endpoints": [a.address]},
        ],
    )
    proxy = support.start_proxy(config=config)
    with support.connection(port) as on_moved, support.connection(gone) as on_removed:
        assert ask(on_moved)[0] == 200
        on_removed.sendall(b"GET /slow/1500 HTTP/1.1\r\nHost: test\r\n\r\n")
        write(config, [{"name": "svc", "listen": moved, "endpoints": [a.address]}])
        wait_reloads(proxy, "success", 1)
        status, headers, _ = support.read_response(on_removed)
        assert status == 200
        assert headers.get("connection") == "close", "a removed service's clients are told to go"
        assert ask(on_moved)[0] == 200, "a connection on the old port carries on"
    assert support.request(moved)[0] == 200
    for closed in (port, gone):
        try:
            socket.create_connection(("127.0.0.1", closed), 2).close()
        except OSError:
            continue
        raise AssertionError(f"port {closed} still accepts connections after the reload")
    assert proxy.stop() == 0


def test_a_reload_restarts_only_the_discovery_that_changed() -> None:
    def settings(**svc: Any) -> proxy_settings.Settings:
        ups = [{"name": "svc", "listen": 15001, "kubernetes": "a.b:80", **svc},
               {"name": "other", "listen": 15002, "endpoints": ["10.0.0.1:80"]}]  # fmt: skip
        return proxy_settings.from_mapping({"upstreams": ups}, source="f")

    same = reloading.plan(settings(), settings(balancer="round-robin"))
    assert same.keep == ("upstream:svc", "upstream:other")
    assert same.rediscover == ()
    moved = reloading.plan(settings(), settings(listen=15003, kubernetes="a.c:80"))
    assert moved.move == ("upstream:svc",)
    assert moved.rediscover == ("upstream:svc",)
    retyped = reloading.plan(settings(), settings(protocol="tcp"))
    assert (retyped.retire, retyped.add) == (("upstream:svc",), ("upstream:svc",))


def test_an_inbound_ports_security_is_part_of_its_listener() -> None:
    """A port that changes between plain, mTLS modes and TLS is a new listener (new kind of
    socket); each further inbound port has its own key."""

    def settings(*inbounds: dict[str, Any]) -> proxy_settings.Settings:
        data = {"inbound": list(inbounds) if len(inbounds) > 1 else inbounds[0]}
        return proxy_settings.from_mapping(data, source="f", final=False)

    plain = {"listen": 15006, "app": "127.0.0.1:8080"}
    strict = {**plain, "mtls": "strict"}
    assert set(reloading.listeners(settings(plain, {**plain, "listen": 15007}))) == {
        "inbound",
        "inbound:15007",
    }
    same = reloading.plan(settings(strict), settings(strict))
    assert (same.keep, same.retire, same.add) == (("inbound",), (), ())
    tightened = reloading.plan(settings(plain), settings(strict))
    assert (tightened.retire, tightened.add) == (("inbound",), ("inbound",))
    relaxed = reloading.plan(settings(strict), settings({**plain, "mtls": "permissive"}))
    assert (relaxed.retire, relaxed.add) == (("inbound",), ("inbound",))
    second = reloading.plan(settings(plain), settings(plain, {**plain, "listen": 15007}))
    assert (second.keep, second.add) == (("inbound",), ("inbound:15007",))


def test_a_reload_naming_a_port_in_use_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    a = support.start_backend(tmp_path / "a")
    b = support.start_backend(tmp_path / "b")
    port = support.free_port()
    config = tmp_path / "proxy.yaml"
    write(config, [{"name": "svc", "listen": port, "endpoints": [a.address]}])
    log = tmp_path / "proxy.log"
    proxy = support.start_proxy(config=config, stderr=log.open("wb"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        write(
            config,
            [
                {"name": "svc", "listen": port, "endpoints": [b.address]},
                {"name": "extra", "listen": busy, "endpoints": [b.address]},
            ],
        )
        wait_reloads(proxy, "failure", 1)
    assert "refused: cannot listen" in log.read_text()
    assert support.request(port)[2] == b"ok %d" % a.port, "the svc change was not half-applied"
    assert proxy.stop() == 0
