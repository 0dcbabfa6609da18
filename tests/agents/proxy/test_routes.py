"""Gateway API HTTPRoutes on the proxy's upstreams, through a real proxy process to real
backend processes: matches, weighted splits, header modifiers, per-route timeouts and retries."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.proxy import httproutes, routetables
from sidecarkit.agents.proxy import settings as proxy_settings
from tests.agents.proxy import support


def route(rules: list[dict[str, Any]], name: str = "orders-route", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop", **meta},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "orders"}],
            "rules": rules,
        },
    }


def start(
    tmp_path: Path, backends: dict[str, list[support.Backend]], routes: list[dict[str, Any]]
) -> tuple[support.Proxy, int]:
    """A proxy with ``orders`` on a local port (its own endpoint: the first backend of the
    first group) and one upstream without a port per group, named as the group."""
    port = support.free_port()
    first = next(iter(backends.values()))[0]
    upstreams: list[dict[str, Any]] = [
        {"name": "orders", "listen": port, "endpoints": [first.address], "balancer": "round-robin"}
    ]
    upstreams += [
        {"name": name, "endpoints": [b.address for b in group], "balancer": "round-robin"}
        for name, group in backends.items()
    ]
    config = tmp_path / "proxy.yaml"
    config.write_text(json.dumps({"upstreams": upstreams, "routes": routes}))
    return support.start_proxy(config=config), port


def ask(port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
        times: int = 1) -> list[tuple[int, dict[str, str], bytes]]:  # fmt: skip
    """``times`` requests on one keep-alive connection."""
    lines = [f"{method} {path} HTTP/1.1", "Host: orders"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    out = []
    with support.connection(port) as s:
        for _ in range(times):
            s.sendall(raw)
            out.append(support.read_response(s, head_only=method == "HEAD"))
    return out


def test_weighted_backend_refs_split_traffic_in_proportion_to_their_weights(
    tmp_path: Path,
) -> None:
    stable = support.start_backend(tmp_path / "stable")
    canary = support.start_backend(tmp_path / "canary")
    proxy, port = start(
        tmp_path,
        {"orders-v1": [stable], "orders-v2": [canary]},
        [route([{"backendRefs": [{"name": "orders-v1", "weight": 80},
                                 {"name": "orders-v2", "weight": 20}]}])],
    )  # fmt: skip
    answers = ask(port, "/orders", times=600)
    seen = collections.Counter(body for _, _, body in answers)
    assert all(status == 200 for status, _, _ in answers)
    assert set(seen) == {b"ok %d" % stable.port, b"ok %d" % canary.port}
    share = seen[b"ok %d" % canary.port] / 600
    # weights 80/20: the canary's share is 0.20; binomial sd over 600 draws is 0.016, and a
    # tolerance of +-0.07 (over 4 sd) keeps the test from flaking while catching a 50/50 split
    assert 0.13 <= share <= 0.27, seen
    assert proxy.metric("request_total", upstream="orders-v2") == seen[b"ok %d" % canary.port]
    assert proxy.metric("request_total", upstream="orders") == 0


def test_matches_follow_gateway_api_precedence_and_unmatched_requests_get_404(
    tmp_path: Path,
) -> None:
    names = ["exact", "prefix", "longer", "method", "header", "query"]
    backends = {name: [support.start_backend(tmp_path / name)] for name in names}
    rules = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
         "backendRefs": [{"name": "prefix"}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api/v2/"}}],
         "backendRefs": [{"name": "longer"}]},
        {"matches": [{"path": {"type": "Exact", "value": "/api/v2/orders"}}],
         "backendRefs": [{"name": "exact"}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}],
         "backendRefs": [{"name": "method"}]},
        {"matches": [{"path": {"value": "/api"},
                      "headers": [{"name": "X-Canary", "value": "yes"}]}],
         "backendRefs": [{"name": "header"}]},
        {"matches": [{"path": {"value": "/api"}, "method": "GET",
                      "queryParams": [{"type": "RegularExpression", "name": "tier",
                                       "value": "gold|platinum"}]}],
         "backendRefs": [{"name": "query"}]},
    ]  # fmt: skip
    proxy, port = start(tmp_path, backends, [route(rules)])

    def who(path: str, **kw: Any) -> str | int:
        status, _, body = ask(port, path, **kw)[0]
        if status != 200:
            return status
        answered = int(body.split()[1])
        return next(n for n, group in backends.items() if group[0].port == answered)

    assert who("/api/v2/orders") == "exact"
    assert who("/api/v2/orders/7") == "longer"
    assert who("/api/v2") == "longer"  # a prefix matches the path itself, slash or not
    assert who("/api/v1/orders") == "prefix"
    assert who("/api") == "prefix"
    assert who("/apiary") == 404  # prefixes match whole path segments
    assert who("/other") == 404
    assert who("/api/v1", method="POST") == "method"  # a method beats headers
    assert who("/api/v1", headers={"x-canary": "yes"}) == "header"
    assert who("/api/v1?tier=gold&x=1") == "query"  # method + query beats the header-only rule
    assert who("/api/v1?tier=silver") == "prefix"
    assert who("/api/v1?tier=gold", headers={"X-Canary": "yes"}) == "query"
    assert proxy.metric("response_total", upstream="orders", status_code="404") == 2


def test_header_modifiers_edit_the_request_sent_and_the_response_returned(
    tmp_path: Path,
) -> None:
    backend = support.start_backend(tmp_path / "b")
    rules = [
        {"backendRefs": [{"name": "orders-v1"}],
         "filters": [
             {"type": "RequestHeaderModifier",
              "requestHeaderModifier": {"set": [{"name": "X-Tier", "value": "gold"}],
                                        "add": [{"name": "X-Route", "value": "canary"}],
                                        "remove": ["X-Debug"]}},
             {"type": "ResponseHeaderModifier",
              "responseHeaderModifier": {"add": [{"name": "X-Served-By", "value": "v1"}],
                                         "remove": ["Content-Type"]}}]},
    ]  # fmt: skip
    _, port = start(tmp_path, {"orders-v1": [backend]}, [route(rules)])
    status, headers, body = ask(
        port, "/echo", headers={"X-Tier": "bronze", "X-Debug": "1", "X-Keep": "k"}
    )[0]
    assert status == 200
    sent = [(k.lower(), v) for k, v in json.loads(body)["headers"]]
    assert ("x-tier", "gold") in sent
    assert ("x-tier", "bronze") not in sent
    assert ("x-route", "canary") in sent
    assert ("x-keep", "k") in sent
    assert all(k != "x-debug" for k, _ in sent)
    assert headers["x-served-by"] == "v1"


def test_a_route_backend_request_timeout_answers_504_and_its_retry_attempts_bound_the_tries(
    tmp_path: Path,
) -> None:
    group = [support.start_backend(tmp_path / f"b{i}") for i in range(3)]
    rules = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
         "timeouts": {"request": "1s", "backendRequest": "300ms"},
         "backendRefs": [{"name": "orders-v1"}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/status"}}],
         "retry": {"codes": [500], "attempts": 1, "backoff": "10ms"},
         "backendRefs": [{"name": "orders-v1"}]},
    ]  # fmt: skip
    proxy, port = start(tmp_path, {"orders-v1": group}, [route(rules)])
    assert ask(port, "/slow/5000")[0][0] == 504
    assert ask(port, "/status/500")[0][0] == 500
    tries = proxy.metric("request_total", upstream="orders-v1", endpoint=group[0].address)
    tries += proxy.metric("request_total", upstream="orders-v1", endpoint=group[1].address)
    tries += proxy.metric("request_total", upstream="orders-v1", endpoint=group[2].address)
    # /slow: per-try timeouts of 300 ms within the 1 s request timeout: 3 tries (the default
    # attempts) at most; /status/500: 500 retried once (attempts: 1), 2 tries
    slow_tries = tries - 2
    assert 1 <= slow_tries <= 3
    assert proxy.metric("retry_total", upstream="orders-v1") == slow_tries - 1 + 1


def test_a_route_naming_an_unknown_upstream_is_refused_with_the_field_and_the_fix() -> None:
    data = {
        "upstreams": [{"name": "orders", "listen": 15001, "endpoints": ["10.0.0.1:80"]}],
        "routes": [route([{"backendRefs": [{"name": "orders-v3"}]}])],
    }
    with pytest.raises(ValueError, match=r"routes\[0\]\.spec\.rules\[0\]\.backendRefs\[0\]"):
        proxy_settings.from_mapping(data, source="proxy.yaml")
    data["routes"] = [route([{"filters": [{"type": "URLRewrite"}], "backendRefs": []}])]
    with pytest.raises(ValueError, match=r"filters\[0\]\.type: 'URLRewrite' is not supported"):
        proxy_settings.from_mapping(data, source="proxy.yaml")


def test_between_equal_matches_the_older_route_wins_then_the_name() -> None:
    def parsed(name: str, created: str, backend: str) -> httproutes.HTTPRoute:
        data = route([{"backendRefs": [{"name": backend}]}], name=name)
        if created:
            data["metadata"]["creationTimestamp"] = created
        return httproutes.from_mapping(data, "routes[0]")

    def winner(*routes: httproutes.HTTPRoute) -> str:
        tables = routetables.build(
            routes, {n: n for n in ("a", "b", "c")},
            timeouts=proxy_settings.Timeouts(), retries=proxy_settings.Retries(),
        )  # fmt: skip
        backend, _, refusal = tables["orders"].route(b"GET", b"/x", [])
        assert refusal is None
        assert backend is not None
        return backend

    older = parsed("zeta", "2024-01-01T00:00:00Z", "a")
    newer = parsed("alpha", "2025-01-01T00:00:00Z", "b")
    undated = parsed("aaa", "", "c")
    assert winner(newer, older) == "a"
    assert winner(undated, newer) == "b"
    assert winner(parsed("beta", "", "a"), parsed("alpha", "", "b")) == "b"


def test_changed_routes_take_effect_on_reload_without_dropping_a_keep_alive_connection(
    tmp_path: Path,
) -> None:
    stable = support.start_backend(tmp_path / "stable")
    canary = support.start_backend(tmp_path / "canary")
    proxy, port = start(
        tmp_path,
        {"orders-v1": [stable], "orders-v2": [canary]},
        # a canary's start: its backend is named with weight 0
        [route([{"backendRefs": [{"name": "orders-v1"}, {"name": "orders-v2", "weight": 0}]}])],
    )
    config = tmp_path / "proxy.yaml"
    data = json.loads(config.read_text())
    with support.connection(port) as s:

        def who() -> bytes:
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: orders\r\n\r\n")
            return support.read_response(s)[2]

        assert who() == b"ok %d" % stable.port
        data["routes"] = [route([{"backendRefs": [{"name": "orders-v2"}]}])]
        part = config.with_suffix(".part")
        part.write_text(json.dumps(data))
        part.replace(config)
        deadline = time.monotonic() + 20
        while proxy.metric("config_reloads_total", result="success") < 1:
            assert time.monotonic() < deadline, proxy.metrics()
            time.sleep(0.1)
        assert who() == b"ok %d" % canary.port  # the same connection, the new route


def test_routes_apply_to_requests_that_reach_their_upstream_through_http_proxy_mode(
    tmp_path: Path,
) -> None:
    stable = support.start_backend(tmp_path / "stable")
    canary = support.start_backend(tmp_path / "canary")
    front = support.free_port()
    config = tmp_path / "proxy.yaml"
    config.write_text(json.dumps({
        "http_proxy": f"127.0.0.1:{front}",
        "upstreams": [{"name": "orders", "endpoints": [stable.address]},
                      {"name": "orders-v2", "endpoints": [canary.address]}],
        "routes": [route([{"matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
                           "backendRefs": [{"name": "orders-v2"}]},
                          {"backendRefs": [{"name": "orders"}]}])],
    }))  # fmt: skip
    support.start_proxy(config=config)

    def body(headers: dict[str, str]) -> bytes:
        return ask(front, "http://orders/ok", headers=headers)[0][2]

    assert body({}) == b"ok %d" % stable.port
    assert body({"X-Canary": "yes"}) == b"ok %d" % canary.port


def test_a_routes_retry_backoff_waits_before_the_retry(tmp_path: Path) -> None:
    group = [support.start_backend(tmp_path / f"b{i}") for i in range(2)]
    rules = [{"retry": {"codes": [500], "attempts": 1, "backoff": "700ms"},
              "backendRefs": [{"name": "orders-v1"}]}]  # fmt: skip
    proxy, port = start(tmp_path, {"orders-v1": group}, [route(rules)])
    started = time.monotonic()
    assert ask(port, "/status/500")[0][0] == 500
    # a lower bound only: a busy machine can make it longer, never shorter
    assert time.monotonic() - started >= 0.7
    assert proxy.metric("retry_total", upstream="orders-v1") == 1
    assert proxy.metric("request_total", upstream="orders-v1") == 2
