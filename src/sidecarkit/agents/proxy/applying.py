"""Moving the running proxy from one settings to the next; start-up is the move from nothing.

``reloading.plan`` says which listeners are added, kept, moved to another port, retired or
given new endpoint sources; ``apply`` carries that out on a ``running.Agent``: it builds the new
services (TLS, policy stages), opens every new port before it changes anything running, so
that a port that cannot be opened leaves the running settings whole, then retires, moves and
reconfigures, starts endpoint discovery, and rebuilds the routes and the HTTP-proxy names.
The agent's lifecycle (start-up order, signals, ticks) stays in ``running``; the drain is in
``draining``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from sidecarkit.agents.proxy import (
    discovery,
    forwarding,
    relaying,
    reloading,
    routetables,
    routing,
)
from sidecarkit.agents.proxy import settings as proxy_settings
from sidecarkit.agents.proxy.services import Service

if TYPE_CHECKING:
    from sidecarkit.agents.proxy import running

__all__ = ["apply", "route"]

log = logging.getLogger("sidecarkit.agent.proxy")


def _service(
    agent: running.Agent,
    listener: reloading.Listener,
    settings: proxy_settings.Settings,
    loop: asyncio.AbstractEventLoop,
) -> Service:
    up, inbound = listener.upstream, listener.inbound
    if inbound is not None:
        name = "app" if listener.key == "inbound" else f"app-{inbound.listen[1]}"
        direction, balancer, host = "inbound", "round-robin", None
    elif up is None:
        name, direction, balancer, host = "http-proxy", "outbound", "round-robin", None
    else:
        name, direction, balancer, host = up.name, "outbound", up.balancer, up.host
    service = Service(
        name, direction=direction, balancer=balancer, host=host,
        settings=settings, metrics=agent.metrics, loop=loop,
    )  # fmt: skip
    kind = inbound.protocol if inbound is not None else listener.protocol
    service.protocol = kind if kind in ("tcp", "http2") else "http"
    _secure(agent, service, listener)
    if service.protocol != "tcp":
        _guard(agent, service)
    _gate(agent, service, listener)
    return service


def _secure(agent: running.Agent, service: Service, listener: reloading.Listener) -> None:
    """mTLS toward upstreams (and their expected peer), the mesh on an mTLS inbound port."""
    inbound, up = listener.inbound, listener.upstream
    if inbound is not None and inbound.mtls != "off":
        service.mesh = agent.mesh
    if up is not None and agent.mesh is not None:
        service.mesh_tls = agent.mesh.outbound(up.peer)
        service.tls = service.mesh_tls if up.mtls else None


def _guard(agent: running.Agent, service: Service) -> None:
    """Put the policy's stages on an HTTP/1.1 or HTTP/2 listener: inbound ones share the key sets,
    outbound ones and the HTTP proxy take the policy's ``outbound:`` section."""
    if agent.policy is None or agent.sources is None:
        return
    from sidecarkit.agents.proxy import guarding, h2guarding  # noqa: PLC0415 - only with a policy

    kind = h2guarding.StreamGuard if service.protocol == "http2" else guarding.Guard
    guard = kind(
        agent.policy, authenticator=agent.sources.active,
        direction=service.direction, upstream=service.name,
    )  # fmt: skip
    if guard.direction == "inbound":
        guard.fetch = agent.sources.want
        agent.sources.listeners.append(guard.keys_arrived)
    service.guard = guard
    agent.guards.append(guard)


def _gate(agent: running.Agent, service: Service, listener: reloading.Listener) -> None:
    """An inbound port's view of the rules (those whose ``ports`` leave it out dropped): a
    tcp port gets a ``tcpguarding.Gate``, an HTTP port's guard takes the view. Called again
    for a listener a reload keeps or moves to another port."""
    inbound = listener.inbound
    if inbound is None or agent.policy is None:
        return
    from sidecarkit.agents.proxy import tcpguarding  # noqa: PLC0415 - only with a policy

    port = inbound.listen[1]
    if service.protocol == "tcp" and service.gate is None:
        service.gate = tcpguarding.Gate(agent.policy, port=port, upstream=service.name)
        agent.gates.append(service.gate)
    elif service.gate is not None and service.gate.port != port:
        service.gate.port = port
        service.gate.take(agent.policy)
    elif service.guard is not None and agent.scopes.get(service.guard) != port:
        agent.scopes[service.guard] = port
        view = agent.policy.on_port(port)
        if view is not agent.policy or service.guard.policy is not agent.policy:
            service.guard.take(view, service.guard.authenticator)


def _discover(agent: running.Agent, service: Service, listener: reloading.Listener) -> None:
    """Start ``service``'s endpoint sources (the ones it had are stopped first)."""
    _forget(agent, service)
    s = agent.settings
    if listener.inbound is not None:
        service.set_endpoints([listener.inbound.app])
    up = listener.upstream
    if up is None:
        return
    endpoints = list(up.endpoints)
    if up.file:
        source = discovery.FileSource(up.file)
        endpoints += source.poll() or []
        service.marks = source.marks
        agent.files.append((service, source))
    if up.dns:
        name = discovery.DnsSource(*up.dns, server=s.dns_server)
        agent.names.append((service, name))
        if agent.started:
            name.due = 0.0  # resolved at the next tick
    if up.kubernetes:
        from sidecarkit.agents.proxy import kubewatch  # noqa: PLC0415 - only when used

        watch = kubewatch.KubernetesSource(
            *up.kubernetes, zone=s.zone, publish=service.set_endpoints
        )
        agent.watches.append((service, watch))
        if agent.started:
            agent.watching[watch] = asyncio.get_running_loop().create_task(
                watch.run(), name=watch.path
            )
    service.set_endpoints(endpoints)


