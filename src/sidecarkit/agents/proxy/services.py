"""One service behind one listener: its endpoints, balancer, pools, retry budget and limits.

Inbound, the service is the app (one endpoint on loopback); outbound, each upstream is one.
Everything a request needs on its way is reached from here once per connection, so the
per-request path does attribute reads, not lookups by name.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sidecarkit.agents.proxy import balancing, budgets, pools, routing, telemetry
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["Service"]

log = logging.getLogger("sidecarkit.agent.proxy")


class Service:
    def __init__(
        self,
        name: str,
        *,
        direction: str,
        balancer: str,
        host: str | None,
        settings: proxy_settings.Settings,
        metrics: telemetry.Registry,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.direction = direction
        self.settings = settings
        self.limits = settings.limits
        self.timeouts = settings.timeouts
        self.retries = settings.retries
        self.retry_methods = frozenset(m.encode() for m in settings.retries.methods)
        self.retry_status = frozenset(settings.retries.on_status if direction == "outbound" else ())
        """Inbound, the one endpoint is the app itself: its 5xx is its answer, not a fault."""
        self.metrics = metrics
        self.loop = loop
        self.balancer = balancing.Balancer(balancer, settings.outlier)
        self.budget = budgets.RetryBudget(
            ratio=settings.retries.budget_ratio,
            floor=settings.retries.budget_floor,
            window=settings.retries.budget_window,
        )
        self.host = host.encode() if host else None
        self.forwarded = direction == "inbound"
        self.client_tcp = metrics.tcp_series(direction, name, "src")
        self.endpoint_tcp = metrics.tcp_series(direction, name, "dst")
        self.local = metrics.request_series(direction, name, "")
        """Requests the proxy answered itself (bad requests, load shed, no endpoint)."""
        self.connections: set[Any] = set()
        """Client connections (``forwarding.Downstream``) open now."""
        self.in_flight = 0
        self.draining = False
        self.access_log = sys.stdout if settings.access_log else None
        self.server: Any = None
        """What accepts its connections: an ``asyncio.Server`` or a ``securing.Acceptor``."""
        self.mesh: Any = None
        """Inbound with mTLS: the ``securing.Mesh`` that checks each client's identity."""
        self.tls: Any = None
        """Outbound with mTLS: (client context, check of the endpoint's identity)."""
        self.mesh_tls: Any = None
        """The same for endpoints discovery marks ``mtls`` (set whenever there is an identity)."""
        self.marks: dict[tuple[str, int], str] = {}
        """Endpoints marked ``mtls`` or ``plaintext`` by discovery (``discovery.MARKS``)."""
        self.tasks: set[asyncio.Task[None]] = set()
        """Connects under way (L4 mode), held so that they are not collected mid-way."""
        self.protocol = "http"
        """``tcp`` for an L4 relay (``relaying``), ``http2`` for HTTP/2 endpoints."""
        self.guard: Any = None
        """The policy's stages (``guarding.Guard``) on this listener; None: no policy."""
        self.gate: Any = None
        """A tcp inbound port's policy (``tcpguarding.Gate``); None: no policy."""
        self.terminator: Any = None
        """Inbound with ``tls``: the ``terminating.Terminator`` whose certificates it serves."""
        self.router: routing.Router[Service] | None = None
        """Set on the HTTP-proxy listener's service: requests go where their authority says."""
        self.routes: Any = None
        """The HTTPRoute rules attached to this service (``routetables.Table``); None: none."""

    def set_endpoints(
        self,
        addresses: Iterable[tuple[str, int]],
        weights: Mapping[tuple[str, int], float] | None = None,
    ) -> None:
        """Take a new endpoint set from discovery (with weights, from DNS SRV records); pools
        of endpoints that left are closed when idle (requests in flight on them finish)."""
        gone = self.balancer.update(addresses, weights)
        for endpoint in gone:
            if endpoint.pool is not None:
                endpoint.pool.close()
        for endpoint in self.balancer.endpoints:
            tls = self.tls_for(endpoint.address)
            if endpoint.pool is not None and endpoint.pool.tls is not tls:  # its mark changed
                endpoint.pool.close()
                endpoint.pool = None
            if endpoint.pool is None:
                kind: Any = pools.Pool
                if self.protocol == "http2":
                    from sidecarkit.agents.proxy import h2upstream  # noqa: PLC0415 - when used

                    kind = h2upstream.Pool
                endpoint.pool = kind(
                    endpoint,
                    loop=self.loop,
                    limit=self.settings.pool.max_connections_per_endpoint,
                    max_idle=self.settings.pool.max_idle_per_endpoint,
                    connect_timeout=self.timeouts.connect,
                    tcp=self.endpoint_tcp,
                    series=self.metrics.request_series(self.direction, self.name, endpoint.label),
                    tls=tls,
                )
        log.info(
            "%s %s: %d endpoint(s): %s",
            self.direction,
            self.name,
            len(self.balancer.endpoints),
            ", ".join(e.label for e in self.balancer.endpoints) or "none",
        )

    def tls_for(self, address: tuple[str, int]) -> Any:
        mark = self.marks.get(address)
        if mark == "plaintext":
            return None
        if mark == "mtls":
            if self.mesh_tls is None:
                log.warning(
                    "%s: %s is marked mtls, but this proxy has no identity: plaintext",
                    self.name, address,
                )  # fmt: skip
            return self.mesh_tls
        return self.tls

    def tick(self, now: float) -> None:
        """Once a second: time out idle and slow client connections, expire pooled ones."""
        self.budget.tick(time.monotonic())  # the balancer's and the budget's clock
        for conn in list(self.connections):
            deadline = conn.deadline
            if deadline and now >= deadline:
                conn.timed_out()
        older = now - self.settings.pool.idle_timeout
        for endpoint in self.balancer.endpoints:
            if endpoint.pool is not None:
                endpoint.pool.expire(older)

    def gauges(self, now: float) -> None:
        labels = {"direction": self.direction, "upstream": self.name}
        m = self.metrics
        m.set_gauge("endpoints", "Endpoints known.", labels, len(self.balancer.endpoints))
        m.set_gauge(
            "endpoints_ejected", "Endpoints ejected now.", labels, self.balancer.ejected(now)
        )
        m.set_gauge("requests_in_flight", "Requests in flight.", labels, self.in_flight)
        m.set_gauge(
            "retry_budget_denied", "Retries the budget refused (total).", labels, self.budget.denied
        )
        m.set_gauge(
            "ejections", "Ejections of endpoints (total).", labels, self.balancer.ejected_total
        )

    def configure(
        self, settings: proxy_settings.Settings, *, balancer: str, host: str | None
    ) -> None:
        """Take reloaded settings in place: connections open now keep their service object
        and see the new limits, timeouts, retries and balancer from their next request on;
        endpoint state (latency estimates, ejections, pools) is kept."""
        self.settings = settings
        self.limits = settings.limits
        self.timeouts = settings.timeouts
        if settings.retries != self.retries:
            self.budget = budgets.RetryBudget(
                ratio=settings.retries.budget_ratio,
                floor=settings.retries.budget_floor,
                window=settings.retries.budget_window,
            )
        self.retries = settings.retries
        self.retry_methods = frozenset(m.encode() for m in settings.retries.methods)
        if self.direction == "outbound":
            self.retry_status = frozenset(settings.retries.on_status)
        self.balancer.kind = balancer
        self.balancer.outlier = settings.outlier
        self.host = host.encode() if host else None
        self.access_log = sys.stdout if settings.access_log else None
        for endpoint in self.balancer.endpoints:
            if endpoint.pool is not None:
                endpoint.pool.limit = settings.pool.max_connections_per_endpoint
                endpoint.pool.max_idle = settings.pool.max_idle_per_endpoint
                endpoint.pool.connect_timeout = settings.timeouts.connect

    def drain(self) -> None:
        """Stop accepting; tell keep-alive clients to go; close the idle ones now."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.drain()
