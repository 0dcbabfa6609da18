"""Transparent mode: connections the app made to anywhere, redirected here by iptables.

``sidecarkit agent proxy-init`` (``interception``) makes the kernel send the app's outbound TCP
to the ``transparent:`` port. Each connection accepted there still knows where the app meant
to go: ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` gives the address REDIRECT replaced. That
address picks the upstream whose ``addresses:`` list it (a Service's ClusterIP and port, as
Istio keys its outbound listeners); the connection is then served as if it had come to that
upstream's own port (HTTP/1.1, or HTTP/2 for a ``protocol: http2`` upstream, with balancing,
retries, metrics and the outbound policy; or the L4 relay). A destination no upstream claims
passes through untouched to where the app sent it, as Istio's PassthroughCluster does
(``upstream="passthrough"`` in the metrics).

The choice is made in ``connection_made``, before any byte is read, by handing the transport
to the chosen protocol (``set_protocol``): nothing per request changes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

from sidecarkit.agents.proxy import forwarding, relaying, services, telemetry
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["Interceptor", "original_destination"]

log = logging.getLogger("sidecarkit.agent.proxy")

SO_ORIGINAL_DST: Final = 80
"""From ``linux/netfilter_ipv4.h``; Python's socket module does not name it."""
PASSTHROUGH_KEPT: Final = 1024
"""Pass-through destinations whose state is kept; past it, idle ones are forgotten."""


def original_destination(sock: Any) -> tuple[str, int] | None:
    """Where the connection was headed before REDIRECT; None when it was not redirected."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), int(port)


class Interceptor:
    """The ``transparent:`` listener and the pass-through services it makes."""

    def __init__(
        self,
        *,
        lookup: Callable[[tuple[str, int]], services.Service | None],
        settings: Callable[[], proxy_settings.Settings],
        metrics: telemetry.Registry,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.lookup = lookup
        self.settings = settings
        self.metrics = metrics
        self.loop = loop
        self.own: tuple[str, int] | None = None
        self.passthrough: dict[tuple[str, int], services.Service] = {}
        self.server: Any = None

    async def start(self, host: str, port: int) -> None:
        self.own = (host, port)
        self.server = await self.loop.create_server(
            lambda: _Intercepted(self), host, port, backlog=4096, reuse_address=True
        )
        log.info("transparent listener on %s:%d", host, port)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for service in self.passthrough.values():
            service.drain()

    def protocol_for(self, destination: tuple[str, int]) -> asyncio.Protocol | None:
        service = self.lookup(destination)
        if service is None:
            service = self._passthrough(destination)
        if service.protocol == "tcp":
            return relaying.Client(service)
        if service.protocol == "http2":  # the app speaks h2c to it, as to the upstream's port
            from sidecarkit.agents.proxy import h2serving  # noqa: PLC0415 - only when used

            return h2serving.Downstream(service)
        return forwarding.Downstream(service)

    def _passthrough(self, destination: tuple[str, int]) -> services.Service:
        service = self.passthrough.get(destination)
        if service is None:
            if len(self.passthrough) >= PASSTHROUGH_KEPT:
                for key, old in list(self.passthrough.items()):
                    if not old.connections:
                        del self.passthrough[key]
            service = services.Service(
                "passthrough", direction="outbound", balancer="round-robin", host=None,
                settings=self.settings(), metrics=self.metrics, loop=self.loop,
            )  # fmt: skip
            service.protocol = "tcp"
            service.set_endpoints([destination])
            self.passthrough[destination] = service
        return service


class _Intercepted(asyncio.Protocol):
    """Reads the original destination, then hands the connection on."""

    def __init__(self, interceptor: Interceptor) -> None:
        self.interceptor = interceptor

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: Any = transport
        destination = original_destination(transport.get_extra_info("socket"))
        if destination is None or destination == self.interceptor.own:
            # not redirected (someone dialled the port itself): nowhere to send it
            t.abort()
            return
        inner = self.interceptor.protocol_for(destination)
        if inner is None:
            t.abort()
            return
        t.set_protocol(inner)
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # only before set_protocol: never
        pass
