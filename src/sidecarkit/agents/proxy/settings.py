"""Settings of ``sidecarkit agent proxy``: YAML (``--config``) under flags, over the defaults.

A YAML file looks like this (every key optional; an inbound listener or an upstream is needed
for the proxy to do anything)::

    admin: 0.0.0.0:15190              # /healthz, /ready, /metrics
    inbound:                          # the app's own port, fronted by the proxy
      listen: 0.0.0.0:15006
      app: 127.0.0.1:8080
      protocol: http                  # or http2 (h2c: a gRPC server), or tcp (L4 bytes)
    upstreams:                        # services the app calls, one local port each
      - name: payments
        listen: 127.0.0.1:15001
        endpoints: [10.0.0.7:8080, 10.0.0.8:8080]   # static, or:
        file: /etc/sidecarkit/payments.endpoints     # one host:port a line, watched
        dns: payments.shop.svc.cluster.local:8080     # or: A/AAAA records (or an SRV name
                                                      # without a port), asked again by TTL
        kubernetes: payments.shop:8080  # or: the Service's EndpointSlices (port number or name)
        balancer: p2c-peak-ewma       # or round-robin, least-request
        host: payments.shop.svc       # Host header sent upstream (default: as the app sent it)
        protocol: http                # or http2 (h2c, gRPC), or tcp: an opaque L4 relay
        hosts: [payments, payments.shop.svc]  # names it answers to in HTTP-proxy mode
        addresses: [10.96.0.7:80]     # transparent mode: connections the app makes to these
    http_proxy: 127.0.0.1:15080       # the app's HTTP_PROXY: routes by the authority it names
    transparent: 0.0.0.0:15001        # where `agent proxy-init`'s iptables rules redirect to
    dns_server: 127.0.0.1:53          # default: the servers of /etc/resolv.conf
    zone: eu-west-1a                  # this pod's zone: EndpointSlice zone hints are followed
    limits:
      max_connections: 10000          # per listener; more are closed at once
      max_requests_in_flight: 10000   # per listener; more get 503 with Retry-After
      max_header_bytes: 32768         # request line and headers; more get 431
      max_headers: 100
      max_body_bytes: 0               # 0: no limit; more get 413
    timeouts:
      header: 10s                     # from the first byte of a request to its last header
      idle: 60s                       # keep-alive connection with no request
      connect: 1s
      request: 0s                     # 0: none; whole request until the response head
      try: 0s                         # 0: none; one attempt until the response head
    retries:
      methods: [GET, HEAD, OPTIONS, TRACE, PUT, DELETE]
      on_status: [502, 503, 504]
      attempts: 3                     # tries in all, the first included
      budget_ratio: 0.2               # retries may add this share of the requests
      budget_floor: 10                # plus this many retries a second
      budget_window: 10s
    outlier:
      consecutive_failures: 5         # 5xx or connect failures in a row eject an endpoint
      base_ejection: 10s              # first ejection; each further one is longer
      max_ejection: 300s
      max_ejected_percent: 50
    pool:
      max_connections_per_endpoint: 1000
      max_idle_per_endpoint: 256
      idle_timeout: 60s
    drain:
      delay: 0s                       # after SIGTERM, readiness false this long before closing
      grace: 25s                      # then in-flight requests get this long to finish
    access_log: false                 # one JSON line a request on stdout
    # TLS (identity:, inbound.mtls, inbound.tls, upstreams[].mtls and .peer): see tlsconfig
    policy: /etc/sidecarkit/policy.yaml   # authentication, authorization, rate limits (inbound)
    kubernetes_routes: shop           # and the HTTPRoutes of this namespace, by list+watch
    routes:                           # Gateway API HTTPRoute objects, as applied to a cluster
      - apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: orders-canary}
        spec:
          parentRefs: [{kind: Service, name: orders}]     # an upstream
          rules: [{backendRefs: [{name: orders-v1, weight: 90}, {name: orders-v2, weight: 10}]}]

Every error names the key and says what would be accepted, because the reader is usually
looking at a crash-looping pod's log. This module does no I/O: the command reads the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Final

from sidecarkit import durations
from sidecarkit.agents.proxy import httproutes, tlsconfig

__all__ = [
    "BALANCERS",
    "Drain",
    "Inbound",
    "Limits",
    "Outlier",
    "Pool",
    "Retries",
    "Settings",
    "Timeouts",
    "Upstream",
    "from_mapping",
    "parse_address",
    "parse_kubernetes",
    "to_mapping",
]

BALANCERS: Final = ("p2c-peak-ewma", "round-robin", "least-request")
PROTOCOLS: Final = ("http", "http2", "tcp")
IDEMPOTENT: Final = ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")


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


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 10000
    """Per listener; a connection past this is closed at once (protects file descriptors)."""
    max_requests_in_flight: int = 10000
    """Per listener; past it requests get 503 + Retry-After instead of waiting in a queue."""
    max_header_bytes: int = 32768
    """Request line plus headers; 32 KiB is above what browsers send, as Envoy's 60 KiB is."""
    max_headers: int = 100
    """Envoy's default too."""
    max_body_bytes: int = 0
    """0: bodies stream through unlimited (the app decides); otherwise 413 above it."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    header: float = 10.0
    """Seconds from a request's first byte to its last header: what stops slowloris."""
    idle: float = 60.0
    """Seconds a keep-alive client connection may wait between requests."""
    connect: float = 1.0
    """Seconds to connect to an endpoint; in a cluster a longer wait is a dead pod."""
    request: float = 0.0
    """Seconds from a request to its response head over all tries; 0 is none, as Linkerd."""
    try_: float = 0.0
    """Seconds for one try to see its response head; 0 is none."""