def _forget(agent: running.Agent, service: Service) -> None:
    agent.files = [(svc, f) for svc, f in agent.files if svc is not service]
    agent.names = [(svc, n) for svc, n in agent.names if svc is not service]
    for svc, watch in agent.watches:
        if svc is service:
            task = agent.watching.pop(watch, None)
            if task is not None:
                task.cancel()
    agent.watches = [(svc, w) for svc, w in agent.watches if svc is not service]


async def _listen(
    agent: running.Agent, service: Service, listener: reloading.Listener, address: tuple[str, int]
) -> Any:
    """The listener: plain, TLS-terminating, or an mTLS port (``securing.Acceptor``)."""
    loop = asyncio.get_running_loop()
    kind: Any = relaying.Client if service.protocol == "tcp" else forwarding.Downstream
    if service.protocol == "http2":
        from sidecarkit.agents.proxy import h2serving  # noqa: PLC0415 - only when used

        kind = h2serving.Downstream
    factory = functools.partial(kind, service)
    host, port = address
    inbound, header = listener.inbound, agent.settings.timeouts.header
    server: Any
    if inbound is not None and agent.mesh is not None and inbound.mtls != "off":
        from sidecarkit.agents.proxy import securing  # noqa: PLC0415

        server = securing.Acceptor(
            loop, factory, mesh=agent.mesh, mode=inbound.mtls, handshake_timeout=header,
            http=service.protocol == "http",
        )  # fmt: skip
        await server.start(host, port)
    else:
        tls = None
        if inbound is not None and inbound.tls is not None:
            from sidecarkit.agents.proxy import terminating  # noqa: PLC0415

            service.terminator = terminating.Terminator(inbound.tls)
            tls = service.terminator.context
        server = await loop.create_server(
            factory, host, port, backlog=4096, reuse_address=True, ssl=tls,
            ssl_handshake_timeout=header if tls else None,
        )  # fmt: skip
    log.info("%s %s listening on %s:%d", service.direction, service.name, host, port)
    return server


async def apply(agent: running.Agent, new: proxy_settings.Settings) -> None:
    """Make ``new`` the running settings; OSError (a port that cannot be opened) before
    anything running was changed."""
    loop = asyncio.get_running_loop()
    old = agent.settings
    change = reloading.plan(old, new)
    after = reloading.listeners(new)
    before = reloading.listeners(old)
    fresh = {key: _service(agent, after[key], new, loop) for key in change.add}
    opened: dict[str, Any] = {}
    ours = {before[key].address for key in (*change.retire, *change.move) if before[key].address}
    later = []
    try:
        for key in (*change.add, *change.move):
            address = after[key].address
            if address is None:
                continue
            if address in ours:  # a port this proxy gives up in the same reload
                later.append(key)
                continue
            service = fresh.get(key) or agent.keyed[key]
            opened[key] = await _listen(agent, service, after[key], address)
    except OSError:
        for server in opened.values():
            server.close()
        raise
    agent.settings = new
    for key in change.retire:
        _retire(agent, agent.keyed.pop(key))
    for key in change.move:
        service = agent.keyed[key]
        if service.server is not None:
            service.server.close()
        service.server = None
    for key, service in fresh.items():
        agent.keyed[key] = service
    for key in later:  # after the old listener on the port closed
        address = after[key].address
        assert address is not None  # only keys with an address are put in ``later``
        try:
            opened[key] = await _listen(agent, agent.keyed[key], after[key], address)
        except OSError as exc:  # the port was ours a moment ago: rare, and too late to undo
            log.error(
                "%s: cannot listen on %s:%d (%s); it has no listener until the next reload",
                key, *address, exc,
            )  # fmt: skip
    for key, server in opened.items():
        agent.keyed[key].server = server
    for key in (*change.keep, *change.move):
        up = after[key].upstream
        balancer, host = (up.balancer, up.host) if up else ("round-robin", None)
        agent.keyed[key].configure(new, balancer=balancer, host=host)
        _secure(agent, agent.keyed[key], after[key])
        _gate(agent, agent.keyed[key], after[key])
    for key in (*change.add, *change.rediscover):
        _discover(agent, agent.keyed[key], after[key])
    agent.services = list(agent.keyed.values())
    route(agent, new)
    front = agent.keyed.get("http-proxy")
    if front is not None:
        names: dict[str, Service] = {}
        for key, listener in after.items():
            up = listener.upstream
            if up is not None and up.protocol == "http":  # http2: not through HTTP/1.1
                for name in (up.name, *up.hosts):
                    names.setdefault(name, agent.keyed[key])
        front.router = routing.Router(names)


def route(agent: running.Agent, settings: proxy_settings.Settings | None) -> None:
    """Attach each upstream's HTTPRoute rules (rebuilt whole on every reload and change
    of the cluster's routes: cheap)."""
    settings = settings or agent.settings
    routes = list(settings.routes)
    if agent.route_watch is not None:
        routes += agent.route_watch.routes(settings)
    named = {
        key.partition(":")[2]: svc for key, svc in agent.keyed.items()
        if key.startswith("upstream:") and svc.protocol == "http"
    }  # fmt: skip
    tables = routetables.build(routes, named, timeouts=settings.timeouts, retries=settings.retries)
    for name, service in named.items():
        service.routes = tables.get(name)


def _retire(agent: running.Agent, service: Service) -> None:
    """A service the new settings dropped: drain it as on SIGTERM, off the books."""
    _forget(agent, service)
    service.drain()
    agent.retired.append(service)
    log.info("%s %s removed: draining its connections", service.direction, service.name)
