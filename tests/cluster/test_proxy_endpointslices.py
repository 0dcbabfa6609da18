"""The proxy's Kubernetes discovery against the real kube-apiserver: a Service without a selector
and EndpointSlices the test writes itself (as a controller would), pointing at test backends.
The proxy lists and watches them; the tests change them and check where requests go.

The API server refuses loopback addresses in EndpointSlices, so the backends listen on this
host's own non-loopback IPv4 address: traffic to it never leaves the host.

The watch is cut by a loopback TCP relay in front of the API server (``Relay``): the proxy's
kubeconfig names the relay, and closing it breaks the list+watch the way a control-plane outage
or a network partition does.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Service
from lightkube.resources.discovery_v1 import EndpointSlice

from tests.agents.proxy import support
from tests.support import controlplane
from tests.support import kube as k


@pytest.fixture(autouse=True)
def _stop_leftovers() -> Iterator[None]:
    yield
    while support.STARTED:
        proc = support.STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def host_address() -> str:
    """This host's IPv4 address on its default route (no packet is sent to find it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("this host has no non-loopback IPv4 address for EndpointSlices")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address for EndpointSlices")
    return address


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[support.Backend]]:
    base = tmp_path_factory.mktemp("backends")
    host = host_address()
    started = [support.start_backend(base / f"b{i}", host=host) for i in range(3)]
    support.STARTED.clear()  # they serve the whole module, not one test
    yield started
    for backend in started:
        backend.kill()


def service(kube: Client, namespace: str, name: str) -> None:
    """A Service without a selector: its EndpointSlices are ours to write."""
    kube.create(
        k.typed(
            Service,
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
            },
        )
    )


def endpoint(
    backend: support.Backend, *, ready: bool = True, serving: bool | None = None, terminating: bool = False,
    zones: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """One backend's entry (its own slice, since each backend listens on its own port)."""
    conditions = {"ready": ready, "serving": ready if serving is None else serving,
                  "terminating": terminating}  # fmt: skip
    entry: dict[str, Any] = {"addresses": [backend.host], "conditions": conditions}
    if zones:
        entry["hints"] = {"forZones": [{"name": z} for z in zones]}
        entry["zone"] = zones[0]
    return {"port": backend.port, "endpoint": entry}


def put_slice(kube: Client, namespace: str, svc: str, name: str, spec: dict[str, Any]) -> None:
    body = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "tests.sidecarkit.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [spec["endpoint"]],
        "ports": [{"name": "http", "port": spec["port"], "protocol": "TCP"}],
    }
    kube.apply(k.typed(EndpointSlice, body), force=True)


def answered(proxy: support.Proxy, port_name: str = "svc", count: int = 12) -> set[int]:
    """The backend ports that answered ``count`` requests through the proxy."""
    ports = set()
    for _ in range(count):
        status, _, body = support.request(proxy.ports[port_name])
        assert status == 200, body
        ports.add(int(body.split()[1]))
    return ports


def config(tmp_path: Path, target: str, **top: Any) -> Path:
    path = tmp_path / "proxy.yaml"
    upstream = {
        "name": "svc",
        "listen": "127.0.0.1:0",
        "kubernetes": target,
        "balancer": "round-robin",
    }  # every endpoint answers in a few requests
    data = {"upstreams": [upstream], **top}
    path.write_text(json.dumps(data))
    return path


def start(tmp_path: Path, target: str, **top: Any) -> support.Proxy:
    port = support.free_port()
    path = config(tmp_path, target, **top)
    data = json.loads(path.read_text())
    data["upstreams"][0]["listen"] = f"127.0.0.1:{port}"
    path.write_text(json.dumps(data))
    proxy = support.start_proxy(config=path, stderr=(tmp_path / "proxy.log").open("wb"))
    proxy.ports["svc"] = port
    return proxy


def endpoints_become(proxy: support.Proxy, wanted: set[int]) -> None:
    """Wait until the proxy knows exactly ``wanted`` and requests reach just those."""
    deadline = time.monotonic() + 30
    seen: set[int] = set()
    while time.monotonic() < deadline:
        if proxy.metric("endpoints", upstream="svc") == len(wanted):
            seen = answered(proxy)
            if seen == wanted:
                return
        time.sleep(0.1)
    known = [line for line in proxy.metrics().splitlines() if "discovery" in line or
             line.startswith("endpoints")]  # fmt: skip
    raise AssertionError(f"endpoints {sorted(wanted)} wanted; answered {sorted(seen)}; {known}")