@dataclass(frozen=True, slots=True)
class Retries:
    methods: tuple[str, ...] = IDEMPOTENT
    """Methods retried after the request reached an endpoint (RFC 9110's idempotent ones)."""
    on_status: tuple[int, ...] = (502, 503, 504)
    attempts: int = 3
    budget_ratio: float = 0.2
    """Linkerd's default: retries add at most 20 % to the load."""
    budget_floor: float = 10.0
    """Retries a second allowed whatever the traffic, so that a quiet service can retry."""
    budget_window: float = 10.0


@dataclass(frozen=True, slots=True)
class Outlier:
    consecutive_failures: int = 5
    """Envoy's consecutive_5xx default."""
    base_ejection: float = 10.0
    max_ejection: float = 300.0
    max_ejected_percent: int = 50
    """At most this share of a service's endpoints is ejected (at least one may be)."""


@dataclass(frozen=True, slots=True)
class Pool:
    max_connections_per_endpoint: int = 1000
    max_idle_per_endpoint: int = 256
    idle_timeout: float = 60.0
    """Seconds an unused pooled connection is kept; below typical app keep-alive timeouts."""


@dataclass(frozen=True, slots=True)
class Drain:
    delay: float = 0.0
    """Seconds between SIGTERM (readiness false) and closing the listeners."""
    grace: float = 25.0
    """Seconds in-flight requests get after that; inside Kubernetes' default 30 s."""


@dataclass(frozen=True, slots=True)
class Settings:
    admin: tuple[str, int] = ("0.0.0.0", 15190)
    inbound: Inbound | None = None
    upstreams: tuple[Upstream, ...] = ()
    http_proxy: tuple[str, int] | None = None
    """Where the app's ``HTTP_PROXY`` points; requests are routed by the authority they name."""
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: Retries = field(default_factory=Retries)
    outlier: Outlier = field(default_factory=Outlier)
    pool: Pool = field(default_factory=Pool)
    drain: Drain = field(default_factory=Drain)
    access_log: bool = False
    dns_server: tuple[str, int] | None = None
    """The DNS server to ask; None: those of ``/etc/resolv.conf``, with its search list."""
    zone: str | None = None
    """The zone this proxy runs in; with it, EndpointSlice ``hints.forZones`` are honoured as
    kube-proxy honours them (topology-aware routing)."""
    identity: tlsconfig.Identity | None = None
    """This workload's certificate for mTLS (``tlsconfig``)."""
    more_inbound: tuple[Inbound, ...] = ()
    """Further inbound ports (``inbound:`` given as a list), each with its app port and its
    own ``mtls`` mode or ``tls``, as Istio's port-level PeerAuthentication."""
    policy: str | None = None
    """A policy file (``policies``) for the inbound listener; None: every request goes on."""
    routes: tuple[httproutes.HTTPRoute, ...] = ()
    transparent: tuple[str, int] | None = None
    """The port iptables redirects the app's outbound TCP to (``intercepting``); read at
    start."""
    kubernetes_routes: str | None = None
    """A namespace whose HTTPRoutes are followed through the API server (``routewatch``);
    read at start (a reload does not change it)."""
    """Gateway API HTTPRoutes attached to upstreams (``httproutes``); their backends are
    upstreams too, which need no ``listen`` of their own."""


