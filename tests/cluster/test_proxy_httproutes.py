"""The proxy following Gateway API HTTPRoutes through the real kube-apiserver.

The API server serves ``httproutes.gateway.networking.k8s.io/v1`` from a CustomResourceDefinition
the test installs: the Gateway API's group, version, kind and plural, with a schema that keeps
every field (the project's tests do not carry the Gateway API's full validation schema; the
proxy does its own validation and the test checks that it refuses what it cannot carry out).
The routes attach to upstreams with static endpoints on loopback: only the routes come from the
cluster here (EndpointSlices have their own test).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from tests.agents.proxy import support
from tests.support import controlplane
from tests.support import kube as k

HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {
        "name": "httproutes.gateway.networking.k8s.io",
        # the API server requires it for a *.k8s.io group; the Gateway API's CRDs carry it
        "annotations": {
            "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"
        },
    },
    "spec": {
        "group": "gateway.networking.k8s.io",
        "names": {"kind": "HTTPRoute", "listKind": "HTTPRouteList", "plural": "httproutes",
                  "singular": "httproute"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}  # fmt: skip


@pytest.fixture(autouse=True)
def _stop_leftovers() -> Iterator[None]:
    yield
    while support.STARTED:
        proc = support.STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def crd(kube: Client) -> None:
    kube.apply(k.typed(CustomResourceDefinition, CRD), force=True)

    def served() -> bool:
        try:
            list(kube.list(HTTPRoute, namespace="default"))
        except Exception:
            return False
        return True

    k.wait_for("the HTTPRoute CRD to be served", served)


def put_route(kube: Client, ns: str, name: str, rules: list[dict[str, Any]]) -> None:
    body: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "orders", "port": 8080}],
                 "rules": rules},
    }  # fmt: skip
    kube.apply(HTTPRoute.from_dict(body), force=True)


def answers(port: int, count: int = 20, path: str = "/ok") -> Counter[int]:
    seen: Counter[int] = Counter()
    with support.connection(port) as s:
        for _ in range(count):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: orders\r\n\r\n".encode())
            status, _, body = support.read_response(s)
            seen[int(body.split()[1]) if status == 200 else -status] += 1
    return seen


def becomes(port: int, wanted: Counter[int], **kw: Any) -> None:
    deadline = time.monotonic() + 30
    seen: Counter[int] = Counter()
    while time.monotonic() < deadline:
        seen = answers(port, **kw)
        if seen == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"wanted {dict(wanted)}, got {dict(seen)}")


def test_the_proxy_follows_httproutes_in_the_cluster_and_skips_one_it_cannot_carry_out(
    kube: Client,
    crd: None,
    control_plane: controlplane.ControlPlane,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = k.namespace(kube, "proxy-routes")
    stable, canary = (support.start_backend(tmp_path / n) for n in ("stable", "canary"))
    port = support.free_port()
    config = tmp_path / "proxy.yaml"
    config.write_text(json.dumps({
        "kubernetes_routes": ns,
        "upstreams": [
            {"name": "orders", "listen": port, "endpoints": [stable.address],
             "balancer": "round-robin"},
            {"name": "orders-canary", "endpoints": [canary.address]},
        ],
    }))  # fmt: skip
    put_route(kube, ns, "to-canary", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/ok"}}],
         "backendRefs": [{"name": "orders-canary", "port": 8080}]},
    ])  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    log = tmp_path / "proxy.log"
    proxy = support.start_proxy(config=config, stderr=log.open("wb"))
    try:
        becomes(port, Counter({canary.port: 20}))  # the route listed before ready
        put_route(kube, ns, "to-canary", [
            {"backendRefs": [{"name": "orders", "weight": 1},
                             {"name": "orders-canary", "weight": 1},
                             {"name": "payments", "weight": 0}]},
        ])  # fmt: skip
        deadline = time.monotonic() + 30
        split: Counter[int] = Counter()
        while time.monotonic() < deadline:
            split = answers(port, count=200)
            if len(split) == 2:
                break
            time.sleep(0.2)
        assert set(split) == {stable.port, canary.port}, split
        assert 60 <= split[canary.port] <= 140, split  # 1:1 over 200 draws: sd 7, +-40 here
        # a backend that is no upstream: its share is answered 500 (the Gateway API's rule)
        put_route(kube, ns, "to-canary", [{"backendRefs": [{"name": "payments"}]}])
        becomes(port, Counter({-500: 20}))
        # a route with a filter the proxy cannot carry out is skipped whole, and said so
        put_route(kube, ns, "to-canary", [
            {"filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "x"}}],
             "backendRefs": [{"name": "orders-canary"}]},
        ])  # fmt: skip
        becomes(port, Counter({stable.port: 20}))
        assert proxy.metric("routes_refused") == 1
        kube.delete(HTTPRoute, "to-canary", namespace=ns)
        put_route(kube, ns, "again", [{"backendRefs": [{"name": "orders-canary"}]}])
        becomes(port, Counter({canary.port: 20}))
        assert proxy.metric("routes_refused") == 0
        assert proxy.metric("routes_watch_stale") == 0
    finally:
        assert proxy.stop() == 0
    assert "URLRewrite" in log.read_text()