def test_the_proxy_follows_readiness_and_deletion_of_endpointslices(
    kube: Client,
    control_plane: controlplane.ControlPlane,
    backends: list[support.Backend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = k.namespace(kube, "proxy-eps")
    service(kube, ns, "payments")
    b0, b1, b2 = (b.port for b in backends)
    e0, e1, e2 = backends
    put_slice(kube, ns, "payments", "payments-a", endpoint(e0))
    put_slice(kube, ns, "payments", "payments-b", endpoint(e1))
    put_slice(kube, ns, "payments", "payments-c", endpoint(e2, ready=False))
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    proxy = start(tmp_path, f"payments.{ns}:8080")
    try:
        endpoints_become(proxy, {b0, b1})  # the not-ready one gets nothing
        put_slice(kube, ns, "payments", "payments-c", endpoint(e2))
        endpoints_become(proxy, {b0, b1, b2})
        kube.delete(EndpointSlice, "payments-a", namespace=ns)
        endpoints_become(proxy, {b1, b2})
        # a rollout's end: nothing ready, one pod still serving while it terminates
        put_slice(kube, ns, "payments", "payments-b", endpoint(e1, ready=False))
        put_slice(kube, ns, "payments", "payments-c",
                  endpoint(e2, ready=False, serving=True, terminating=True))  # fmt: skip
        endpoints_become(proxy, {b2})
        assert proxy.metric("discovery_stale", upstream="svc") == 0
    finally:
        assert proxy.stop() == 0


def test_the_proxy_sends_traffic_to_the_endpoints_hinted_for_its_zone(
    kube: Client,
    control_plane: controlplane.ControlPlane,
    backends: list[support.Backend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = k.namespace(kube, "proxy-zone")
    service(kube, ns, "orders")
    b0, b1, b2 = (b.port for b in backends)
    e0, e1, e2 = backends
    put_slice(kube, ns, "orders", "orders-a", endpoint(e0, zones=("zone-a",)))
    put_slice(kube, ns, "orders", "orders-b", endpoint(e1, zones=("zone-b",)))
    put_slice(kube, ns, "orders", "orders-c", endpoint(e2, zones=("zone-a",)))
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    proxy = start(tmp_path, f"orders.{ns}:http", zone="zone-a")
    try:
        endpoints_become(proxy, {b0, b2})
        # one endpoint without hints: kube-proxy then ignores hints for the whole Service
        put_slice(kube, ns, "orders", "orders-c", endpoint(e2))
        endpoints_become(proxy, {b0, b1, b2})
    finally:
        assert proxy.stop() == 0


class Relay:
    """A loopback TCP relay to the API server that the test can cut and restore (same port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = support.free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target, 5)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        assert self.listener is not None
        with contextlib.suppress(OSError):  # shutdown wakes the thread blocked in accept()
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()


def test_a_broken_watch_keeps_the_last_endpoints_and_says_so_until_it_recovers(
    kube: Client,
    control_plane: controlplane.ControlPlane,
    backends: list[support.Backend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = k.namespace(kube, "proxy-cut")
    service(kube, ns, "ledger")
    b0, b1, b2 = (b.port for b in backends)
    e0, e1, e2 = backends
    put_slice(kube, ns, "ledger", "ledger-a", endpoint(e0))
    put_slice(kube, ns, "ledger", "ledger-b", endpoint(e1))
    server = control_plane.server.removeprefix("https://")
    host, _, port = server.rpartition(":")
    relay = Relay((host, int(port)))
    relay.start()
    kubeconfig = json.loads(control_plane.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://{host}:{relay.port}"
    relayed = tmp_path / "relayed.kubeconfig"
    relayed.write_text(json.dumps(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(relayed))
    proxy = start(tmp_path, f"ledger.{ns}:8080")
    try:
        endpoints_become(proxy, {b0, b1})
        relay.cut()
        k.wait_for(
            "discovery_stale to say the watch is broken",
            lambda: proxy.metric("discovery_stale", upstream="svc") == 1,
        )
        put_slice(kube, ns, "ledger", "ledger-c", endpoint(e2))  # unseen while cut
        assert answered(proxy) == {b0, b1}, "the last good endpoints stay in use"
        assert proxy.metric("discovery_errors_total", upstream="svc") >= 1
        log = (tmp_path / "proxy.log").read_text()
        assert f"kubernetes:ledger.{ns}:8080" in log
        assert "keeping the last endpoints (2)" in log
        relay.start()
        endpoints_become(proxy, {b0, b1, b2})
        assert proxy.metric("discovery_stale", upstream="svc") == 0
    finally:
        relay.cut()
        assert proxy.stop() == 0