def parse_kubernetes(value: Any, where: str) -> tuple[str, str, str]:
    """``SERVICE.NAMESPACE:PORT`` (a ``.svc.cluster.local`` suffix allowed) as its parts."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    parts = host.split(".")
    if len(parts) > 2 and parts[2] == "svc":
        parts = parts[:2]
    ok = (
        sep
        and port
        and len(parts) == 2
        and all(p and all(c.isalnum() or c == "-" for c in p) for p in parts)
        and all(c.isalnum() or c == "-" for c in port)
    )
    if not ok:
        raise ValueError(
            f"{where}: {value!r} is not a Service; write SERVICE.NAMESPACE:PORT with the "
            "Service's port number or name, e.g. payments.shop:8080 or payments.shop:http"
        )
    return parts[0], parts[1], port


def parse_address(value: Any, where: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or a bare port number."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535 or (host and any(c in host for c in " /")):
        raise ValueError(
            f"{where}: {value!r} is not an address; write HOST:PORT such as 127.0.0.1:8080"
        )
    return host or default_host, port


def _seconds(value: Any, where: str) -> float:
    return durations.setting(value, where)


def _whole(value: Any, where: str, *, low: int = 0) -> int:
    if isinstance(value, bool):
        value = "x"
    try:
        number = int(str(value).replace("_", ""))
    except ValueError:
        number = low - 1
    if number < low:
        raise ValueError(f"{where}: must be a whole number of at least {low}, not {value!r}")
    return number


def _ratio(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number < 0 or isinstance(value, bool):
        raise ValueError(f"{where}: must be a number of at least 0, not {value!r}")
    return number


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys, not {type(value).__name__}")
    return value


def _known(data: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise ValueError(
                f"{where}.{key}: unknown key; the keys here are {', '.join(allowed)}"
                if where
                else f"{key}: unknown key; the top-level keys are {', '.join(allowed)}"
            )


def _list(value: Any, where: str) -> list[Any]:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: expected a list, not {type(value).__name__}")
    return list(value)


def _section(
    cls: Any, base: Any, data: Mapping[str, Any], where: str, kinds: dict[str, Any]
) -> Any:
    names = tuple(f.name.rstrip("_") for f in fields(cls))
    _known(data, where, names)
    changes = {}
    for key, value in data.items():
        attr = key + "_" if key == "try" else key
        changes[attr] = kinds[key](value, f"{where}.{key}")
    return replace(base, **changes)


def _methods(value: Any, where: str) -> tuple[str, ...]:
    out = []
    for item in _list(value, where):
        method = str(item).strip().upper()
        if not method.isalpha():
            raise ValueError(f"{where}: {item!r} is not an HTTP method such as GET")
        out.append(method)
    return tuple(out)


def _statuses(value: Any, where: str) -> tuple[int, ...]:
    out = []
    for item in _list(value, where):
        code = _whole(item, where, low=100)
        if code > 599:
            raise ValueError(f"{where}: {item!r} is not an HTTP status code (100-599)")
        out.append(code)
    return tuple(out)


def _upstream(data: Any, where: str) -> Upstream:
    data = _mapping(data, where)
    allowed = (
        "name", "listen", "endpoints", "file", "dns", "kubernetes", "balancer", "host", "hosts",
        "protocol", "mtls", "peer", "addresses",
    )  # fmt: skip
    _known(data, where, allowed)
    name = str(data.get("name", "")).strip()
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"{where}.name: give each upstream a name of letters, digits, -_. ")
    listen = None
    if data.get("listen") not in (None, "", "-"):
        listen = parse_address(data["listen"], f"{where}.listen", default_host="127.0.0.1")
    endpoints = tuple(
        parse_address(e, f"{where}.endpoints[{i}]", default_host="127.0.0.1")
        for i, e in enumerate(_list(data.get("endpoints", []), f"{where}.endpoints"))
    )
    file = data.get("file")
    dns = None
    if data.get("dns"):
        text = str(data["dns"]).strip()
        if text.startswith("_") and ":" not in text:
            dns = (text, 0)  # SRV records carry the ports
        else:
            dns = parse_address(data["dns"], f"{where}.dns", default_host="")
        if not dns[0] or (dns[1] == 0 and not dns[0].startswith("_")):
            raise ValueError(
                f"{where}.dns: give NAME:PORT for A/AAAA records, e.g. payments.shop.svc:8080, "
                "or an SRV name without a port, e.g. _http._tcp.payments.shop.svc"
            )
    kubernetes = None
    if data.get("kubernetes"):
        kubernetes = parse_kubernetes(data["kubernetes"], f"{where}.kubernetes")
    addresses = tuple(
        parse_address(e, f"{where}.addresses[{i}]", default_host="")
        for i, e in enumerate(_list(data.get("addresses", []), f"{where}.addresses"))
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
    hosts = tuple(str(h).strip() for h in _list(data.get("hosts", []), f"{where}.hosts"))
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
        mtls=_bool(data.get("mtls", False), f"{where}.mtls"),
        peer=tlsconfig.peer_id(data["peer"], f"{where}.peer") if data.get("peer") else None,
        addresses=addresses,
    )


_LIMITS = {
    "max_connections": lambda v, w: _whole(v, w, low=1),
    "max_requests_in_flight": lambda v, w: _whole(v, w, low=1),
    "max_header_bytes": lambda v, w: _whole(v, w, low=1024),
    "max_headers": lambda v, w: _whole(v, w, low=1),
    "max_body_bytes": _whole,
}
_TIMEOUTS = dict.fromkeys(("header", "idle", "connect", "request", "try"), _seconds)
_RETRIES = {
    "methods": _methods,
    "on_status": _statuses,
    "attempts": lambda v, w: _whole(v, w, low=1),
    "budget_ratio": _ratio,
    "budget_floor": _ratio,
    "budget_window": _seconds,
}
_OUTLIER = {
    "consecutive_failures": lambda v, w: _whole(v, w, low=1),
    "base_ejection": _seconds,
    "max_ejection": _seconds,
    "max_ejected_percent": _whole,
}
_POOL = {
    "max_connections_per_endpoint": lambda v, w: _whole(v, w, low=1),
    "max_idle_per_endpoint": _whole,
    "idle_timeout": _seconds,
}
_DRAIN = {"delay": _seconds, "grace": _seconds}
_TOP = (
    "admin", "inbound", "upstreams", "http_proxy", "limits", "timeouts", "retries", "outlier",
    "pool", "drain", "access_log", "zone", "dns_server", "identity", "policy", "routes",
    "kubernetes_routes", "transparent",
)  # fmt: skip


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{where}: {value!r} is not true or false")


def _inbound(data: Any, where: str, inbound: Inbound) -> Inbound:
    section = _mapping(data, where)
    _known(section, where, ("listen", "app", "mtls", "tls", "protocol"))
    if "listen" in section:
        inbound = replace(inbound, listen=parse_address(section["listen"], f"{where}.listen"))
    if "app" in section:
        app = parse_address(section["app"], f"{where}.app", default_host="127.0.0.1")
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


def from_mapping(
    data: Mapping[str, Any], *, source: str, base: Settings | None = None, final: bool = True
) -> Settings:
    """Settings from YAML-shaped data over ``base``; ValueError names ``source`` and the key.
    ``final=False`` leaves the checks across keys to a later layer (flags over a file)."""
    settings = base or Settings()
    try:
        _known(data, "", _TOP)
        changes: dict[str, Any] = {}
        if "admin" in data:
            changes["admin"] = parse_address(data["admin"], "admin")
        if "inbound" in data and data["inbound"] is not None:
            given = data["inbound"]
            if isinstance(given, list | tuple):  # several ports, each with its own app port
                if not given:
                    raise ValueError("inbound: an empty list; give a mapping or leave it out")
                more = [_inbound(e, f"inbound[{i}]", Inbound()) for i, e in enumerate(given)]
                changes["inbound"] = _inbound(given[0], "inbound[0]", settings.inbound or Inbound())
                changes["more_inbound"] = tuple(more[1:])
            else:
                changes["inbound"] = _inbound(given, "inbound", settings.inbound or Inbound())
        if "upstreams" in data:
            items = _list(data["upstreams"], "upstreams") if data["upstreams"] else []
            ups = tuple(_upstream(u, f"upstreams[{i}]") for i, u in enumerate(items))
            changes["upstreams"] = settings.upstreams + ups
        for key, cls, kinds in (
            ("limits", Limits, _LIMITS),
            ("timeouts", Timeouts, _TIMEOUTS),
            ("retries", Retries, _RETRIES),
            ("outlier", Outlier, _OUTLIER),
            ("pool", Pool, _POOL),
            ("drain", Drain, _DRAIN),
        ):
            if key in data:
                section = _mapping(data[key], key)
                changes[key] = _section(cls, getattr(settings, key), section, key, kinds)
        if data.get("http_proxy"):
            changes["http_proxy"] = parse_address(
                data["http_proxy"], "http_proxy", default_host="127.0.0.1"
            )
        if "access_log" in data:
            changes["access_log"] = _bool(data["access_log"], "access_log")
        if data.get("dns_server"):
            changes["dns_server"] = parse_address(
                data["dns_server"], "dns_server", default_host="127.0.0.1"
            )
        if data.get("zone"):
            changes["zone"] = str(data["zone"]).strip()
        if data.get("identity"):
            changes["identity"] = tlsconfig.identity_from(data["identity"])
        if data.get("policy"):
            changes["policy"] = str(data["policy"])
        if data.get("transparent"):
            changes["transparent"] = parse_address(data["transparent"], "transparent")
        if data.get("kubernetes_routes"):
            namespace = str(data["kubernetes_routes"]).strip()
            if not all(c.isalnum() or c == "-" for c in namespace) or len(namespace) > 63:
                raise ValueError(
                    f"kubernetes_routes: {namespace!r} is not a namespace name; write the "
                    "namespace whose HTTPRoutes the proxy follows, e.g. shop"
                )
            changes["kubernetes_routes"] = namespace
        if "routes" in data:
            items = _list(data["routes"], "routes") if data["routes"] else []
            changes["routes"] = tuple(
                httproutes.from_mapping(r, f"routes[{i}]", index=i) for i, r in enumerate(items)
            )
        result = replace(settings, **changes)
        if final:
            _check(result)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    return result


def _check(settings: Settings) -> None:
    seen: dict[tuple[str, int], str] = {}
    listeners = [("inbound.listen", settings.inbound.listen)] if settings.inbound else []
    listeners += [
        (f"inbound[{i}].listen", b.listen) for i, b in enumerate(settings.more_inbound, 1)
    ]
    listeners += [(f"upstreams[{u.name}].listen", u.listen) for u in settings.upstreams if u.listen]
    if settings.http_proxy:
        listeners.append(("http_proxy", settings.http_proxy))
    if settings.transparent:
        listeners.append(("transparent", settings.transparent))
    listeners.append(("admin", settings.admin))
    names = set()
    for up in settings.upstreams:
        # with routes, an upstream may be a backend (now, or after the next canary step); or
        # it is reached through transparent mode
        routed = bool(settings.routes or settings.kubernetes_routes or up.addresses)
        if up.addresses and settings.transparent is None:
            raise ValueError(
                f"upstreams[{up.name}].addresses: only used in transparent mode; set "
                "transparent: to the port proxy-init redirects to (e.g. 0.0.0.0:15001)"
            )
        if up.listen is None and settings.http_proxy is None and not routed:
            raise ValueError(
                f"upstreams[{up.name}].listen: missing; give the local port the app calls "
                "(e.g. 15001), or set http_proxy to reach it by name"
            )
        if up.name in names:
            raise ValueError(f"upstreams[{up.name}]: the name is used twice; give each its own")
        names.add(up.name)
    address: tuple[str, int] | None
    for where, address in listeners:
        if address is None:
            continue
        if address[1] and address in seen:
            raise ValueError(
                f"{where}: {address[0]}:{address[1]} is also {seen[address]}; "
                "give each its own port"
            )
        seen[address] = where
    for index, inbound in enumerate((settings.inbound, *settings.more_inbound)):
        tlsconfig.check(
            identity=settings.identity,
            inbound=(inbound.mtls, inbound.tls) if inbound else None,
            upstreams=[(u.name, u.mtls) for u in settings.upstreams],
            where=f"inbound[{index}]" if settings.more_inbound else "inbound",
        )
    _check_routes(settings)
    for index, inbound in enumerate((settings.inbound, *settings.more_inbound)):
        if inbound is None or inbound.protocol != "http2":
            if inbound is not None and inbound.tls is not None and "h2" in inbound.tls.alpn:
                raise ValueError(
                    f"inbound[{index}].tls.alpn: h2 needs protocol: http2 on this port "
                    "(an app that speaks HTTP/2); drop h2 from alpn or set the protocol"
                )
            continue
        if settings.policy:
            raise ValueError(
                f"policy: not enforced on HTTP/2 ports yet, and inbound[{index}] has "
                "protocol: http2; drop the policy or serve that port as http"
            )
    if settings.outlier.max_ejected_percent > 100:
        raise ValueError("outlier.max_ejected_percent: must be between 0 and 100")


def _check_routes(settings: Settings) -> None:
    http = {u.name for u in settings.upstreams if u.protocol == "http"}
    for i, route in enumerate(settings.routes):
        for name in route.parents:
            if name not in http:
                raise ValueError(
                    f"routes[{i}].spec.parentRefs: {name!r} is not an http upstream; add it to "
                    "upstreams: or attach the route to one of "
                    + (", ".join(sorted(http)) or "none")
                )
        for r, rule in enumerate(route.rules):
            for b, backend in enumerate(rule.backends):
                if backend.name not in http:
                    raise ValueError(
                        f"routes[{i}].spec.rules[{r}].backendRefs[{b}]: {backend.name!r} is not "
                        "an http upstream; add it to upstreams: (listen: is not needed)"
                    )


def to_mapping(settings: Settings) -> dict[str, Any]:
    """The effective settings as YAML-shaped data, what ``--dry-run`` prints."""

    def address(value: tuple[str, int]) -> str:
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    out: dict[str, Any] = {"admin": address(settings.admin)}
    ports = []
    for inbound in (settings.inbound, *settings.more_inbound) if settings.inbound else ():
        port: dict[str, Any] = {
            "listen": address(inbound.listen),
            "app": address(inbound.app),
            "mtls": inbound.mtls,
            "protocol": inbound.protocol,
        }
        if inbound.tls is not None:
            port["tls"] = tlsconfig.termination_mapping(inbound.tls)
        if inbound.protocol != "http":
            port["protocol"] = inbound.protocol
        ports.append(port)
    if ports:
        out["inbound"] = ports if len(ports) > 1 else ports[0]
    out["upstreams"] = [
        {
            "name": u.name,
            **({"listen": address(u.listen)} if u.listen else {}),
            **({"endpoints": [address(e) for e in u.endpoints]} if u.endpoints else {}),
            **({"file": u.file} if u.file else {}),
            **({"dns": address(u.dns) if u.dns[1] else u.dns[0]} if u.dns else {}),
            **({"kubernetes": "{}.{}:{}".format(*u.kubernetes)} if u.kubernetes else {}),
            "balancer": u.balancer,
            "protocol": u.protocol,
            **({"host": u.host} if u.host else {}),
            **({"hosts": list(u.hosts)} if u.hosts else {}),
            **({"mtls": True} if u.mtls else {}),
            **({"peer": u.peer} if u.peer else {}),
            **({"addresses": [address(a) for a in u.addresses]} if u.addresses else {}),
        }
        for u in settings.upstreams
    ]
    if settings.http_proxy:
        out["http_proxy"] = address(settings.http_proxy)
    for key in ("limits", "timeouts", "retries", "outlier", "pool", "drain"):
        section = asdict(getattr(settings, key))
        out[key] = {
            k.rstrip("_"): list(v) if isinstance(v, tuple) else v for k, v in section.items()
        }
    out["access_log"] = settings.access_log
    if settings.zone:
        out["zone"] = settings.zone
    if settings.dns_server:
        out["dns_server"] = address(settings.dns_server)
    if settings.identity is not None:
        out["identity"] = tlsconfig.identity_mapping(settings.identity)
    if settings.policy:
        out["policy"] = settings.policy
    if settings.transparent:
        out["transparent"] = address(settings.transparent)
    if settings.kubernetes_routes:
        out["kubernetes_routes"] = settings.kubernetes_routes
    if settings.routes:
        out["routes"] = [httproutes.to_mapping(r) for r in settings.routes]
    return out
