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

The simple sections (limits, timeouts, ...) are read here, by table; the ports (``inbound:``,
``upstreams:``) in ``portsettings``, single values in ``settingvalues``, and the checks across
keys in ``settingchecks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from sidecarkit.agents.proxy import (
    httproutes,
    portsettings,
    settingchecks,
    settingvalues,
    tlsconfig,
)
from sidecarkit.agents.proxy.portsettings import BALANCERS, Inbound, Upstream
from sidecarkit.agents.proxy.settingvalues import parse_address, parse_kubernetes

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

IDEMPOTENT: Final = ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")


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


_LIMITS = {
    "max_connections": lambda v, w: settingvalues.whole(v, w, low=1),
    "max_requests_in_flight": lambda v, w: settingvalues.whole(v, w, low=1),
    "max_header_bytes": lambda v, w: settingvalues.whole(v, w, low=1024),
    "max_headers": lambda v, w: settingvalues.whole(v, w, low=1),
    "max_body_bytes": settingvalues.whole,
}
_TIMEOUTS = dict.fromkeys(("header", "idle", "connect", "request", "try"), settingvalues.seconds)
_RETRIES = {
    "methods": settingvalues.methods,
    "on_status": settingvalues.statuses,
    "attempts": lambda v, w: settingvalues.whole(v, w, low=1),
    "budget_ratio": settingvalues.ratio,
    "budget_floor": settingvalues.ratio,
    "budget_window": settingvalues.seconds,
}
_OUTLIER = {
    "consecutive_failures": lambda v, w: settingvalues.whole(v, w, low=1),
    "base_ejection": settingvalues.seconds,
    "max_ejection": settingvalues.seconds,
    "max_ejected_percent": settingvalues.whole,
}
_POOL = {
    "max_connections_per_endpoint": lambda v, w: settingvalues.whole(v, w, low=1),
    "max_idle_per_endpoint": settingvalues.whole,
    "idle_timeout": settingvalues.seconds,
}
_DRAIN = {"delay": settingvalues.seconds, "grace": settingvalues.seconds}
_TOP = (
    "admin", "inbound", "upstreams", "http_proxy", "limits", "timeouts", "retries", "outlier",
    "pool", "drain", "access_log", "zone", "dns_server", "identity", "policy", "routes",
    "kubernetes_routes", "transparent",
)  # fmt: skip


def from_mapping(
    data: Mapping[str, Any], *, source: str, base: Settings | None = None, final: bool = True
) -> Settings:
    """Settings from YAML-shaped data over ``base``; ValueError names ``source`` and the key.
    ``final=False`` leaves the checks across keys to a later layer (flags over a file)."""
    settings = base or Settings()
    try:
        settingvalues.known(data, "", _TOP)
        changes: dict[str, Any] = {}
        if "admin" in data:
            changes["admin"] = parse_address(data["admin"], "admin")
        if "inbound" in data and data["inbound"] is not None:
            given = data["inbound"]
            if isinstance(given, list | tuple):  # several ports, each with its own app port
                if not given:
                    raise ValueError("inbound: an empty list; give a mapping or leave it out")
                more = [
                    portsettings.inbound_from(e, f"inbound[{i}]", Inbound())
                    for i, e in enumerate(given)
                ]
                changes["inbound"] = portsettings.inbound_from(
                    given[0], "inbound[0]", settings.inbound or Inbound()
                )
                changes["more_inbound"] = tuple(more[1:])
            else:
                changes["inbound"] = portsettings.inbound_from(
                    given, "inbound", settings.inbound or Inbound()
                )
        if "upstreams" in data:
            items = (
                settingvalues.listed(data["upstreams"], "upstreams") if data["upstreams"] else []
            )
            ups = tuple(
                portsettings.upstream_from(u, f"upstreams[{i}]") for i, u in enumerate(items)
            )
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
                section = settingvalues.mapping(data[key], key)
                changes[key] = settingvalues.section(
                    cls, getattr(settings, key), section, key, kinds
                )
        if data.get("http_proxy"):
            changes["http_proxy"] = parse_address(
                data["http_proxy"], "http_proxy", default_host="127.0.0.1"
            )
        if "access_log" in data:
            changes["access_log"] = settingvalues.boolean(data["access_log"], "access_log")
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
            items = settingvalues.listed(data["routes"], "routes") if data["routes"] else []
            changes["routes"] = tuple(
                httproutes.from_mapping(r, f"routes[{i}]", index=i) for i, r in enumerate(items)
            )
        result = replace(settings, **changes)
        if final:
            settingchecks.check(result)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    return result


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
