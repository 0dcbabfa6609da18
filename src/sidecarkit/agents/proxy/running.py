"""``sidecarkit agent proxy``: the listeners, the admin endpoint, discovery and the drain.

Start-up order: services and their endpoints, then the listeners, then the admin endpoint,
then ``/ready`` turns true. Shutdown order (SIGTERM or SIGINT), written down because a pod's
requests depend on it:

1. ``/ready`` answers 503, so the endpoint leaves the Service while the proxy still serves;
2. after ``drain.delay`` the listeners close (no new connection is accepted), idle keep-alive
   connections are closed and every further response says ``Connection: close``;
3. requests in flight get until ``drain.grace`` to finish; then what is left is cut, and the
   log says how many;
4. the admin endpoint closes and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING

from sidecarkit.agents.proxy import (
    admin,
    discovery,
    forwarding,
    relaying,
    routing,
    services,
    telemetry,
)
from sidecarkit.agents.proxy import settings as proxy_settings

if TYPE_CHECKING:  # TLS (and cryptography, ~12 MB) is loaded only by a proxy that uses it
    from sidecarkit.agents.proxy import (
        guarding,
        keysources,
        policies,
        reloading,
        securing,
        terminating,
    )

__all__ = ["Agent"]

log = logging.getLogger("sidecarkit.agent.proxy")

TICK = 1.0
"""Seconds between timeout sweeps and endpoint-file polls."""


class Agent:
    def __init__(
        self, settings: proxy_settings.Settings, *, policy: policies.Policy | None = None
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.sources: keysources.Sources | None = None
        self.policy_file: reloading.PolicyFile | None = None
        self.guards: list[guarding.Guard] = []
        if policy is not None:  # JWT and crypto libraries cost ~12 MB: loaded only for a policy
            from sidecarkit.agents.proxy import keysources, reloading  # noqa: PLC0415

            self.sources = keysources.Sources(policy)
            if settings.policy:
                self.policy_file = reloading.PolicyFile(settings.policy, policy)
        self.stopping = asyncio.Event()
        self.ready = False
        self.metrics = telemetry.Registry()
        self.services: list[services.Service] = []
        self.files: list[tuple[services.Service, discovery.FileSource]] = []
        self.names: list[tuple[services.Service, discovery.DnsSource]] = []
        self.resolving: set[asyncio.Task[None]] = set()
        self.mesh: securing.Mesh | None = None
        self.terminators: list[terminating.Terminator] = []
        self.inbound_of: dict[services.Service, proxy_settings.Inbound] = {}

    def stop(self) -> None:
        """Begin the drain (a signal handler: it only sets a flag)."""
        self.stopping.set()

    def _routes(self) -> dict[str, admin.Route]:
        def healthz() -> tuple[int, bytes, bytes]:
            return 200, b"text/plain", b"ok\n"

        def ready() -> tuple[int, bytes, bytes]:
            if self.ready:
                return 200, b"text/plain", b"ready\n"
            return 503, b"text/plain", b"draining\n" if self.stopping.is_set() else b"starting\n"

        def metrics() -> tuple[int, bytes, bytes]:
            now = time.monotonic()  # the balancer's clock
            for service in self.services:
                service.gauges(now)
            if self.mesh is not None:
                self.mesh.gauges()
            sources: list[tuple[services.Service, discovery.FileSource | discovery.DnsSource]]
            sources = [*self.files, *self.names]
            for service, source in sources:
                self.metrics.add_counter(
                    "discovery_errors_total",
                    "Failed reads of an endpoints source; the last good endpoints are kept.",
                    {"upstream": service.name, "source": source.path},
                    source.errors - source.reported,
                )
                source.reported = source.errors
            for guard in self.guards:
                guard.export(self.metrics)
            if self.sources is not None:
                self.metrics.add_counter(
                    "policy_key_errors_total",
                    "Failed reads or fetches of the policy's keys; the last good keys are kept.",
                    {},
                    self.sources.errors - self.sources.reported,
                )
                self.sources.reported = self.sources.errors
            if self.policy_file is not None:
                reloads, failed = self.policy_file.reloads, self.policy_file.errors
                done, bad = self.policy_file.reported
                for result, amount in (("ok", reloads - done), ("error", failed - bad)):
                    self.metrics.add_counter(
                        "policy_reloads_total",
                        "Changes of the policy file applied (ok) or refused (error).",
                        {"result": result},
                        amount,
                    )
                self.policy_file.reported = (reloads, failed)
            return 200, b"text/plain; version=0.0.4; charset=utf-8", self.metrics.render()

        return {"/healthz": healthz, "/ready": ready, "/metrics": metrics}

    def _guard(self, service: services.Service) -> None:
        """Put the policy's stages on an inbound listener (every one shares the key sets)."""
        if self.policy is None or self.sources is None:
            return
        from sidecarkit.agents.proxy import guarding  # noqa: PLC0415 - only with a policy

        guard = guarding.Guard(
            self.policy, authenticator=self.sources.authenticator,
            direction=service.direction, upstream=service.name,
        )  # fmt: skip
        guard.fetch = self.sources.want
        self.sources.listeners.append(guard.keys_arrived)
        service.guard = guard
        self.guards.append(guard)

    def _build(
        self, loop: asyncio.AbstractEventLoop
    ) -> list[tuple[services.Service, tuple[str, int]]]:
        """Every service, and the listeners to open: (service, address)."""
        s = self.settings
        listeners = []
        for index, inbound in enumerate((s.inbound, *s.more_inbound) if s.inbound else ()):
            service = services.Service(
                f"app-{inbound.listen[1]}" if index else "app", direction="inbound",
                balancer="round-robin", host=None, settings=s, metrics=self.metrics, loop=loop,
            )  # fmt: skip
            if inbound.mtls != "off":
                service.mesh = self.mesh
            service.set_endpoints([inbound.app])
            self._guard(service)
            self.services.append(service)
            self.inbound_of[service] = inbound
            listeners.append((service, inbound.listen))
        names: dict[str, services.Service] = {}
        for up in s.upstreams:
            service = services.Service(
                up.name, direction="outbound", balancer=up.balancer, host=up.host,
                settings=s, metrics=self.metrics, loop=loop,
            )  # fmt: skip
            service.protocol = up.protocol
            if self.mesh is not None:
                service.mesh_tls = self.mesh.outbound(up.peer)
                if up.mtls:
                    service.tls = service.mesh_tls
            endpoints = list(up.endpoints)
            if up.file:
                source = discovery.FileSource(up.file)
                endpoints += source.poll() or []
                service.marks = source.marks
                self.files.append((service, source))
            if up.dns:
                self.names.append((service, discovery.DnsSource(*up.dns)))
            service.set_endpoints(endpoints)
            self.services.append(service)
            if up.listen is not None:
                listeners.append((service, up.listen))
            for name in (up.name, *up.hosts) if up.protocol == "http" else ():
                names.setdefault(name, service)
        if s.http_proxy is not None:
            front = services.Service(
                "http-proxy", direction="outbound", balancer="round-robin", host=None,
                settings=s, metrics=self.metrics, loop=loop,
            )  # fmt: skip
            front.router = routing.Router(names)
            self.services.append(front)
            listeners.append((front, s.http_proxy))
        return listeners

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        if s.identity is not None:  # the certificate comes before any listener
            from sidecarkit.agents.proxy import securing  # noqa: PLC0415

            self.mesh = securing.Mesh(s.identity, self.metrics)
            await self.mesh.start(loop)
        for service, (host, port) in self._build(loop):
            kind = relaying.Client if service.protocol == "tcp" else forwarding.Downstream
            factory = functools.partial(kind, service)
            inbound = self.inbound_of.get(service)
            if inbound is not None and self.mesh is not None and inbound.mtls != "off":
                from sidecarkit.agents.proxy import securing  # noqa: PLC0415

                acceptor = securing.Acceptor(
                    loop, factory, mesh=self.mesh, mode=inbound.mtls,
                    handshake_timeout=s.timeouts.header,
                )  # fmt: skip
                await acceptor.start(host, port)
                service.server = acceptor
            else:
                tls = None
                if inbound is not None and inbound.tls is not None:
                    from sidecarkit.agents.proxy import terminating  # noqa: PLC0415

                    terminator = terminating.Terminator(inbound.tls)
                    self.terminators.append(terminator)
                    tls = terminator.context
                service.server = await loop.create_server(
                    factory, host, port, backlog=4096, reuse_address=True, ssl=tls,
                    ssl_handshake_timeout=s.timeouts.header if tls else None,
                )  # fmt: skip
            log.info("%s %s listening on %s:%d", service.direction, service.name, host, port)
        for service, name in self.names:  # the first answer before /ready says yes
            with contextlib.suppress(asyncio.TimeoutError):  # a hung resolver must not stall us
                await asyncio.wait_for(self._resolve(service, name), 2.0)
            name.due = loop.time() + discovery.DNS_INTERVAL
        if self.sources is not None:
            await self.sources.start()
        admin_server = await admin.serve(s.admin[0], s.admin[1], self._routes())
        log.info("admin endpoint on %s:%d", *s.admin)
        self.ready = True
        ticker = loop.create_task(self._tick(loop), name="proxy ticker")
        await self.stopping.wait()
        self.ready = False
        await self._drain(loop)
        ticker.cancel()
        if self.sources is not None:
            await self.sources.close()
        admin_server.close()

    async def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            for service in self.services:
                service.tick(now)
            if self.mesh is not None:
                self.mesh.tick(loop)
            for terminator in self.terminators:
                terminator.tick()
            if self.policy_file is not None and (new := self.policy_file.poll()) is not None:
                for guard in self.guards:
                    guard.take(new)
            if self.sources is not None:
                self.sources.tick(loop)
                for guard in self.guards:
                    guard.tick(time.monotonic())
            for service, source in self.files:
                endpoints = source.poll()
                if endpoints is not None:
                    service.marks = source.marks
                    service.set_endpoints(endpoints)
            for service, name in self.names:
                if now >= name.due:
                    name.due = now + discovery.DNS_INTERVAL
                    task = loop.create_task(self._resolve(service, name), name=name.path)
                    self.resolving.add(task)
                    task.add_done_callback(self.resolving.discard)

    async def _resolve(self, service: services.Service, name: discovery.DnsSource) -> None:
        endpoints = await name.resolve()
        if endpoints is not None:
            service.set_endpoints(endpoints)

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        drain = self.settings.drain
        log.info("draining: not ready; closing listeners in %.1fs", drain.delay)
        if drain.delay:
            await asyncio.sleep(drain.delay)
        for service in self.services:
            service.drain()
        deadline = loop.time() + drain.grace
        while loop.time() < deadline and any(svc.connections for svc in self.services):
            await asyncio.sleep(0.05)
            now = loop.time()
            for service in self.services:
                service.tick(now)  # closes connections idle since the drain began
        left = sum(svc.in_flight for svc in self.services)
        cut = sum(len(svc.connections) for svc in self.services)
        for service in self.services:
            for conn in list(service.connections):
                conn.t.abort()
            for endpoint in service.balancer.endpoints:
                if endpoint.pool is not None:
                    endpoint.pool.close()
        if cut:
            log.warning(
                "drain grace over: cut %d connection(s), %d request(s) in flight", cut, left
            )
        else:
            log.info("drained: every connection finished")
