"""The proxy's drain: on SIGTERM for every service, and for the services a reload removed.

The order is ``running``'s (not ready, wait ``drain.delay``, stop accepting, give requests in
flight ``drain.grace``, cut the rest and say how many); this module carries out the part after
``/ready`` turned false, and drops a retired service once its last connection has closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecarkit.agents.proxy import running
    from sidecarkit.agents.proxy.services import Service

__all__ = ["drain", "sweep"]

log = logging.getLogger("sidecarkit.agent.proxy")


def sweep(agent: running.Agent, now: float) -> None:
    """Tick the services a reload removed; drop each once its last connection closed."""
    for service in list(agent.retired):
        service.tick(now)
        if not service.connections:
            for endpoint in service.balancer.endpoints:
                if endpoint.pool is not None:
                    endpoint.pool.close()
            agent.retired.remove(service)
            _unguard(agent, service)


def _unguard(agent: running.Agent, service: Service) -> None:
    """Let a gone service's policy stages go: their rate-limit buckets (up to a key table
    each), their key-set waiters and their per-tick work. What they counted stays exported."""
    guard, gate = service.guard, service.gate
    if guard is not None:
        guard.export(agent.metrics)  # what it counted since the last scrape
        guard.throttle.flush()  # and the log lines it held back
        agent.guards = [g for g in agent.guards if g is not guard]
        agent.scopes.pop(guard, None)
        if agent.sources is not None:
            listeners = agent.sources.listeners
            listeners[:] = [f for f in listeners if f != guard.keys_arrived]
    if gate is not None:
        gate.export(agent.metrics)
        gate.throttle.flush()
        agent.gates = [g for g in agent.gates if g is not gate]


async def drain(agent: running.Agent, loop: asyncio.AbstractEventLoop) -> None:
    """Steps 2 and 3 of ``running``'s shutdown order, for every service and retired one."""
    drain = agent.settings.drain
    agent.services += agent.retired
    log.info("draining: not ready; closing listeners in %.1fs", drain.delay)
    if drain.delay:
        await asyncio.sleep(drain.delay)
    for service in agent.services:
        service.drain()
    deadline = loop.time() + drain.grace
    while loop.time() < deadline and any(svc.connections for svc in agent.services):
        await asyncio.sleep(0.05)
        now = loop.time()
        for service in agent.services:
            service.tick(now)  # closes connections idle since the drain began
    left = sum(svc.in_flight for svc in agent.services)
    cut = sum(len(svc.connections) for svc in agent.services)
    for service in agent.services:
        for conn in list(service.connections):
            conn.t.abort()
        for endpoint in service.balancer.endpoints:
            if endpoint.pool is not None:
                endpoint.pool.close()
    for guard in agent.guards:
        guard.throttle.flush()
    if agent.mesh is not None:
        agent.mesh.flush()
    if cut:
        log.warning("drain grace over: cut %d connection(s), %d request(s) in flight", cut, left)
    else:
        log.info("drained: every connection finished")
