"""The proxy's ports in the settings: ``inbound:`` in front of the app, and ``upstreams:``.

Both name a port and where its traffic goes, and both take the most keys and the most checks of
the file (endpoint sources, protocols, TLS), so they are read here, apart from the simple
sections ``settings`` reads by table. Errors name the key, as in ``settingvalues``. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from sidecarkit.agents.proxy import settingvalues, tlsconfig

__all__ = ["BALANCERS", "PROTOCOLS", "Inbound", "Upstream", "inbound_from", "upstream_from"]

BALANCERS: Final = ("p2c-peak-ewma", "round-robin", "least-request")
PROTOCOLS: Final = ("http", "http2", "tcp")


@dataclass(frozen=True, slots=True)
class Inbound:
    listen: tuple[str, int] = ("0.0.0.0", 15006)
    """Where clients of the app connect."""
    app: tuple[str, int] = ("127.0.0.1", 8080)
    """The app, on the pod's loopback."""
    mtls: str = "off"
    """``off``, ``permissive`` or ``strict`` (``tlsconfig``); needs ``identity``."""
    tls: tlsconfig.Termination | None = None
    """TLS termination with certificates from files, for clients outside the mesh."""
    protocol: str = "http"
    """``http`` (HTTP/1.1), ``http2`` (the app speaks h2c: a gRPC server), or ``tcp``: the
    port's bytes are relayed to the app as they are (L4)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    listen: tuple[str, int] | None
    """A loopback port the app calls instead of the service; None: only by HTTP-proxy mode."""
    endpoints: tuple[tuple[str, int], ...] = ()
    """Static endpoints."""
    file: str | None = None
    """A file of ``host:port`` lines, re-read when it changes."""
    dns: tuple[str, int] | None = None
    """A name whose A/AAAA records are the endpoints (a headless Service), or with port 0 an
    SRV name (``_http._tcp.payments.shop``); asked again when the answer's TTL runs out."""
    balancer: str = "p2c-peak-ewma"
    host: str | None = None
    """Host header sent upstream; None keeps the app's."""
    protocol: str = "http"
    """``http``, ``http2`` (the endpoints speak HTTP/2: h2c, or h2 inside mTLS; gRPC), or
    ``tcp`` for an opaque L4 relay (one endpoint per connection)."""
    hosts: tuple[str, ...] = ()
    """Authorities (``name`` or ``name:port``) routed here in HTTP-proxy mode, besides ``name``."""
    kubernetes: tuple[str, str, str] | None = None
    """(service, namespace, port): the ready endpoints of the Service's EndpointSlices, followed
    by list+watch. The port is the Service's port number or name."""
    mtls: bool = False
    """The endpoints have a sidecar: connect with mTLS (needs ``identity``)."""
    peer: str | None = None
    """With ``mtls``: the SPIFFE ID the endpoints must have; None takes any of the trust domain."""
    addresses: tuple[tuple[str, int], ...] = ()
    """In transparent mode, the destinations (a Service's ClusterIP:port) whose redirected
    connections are this upstream's (``intercepting``)."""


