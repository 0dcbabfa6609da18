"""DNS discovery against a real DNS server on loopback: dnslib's server (a faithful
implementation of the wire format over UDP) answering from a zone the test changes."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, SRV, A
from dnslib.server import BaseResolver, DNSServer

from tests.agents.proxy import support


class Zone(BaseResolver):  # type: ignore[misc]
    """Records by (name, type); a name with no record of any type is NXDOMAIN."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[Any]] = {}
        self.asked: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def set(self, name: str, kind: str, *rdata: Any, ttl: int = 1) -> None:
        with self.lock:
            self.records[(name, kind)] = [
                RR(name, getattr(QTYPE, kind), rdata=r, ttl=ttl) for r in rdata
            ]

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name, kind = str(request.q.qname).lower(), QTYPE[request.q.qtype]
        with self.lock:
            self.asked.append((name, kind))
            if not any(key[0] == name for key in self.records):
                reply.header.rcode = RCODE.NXDOMAIN
            for rr in self.records.get((name, kind), []):
                reply.add_answer(rr)
        return reply


@pytest.fixture
def zone() -> Iterator[tuple[Zone, DNSServer]]:
    records = Zone()
    port = support.free_port()
    server = DNSServer(records, address="127.0.0.1", port=port, logger=Quiet())
    server.start_thread()
    yield records, server
    if server.isAlive():
        server.stop()


class Quiet:
    """dnslib's logger interface, silent."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def start(tmp_path: Path, server: DNSServer, dns: str) -> support.Proxy:
    port = support.free_port()
    config = tmp_path / "proxy.yaml"
    upstream = {"name": "svc", "listen": port, "dns": dns, "balancer": "round-robin"}
    config.write_text(
        json.dumps(
            {"upstreams": [upstream], "dns_server": f"127.0.0.1:{server.server.server_address[1]}"}
        )
    )
    proxy = support.start_proxy(config=config)
    proxy.ports["svc"] = port
    return proxy


def answered(proxy: support.Proxy) -> set[bytes]:
    out = set()
    for _ in range(8):
        status, _, body = support.request(proxy.ports["svc"])
        assert status == 200, body
        out.add(body)
    return out


def becomes(proxy: support.Proxy, wanted: set[bytes]) -> None:
    deadline = time.monotonic() + 20
    seen: set[bytes] = set()
    while time.monotonic() < deadline:
        seen = answered(proxy)
        if seen == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"wanted answers from {wanted}, got {seen}")


def test_a_names_records_are_asked_again_when_their_ttl_runs_out_and_kept_when_dns_fails(
    tmp_path: Path, zone: tuple[Zone, DNSServer]
) -> None:
    records, server = zone
    port = support.free_port()
    one = support.start_backend(tmp_path / "one", port=port, host="127.0.0.1")
    two = support.start_backend(tmp_path / "two", port=port, host="127.0.0.2")
    del one, two  # both answer "ok PORT": the access log names the endpoint instead
    records.set("svc.test.", "A", A("127.0.0.1"), ttl=1)
    proxy = start(tmp_path, server, f"svc.test:{port}")
    try:
        assert proxy.metric("request_total", endpoint=f"127.0.0.2:{port}") == 0
        answered(proxy)
        assert proxy.metric("request_total", endpoint=f"127.0.0.1:{port}") == 8
        assert proxy.metric("discovery_stale", upstream="svc") == 0
        records.set("svc.test.", "A", A("127.0.0.2"), ttl=1)
        deadline = time.monotonic() + 20
        while proxy.metric("request_total", endpoint=f"127.0.0.2:{port}") == 0:
            assert time.monotonic() < deadline, "the new A record was never used"
            answered(proxy)
            time.sleep(0.2)
        assert ("svc.test.", "A") in records.asked
        server.stop()
        deadline = time.monotonic() + 20
        while proxy.metric("discovery_errors_total", upstream="svc") == 0:
            assert time.monotonic() < deadline, "the DNS outage was not noticed"
            time.sleep(0.2)
        assert proxy.metric("discovery_stale", upstream="svc") == 1
        before = proxy.metric("request_total", endpoint=f"127.0.0.2:{port}")
        answered(proxy)
        assert proxy.metric("request_total", endpoint=f"127.0.0.2:{port}") == before + 8
    finally:
        assert proxy.stop() == 0


def test_srv_records_give_ports_and_only_the_lowest_priority_with_targets_is_used(
    tmp_path: Path, zone: tuple[Zone, DNSServer]
) -> None:
    records, server = zone
    a, b, c = (support.start_backend(tmp_path / n) for n in "abc")
    for name in ("a.test.", "b.test.", "c.test."):
        records.set(name, "A", A("127.0.0.1"))
    srv = "_http._tcp.svc.test."
    records.set(
        srv,
        "SRV",
        SRV(priority=10, weight=1, port=a.port, target="a.test."),
        SRV(priority=10, weight=1, port=b.port, target="b.test."),
        SRV(priority=20, weight=1, port=c.port, target="c.test."),
    )
    proxy = start(tmp_path, server, "_http._tcp.svc.test")
    try:
        becomes(proxy, {b"ok %d" % a.port, b"ok %d" % b.port})
        records.set(srv, "SRV", SRV(priority=20, weight=1, port=c.port, target="c.test."))
        becomes(proxy, {b"ok %d" % c.port})
    finally:
        assert proxy.stop() == 0


def test_srv_weights_share_traffic_among_targets_of_one_priority_as_rfc_2782_says(
    tmp_path: Path, zone: tuple[Zone, DNSServer]
) -> None:
    records, server = zone
    light, heavy, spare = (support.start_backend(tmp_path / n) for n in ("l", "h", "s"))
    for name in ("light.test.", "heavy.test.", "spare.test."):
        records.set(name, "A", A("127.0.0.1"))
    srv = "_http._tcp.svc.test."
    records.set(
        srv,
        "SRV",
        SRV(priority=10, weight=10, port=light.port, target="light.test."),
        SRV(priority=10, weight=30, port=heavy.port, target="heavy.test."),
        SRV(priority=10, weight=0, port=spare.port, target="spare.test."),
    )
    proxy = start(tmp_path, server, "_http._tcp.svc.test")
    try:
        seen: Counter[bytes] = Counter()
        for _ in range(400):
            status, _, body = support.request(proxy.ports["svc"])
            assert status == 200, body
            seen[body] += 1
        # smooth weighted round robin over 10 : 30 : 0.01 is exact but for the weight-0
        # target's rare turn: 100 and 300 of 400, give or take 2
        assert abs(seen[b"ok %d" % light.port] - 100) <= 2, seen
        assert abs(seen[b"ok %d" % heavy.port] - 300) <= 2, seen
        assert seen[b"ok %d" % spare.port] <= 1, seen
        # the weights change: the split follows at the next answer
        records.set(
            srv,
            "SRV",
            SRV(priority=10, weight=1, port=light.port, target="light.test."),
            SRV(priority=10, weight=1, port=heavy.port, target="heavy.test."),
        )
        deadline = time.monotonic() + 20
        split: Counter[bytes] = Counter()
        while time.monotonic() < deadline:
            split = Counter(support.request(proxy.ports["svc"])[2] for _ in range(20))
            if split[b"ok %d" % light.port] == 10:
                break
            time.sleep(0.2)
        assert split == {b"ok %d" % light.port: 10, b"ok %d" % heavy.port: 10}, split
    finally:
        assert proxy.stop() == 0
