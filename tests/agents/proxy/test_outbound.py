"""Outbound: balancing over several endpoints, failures, ejection, retries and their budget."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agents.proxy.support import (
    Backend,
    connection,
    read_response,
    request,
    start_backend,
    start_proxy,
)


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[list[Backend]]:
    started = [start_backend(tmp_path / f"b{i}") for i in range(3)]
    yield started
    for b in started:
        b.kill()


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    return path


def _answered_until(
    port: int, done: Callable[[Counter[str]], bool], timeout: float = 30.0
) -> Counter[str]:
    """What answered rounds of ten requests, until ``done(seen)`` of the last round or
    ``timeout`` s: ejections and the endpoints file's polling end on the proxy's clock, which a
    busy machine slows."""
    deadline = time.monotonic() + timeout
    seen = _answered_by(port, 10)
    while not done(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = _answered_by(port, 10)
    return seen


def _answered_by(port: int, count: int, path: str = "/ok", method: str = "GET") -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        status, _, body = request(port, path, method=method)
        seen[f"{status} {body.decode().split(' ')[-1] if status == 200 else ''}".strip()] += 1
    return seen


def test_requests_are_spread_over_the_endpoints(backends: list[Backend]) -> None:
    eps = ",".join(b.address for b in backends)
    for balancer in ("p2c-peak-ewma", "round-robin", "least-request"):
        proxy = start_proxy("--balancer", balancer, upstreams={"svc": eps})
        try:
            seen = _answered_by(proxy.ports["svc"], 60)
        finally:
            proxy.stop()
        assert all(k.startswith("200 ") for k in seen)
        assert sum(seen.values()) == 60
        if balancer == "round-robin":
            assert sorted(seen.values()) == [20, 20, 20], seen
        else:  # random pairs: more than one endpoint serves even one request at a time
            assert len(seen) >= 2, (balancer, seen)


def test_a_backend_killed_mid_response_cuts_the_client_quickly_and_later_requests_go_to_live_ones(
    backends: list[Backend],
) -> None:
    proxy = start_proxy(upstreams={"svc": ",".join(b.address for b in backends)})
    try:
        with connection(proxy.ports["svc"]) as s:
            s.sendall(b"GET /stream HTTP/1.1\r\nHost: svc\r\n\r\n")
            head = b""
            while b"chunk " not in head:
                head += s.recv(4096)
            port = int(head.split(b"chunk ")[1].split(b"\n")[0])
            victim = next(b for b in backends if b.port == port)
            killed = time.monotonic()
            victim.kill()
            s.settimeout(10)
            while s.recv(65536):
                pass  # until the proxy cuts the connection
            assert time.monotonic() - killed < 5
        seen = _answered_by(proxy.ports["svc"], 30)
        assert seen["200 " + str(port)] == 0
        assert sum(n for k, n in seen.items() if k.startswith("200")) == 30, seen
    finally:
        proxy.stop()


def test_an_ejected_endpoint_comes_back_after_it_recovers(
    tmp_path: Path, backends: list[Backend]
) -> None:
    victim = backends[0]
    config = _config(tmp_path, "outlier:\n  consecutive_failures: 2\n  base_ejection: 1s\n")
    eps = ",".join(b.address for b in backends)
    proxy = start_proxy("--balancer", "round-robin", config=config, upstreams={"svc": eps})
    try:
        victim.kill()
        seen = _answered_by(proxy.ports["svc"], 30)
        assert all(k.startswith("200") for k in seen), seen
        assert proxy.metric("ejections", upstream="svc") >= 1
        revived = start_backend(tmp_path / "revived", port=victim.port)
        backends.append(revived)
        seen = _answered_until(proxy.ports["svc"], lambda seen: seen[f"200 {victim.port}"] > 0)
        assert seen[f"200 {victim.port}"] > 0, seen
    finally:
        proxy.stop()


def test_a_post_is_not_retried_but_a_get_is(tmp_path: Path, backends: list[Backend]) -> None:
    proxy = start_proxy(upstreams={"svc": ",".join(b.address for b in backends)})
    try:
        status, _, _ = request(proxy.ports["svc"], "/status/503", method="POST", body=b"order")
        assert status == 503
        assert proxy.metric("retry_total", upstream="svc") == 0
        assert proxy.metric("request_total", upstream="svc") == 1
        status, _, _ = request(proxy.ports["svc"], "/status/503")
        assert status == 503
        assert proxy.metric("retry_total", upstream="svc") == 2  # three tries in all
    finally:
        proxy.stop()


def test_a_post_is_retried_when_the_connection_failed_before_anything_was_sent(
    tmp_path: Path, backends: list[Backend]
) -> None:
    backends[0].kill()
    proxy = start_proxy(
        "--balancer", "round-robin", upstreams={"svc": ",".join(b.address for b in backends)}
    )
    try:
        statuses = [
            request(proxy.ports["svc"], "/echo", method="POST", body=b"x")[0] for _ in range(6)
        ]
        assert statuses == [200] * 6
    finally:
        proxy.stop()


def test_the_retry_budget_caps_retries_when_every_endpoint_fails(
    tmp_path: Path, backends: list[Backend]
) -> None:
    config = _config(
        tmp_path,
        "retries:\n  budget_ratio: 0.2\n  budget_floor: 0\n  attempts: 3\n"
        "outlier:\n  max_ejected_percent: 0\n",
    )
    proxy = start_proxy(config=config, upstreams={"svc": ",".join(b.address for b in backends)})
    try:
        statuses = Counter(request(proxy.ports["svc"], "/status/503")[0] for _ in range(200))
        assert statuses == {503: 200}
        retries = proxy.metric("retry_total", upstream="svc")
        assert 0 < retries <= 0.2 * 200 + 1
        assert proxy.metric("request_total", upstream="svc") == 200 + retries
    finally:
        proxy.stop()


def test_an_endpoints_file_is_followed_and_a_broken_one_keeps_the_last_endpoints(
    tmp_path: Path, backends: list[Backend]
) -> None:
    eps = tmp_path / "svc.endpoints"
    eps.write_text(f"# the first one\n{backends[0].address}\n")
    proxy = start_proxy("--balancer", "round-robin", upstreams={"svc": f"file:{eps}"})
    try:
        assert _answered_by(proxy.ports["svc"], 5) == {f"200 {backends[0].port}": 5}
        eps.write_text(f"{backends[1].address}\n{backends[2].address}\n")
        wanted = {f"200 {backends[1].port}", f"200 {backends[2].port}"}
        seen = _answered_until(proxy.ports["svc"], lambda seen: set(seen) == wanted)
        seen = _answered_by(proxy.ports["svc"], 30)
        assert set(seen) == wanted, seen
        eps.write_text("not an address\n")
        deadline = time.monotonic() + 30
        while proxy.metric("discovery_errors_total", upstream="svc") < 1:
            assert time.monotonic() < deadline, "the broken endpoints file was never read"
            time.sleep(0.2)
        seen = _answered_by(proxy.ports["svc"], 10)
        assert set(seen) <= {f"200 {backends[1].port}", f"200 {backends[2].port}"}, seen
        assert proxy.metric("discovery_errors_total", upstream="svc") >= 1
    finally:
        proxy.stop()


def test_a_service_with_no_endpoints_answers_503(tmp_path: Path) -> None:
    eps = tmp_path / "empty.endpoints"
    eps.write_text("")
    proxy = start_proxy(upstreams={"svc": f"file:{eps}"})
    try:
        status, headers, _ = request(proxy.ports["svc"], "/ok")
        assert status == 503
        assert headers["retry-after"] == "1"
    finally:
        proxy.stop()


def test_a_dns_name_gives_the_endpoints_and_a_failing_one_keeps_the_service_up(
    tmp_path: Path, backends: list[Backend]
) -> None:
    port = backends[0].port
    proxy = start_proxy(
        upstreams={"local": f"dns:localhost:{port}", "gone": "dns:no-such-name.invalid:80"}
    )
    try:
        statuses = [request(proxy.ports["local"], "/ok")[0] for _ in range(10)]
        assert statuses == [200] * 10
        assert proxy.metric("endpoints", upstream="local") >= 1
        status, headers, _ = request(proxy.ports["gone"], "/ok")
        assert status == 503
        assert headers["retry-after"] == "1"
        assert proxy.metric("discovery_errors_total", upstream="gone") >= 1
    finally:
        proxy.stop()


def test_every_try_is_counted_in_response_total_on_the_endpoint_that_answered_it(
    tmp_path: Path, backends: list[Backend]
) -> None:
    config = _config(tmp_path, "outlier:\n  max_ejected_percent: 0\n")
    proxy = start_proxy(config=config, upstreams={"svc": ",".join(b.address for b in backends)})
    try:
        statuses = Counter(request(proxy.ports["svc"], "/status/503")[0] for _ in range(20))
        assert statuses == {503: 20}
        tries = proxy.metric("request_total", upstream="svc")
        assert proxy.metric("retry_total", upstream="svc") > 0
        # a 503 retried elsewhere is still a failure of the endpoint that gave it, as Linkerd
        # counts it: every try has its response
        failures = proxy.metric("response_total", upstream="svc", classification="failure")
        assert failures == tries
        for b in backends:
            labels = {"upstream": "svc", "endpoint": b.address}
            assert proxy.metric("response_total", **labels) == proxy.metric(
                "request_total", **labels
            )
    finally:
        proxy.stop()


def test_no_series_for_the_proxys_own_answers_appears_before_it_answers_one(
    tmp_path: Path, backends: list[Backend]
) -> None:
    proxy = start_proxy(upstreams={"svc": backends[0].address})
    try:
        assert request(proxy.ports["svc"])[0] == 200
        assert 'endpoint=""' not in proxy.metrics()
        with connection(proxy.ports["svc"]) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n")
            assert read_response(s)[0] == 400
        assert proxy.metric("request_total", upstream="svc", endpoint="") == 1
        assert proxy.metric("response_total", upstream="svc", endpoint="", status_code="400") == 1
    finally:
        proxy.stop()