def upstream_from(data: Any, where: str) -> Upstream:
    """One item of ``upstreams:``; it needs a name and at least one source of endpoints."""
    data = settingvalues.mapping(data, where)
    allowed = (
        "name", "listen", "endpoints", "file", "dns", "kubernetes", "balancer", "host", "hosts",
        "protocol", "mtls", "peer", "addresses",
    )  # fmt: skip
    settingvalues.known(data, where, allowed)
    name = str(data.get("name", "")).strip()
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"{where}.name: give each upstream a name of letters, digits, -_. ")
    listen = None
    if data.get("listen") not in (None, "", "-"):
        listen = settingvalues.parse_address(
            data["listen"], f"{where}.listen", default_host="127.0.0.1"
        )
    endpoints = tuple(
        settingvalues.parse_address(e, f"{where}.endpoints[{i}]", default_host="127.0.0.1")
        for i, e in enumerate(settingvalues.listed(data.get("endpoints", []), f"{where}.endpoints"))
    )
    file = data.get("file")
    dns = None
    if data.get("dns"):
        text = str(data["dns"]).strip()
        if text.startswith("_") and ":" not in text:
            dns = (text, 0)  # SRV records carry the ports
        else:
            dns = settingvalues.parse_address(data["dns"], f"{where}.dns", default_host="")
        if not dns[0] or (dns[1] == 0 and not dns[0].startswith("_")):
            raise ValueError(
                f"{where}.dns: give NAME:PORT for A/AAAA records, e.g. payments.shop.svc:8080, "
                "or an SRV name without a port, e.g. _http._tcp.payments.shop.svc"
            )
    kubernetes = None
    if data.get("kubernetes"):
        kubernetes = settingvalues.parse_kubernetes(data["kubernetes"], f"{where}.kubernetes")
    addresses = tuple(
        settingvalues.parse_address(e, f"{where}.addresses[{i}]", default_host="")
        for i, e in enumerate(settingvalues.listed(data.get("addresses", []), f"{where}.addresses"))
    )
    for i, (host, _) in enumerate(addresses):
        if not host or not all(c.isdigit() or c == "." for c in host) or host.count(".") != 3:
            raise ValueError(
                f"{where}.addresses[{i}]: give the IPv4 address and port the app dials, "
                "e.g. the Service's ClusterIP 10.96.0.7:80"
            )
    if not endpoints and not file and not dns and not kubernetes:
        raise ValueError(
            f"{where}: no endpoints; give endpoints: [host:port, ...], file: PATH, "
            "dns: NAME:PORT or kubernetes: SERVICE.NAMESPACE:PORT"
        )
    balancer = str(data.get("balancer", "p2c-peak-ewma"))
    if balancer not in BALANCERS:
        raise ValueError(
            f"{where}.balancer: {balancer!r} is unknown; use one of {', '.join(BALANCERS)}"
        )
    host = data.get("host")
    hosts = tuple(
        str(h).strip() for h in settingvalues.listed(data.get("hosts", []), f"{where}.hosts")
    )
    protocol = str(data.get("protocol", "http"))
    if protocol not in PROTOCOLS:
        raise ValueError(f"{where}.protocol: {protocol!r} is unknown; use http, http2 or tcp")
    if protocol in ("tcp", "http2") and listen is None:
        raise ValueError(
            f"{where}.listen: a {protocol} upstream needs its own port, e.g. 15003 "
            "(HTTP-proxy mode serves HTTP/1.1 upstreams only)"
        )
    return Upstream(
        name,
        listen,
        endpoints,
        str(file) if file else None,
        dns,
        balancer,
        str(host) if host else None,
        protocol,
        hosts,
        kubernetes,
        mtls=settingvalues.boolean(data.get("mtls", False), f"{where}.mtls"),
        peer=tlsconfig.peer_id(data["peer"], f"{where}.peer") if data.get("peer") else None,
        addresses=addresses,
    )


def inbound_from(data: Any, where: str, inbound: Inbound) -> Inbound:
    """``inbound:`` (or one item of it) over ``inbound``: the keys it does not give stay."""
    section = settingvalues.mapping(data, where)
    settingvalues.known(section, where, ("listen", "app", "mtls", "tls", "protocol"))
    if "listen" in section:
        inbound = replace(
            inbound, listen=settingvalues.parse_address(section["listen"], f"{where}.listen")
        )
    if "app" in section:
        app = settingvalues.parse_address(section["app"], f"{where}.app", default_host="127.0.0.1")
        inbound = replace(inbound, app=app)
    if "mtls" in section:
        inbound = replace(inbound, mtls=tlsconfig.mtls_mode(section["mtls"], f"{where}.mtls"))
    if "protocol" in section:
        protocol = str(section["protocol"])
        if protocol not in ("http", "http2", "tcp"):
            raise ValueError(
                f"{where}.protocol: {protocol!r} is unknown; use http (HTTP/1.1), http2 "
                "(an app that speaks h2c, such as a gRPC server) or tcp (bytes relayed as they are)"
            )
        inbound = replace(inbound, protocol=protocol)
    if section.get("tls"):
        tls = tlsconfig.termination_from(section["tls"], f"{where}.tls")
        if inbound.protocol == "http2" and "alpn" not in section["tls"]:
            tls = replace(tls, alpn=("h2", "http/1.1"))  # HTTP/2 clients need ALPN h2
        inbound = replace(inbound, tls=tls)
    return inbound
