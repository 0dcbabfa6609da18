"""``sidecarkit agent proxy``: the listeners, the admin endpoint, discovery and the drain.

Start-up order: services and their endpoints, then the listeners, then the admin endpoint,
then ``/ready`` turns true. Start-up is a reload from nothing: ``applying.apply`` opens what the
settings name, and on SIGHUP or a changed ``--config`` file the same code moves from the
running settings to the new ones (``reloading`` says what changes); a file that does not load,
or a port that cannot be opened, leaves everything as it was.

Shutdown order (SIGTERM or SIGINT), written down because a pod's requests depend on it:

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
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecarkit import errors, watching
from sidecarkit.agents.proxy import (
    admin,
    applying,
    discovery,
    draining,
    telemetry,
)
from sidecarkit.agents.proxy import settings as proxy_settings
from sidecarkit.agents.proxy.services import Service

if TYPE_CHECKING:  # TLS, JWT and cryptography (~12 MB) load only in a proxy that uses them
    from sidecarkit.agents.proxy import (
        guarding,
        keysources,
        policies,
        policyreloading,
        securing,
        tcpguarding,
    )

__all__ = ["Agent"]

log = logging.getLogger("sidecarkit.agent.proxy")

TICK = 1.0
"""Seconds between timeout sweeps and endpoint-file polls."""


class Agent:
    def __init__(
        self,
        settings: proxy_settings.Settings,
        *,
        policy: policies.Policy | None = None,
        reload: Callable[[], proxy_settings.Settings] | None = None,
        config_path: str | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.sources: keysources.Sources | None = None
        self.policy_file: policyreloading.PolicyFile | None = None
        self.guards: list[guarding.Guard] = []
        self.gates: list[tcpguarding.Gate] = []
        """The policy on tcp inbound ports, one per port."""
        self.scopes: dict[guarding.Guard, int] = {}
        """The inbound port of each inbound guard: it takes the rules that apply there."""
        if policy is not None:  # JWT and crypto libraries cost ~12 MB: loaded only for a policy
            from sidecarkit.agents.proxy import keysources, policyreloading  # noqa: PLC0415

            self.sources = keysources.Sources(policy)
            if settings.policy:
                self.policy_file = policyreloading.PolicyFile(settings.policy, policy)
                self.policy_file.check = self._check_policy
        self.mesh: securing.Mesh | None = None
        self.start_settings = settings
        """What the process started with: ``identity`` and ``policy`` are not reloaded."""
        self.load = reload
        """Reads the settings again (file under flags); None: no reloads."""
        self.config_watch = watching.FileWatch((Path(config_path),)) if config_path else None
        self.reloading = asyncio.Lock()
        self.started = False
        self.admin_address = settings.admin
        self.stopping = asyncio.Event()
        self.ready = False
        self.metrics = telemetry.Registry()
        self.keyed: dict[str, Service] = {}
        """Services by listener key (``reloading.listeners``)."""
        self.services: list[Service] = []
        self.retired: list[Service] = []
        """Services a reload removed, draining until their last connection closes."""
        self.files: list[tuple[Service, discovery.FileSource]] = []
        self.names: list[tuple[Service, discovery.DnsSource]] = []
        self.resolving: set[asyncio.Task[Any]] = set()
        self.watches: list[tuple[Service, Any]] = []
        """(service, ``kubewatch.KubernetesSource``): lightkube is imported only when used."""
        self.watching: dict[Any, asyncio.Task[None]] = {}
        self.route_watch: Any = None
        self.interceptor: Any = None
        """``intercepting.Interceptor`` in transparent mode."""
        """``routewatch.RouteWatch`` with ``kubernetes_routes``: lightkube only when used."""

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
            sources: list[tuple[Service, Any]] = [*self.files, *self.names]
            sources += self.watches
            for service, source in sources:
                self.metrics.set_gauge(
                    "discovery_stale",
                    "1 while an endpoints source fails and its last good endpoints are kept.",
                    {"upstream": service.name, "source": source.path},
                    int(source.stale),
                )
                self.metrics.add_counter(
                    "discovery_errors_total",
                    "Failed reads of an endpoints source; the last good endpoints are kept.",
                    {"upstream": service.name, "source": source.path},
                    source.errors - source.reported,
                )
                source.reported = source.errors
            for guard in self.guards:
                guard.export(self.metrics)
            for gate in self.gates:
                gate.export(self.metrics)
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

    async def reload(self, reason: str) -> bool:
        """Load the settings again and apply them; a bad file or a port that cannot be opened
        leaves the running ones in force. True when the new settings run."""
        if self.load is None or self.stopping.is_set():
            return False  # a drain is under way: the listeners are closing anyway
        async with self.reloading:
            try:
                new = self.load()
                if new.inbound is None and not new.upstreams:
                    raise errors.ConfigError("nothing to proxy: no inbound: and no upstreams:")
                if self.policy is not None:  # the running policy on the new inbound ports
                    self._check_policy(self.policy, new)
                await applying.apply(self, new)
            except errors.SidecarkitError as exc:
                return self._reloaded(False, f"reload ({reason}) refused: {exc}")
            except OSError as exc:
                return self._reloaded(False, f"reload ({reason}) refused: cannot listen: {exc}")
            for key, what in (("identity", "the workload identity"), ("policy", "the policy file")):
                if getattr(new, key) != getattr(self.start_settings, key):
                    log.warning("%s: %s stays as it was until the proxy restarts", key, what)
            if new.admin != self.admin_address:
                log.warning(
                    "admin: the admin endpoint stays on %s:%d until the proxy restarts",
                    *self.admin_address,
                )
            return self._reloaded(True, f"reloaded the settings ({reason})")

    def _reloaded(self, ok: bool, message: str) -> bool:
        if ok:
            log.info("%s", message)
        else:
            log.error("%s; the running settings stay in force", message)
        result = "success" if ok else "failure"
        self.metrics.add_counter(
            "config_reloads_total", "Reloads of the settings, by result.", {"result": result}, 1
        )
        self.metrics.set_gauge(
            "config_last_reload_successful", "1 if the last reload was applied.", {}, int(ok)
        )
        return ok

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        if s.identity is not None:  # the certificate comes before any listener
            from sidecarkit.agents.proxy import securing  # noqa: PLC0415

            self.mesh = securing.Mesh(s.identity, self.metrics)
            await self.mesh.start(loop)
        self.start_settings = s
        self.settings = proxy_settings.Settings(admin=s.admin)  # nothing runs yet
        await applying.apply(self, s)
        self.started = True
        if s.kubernetes_routes:
            from sidecarkit.agents.proxy import routewatch  # noqa: PLC0415 - only when used

            self.route_watch = routewatch.RouteWatch(
                s.kubernetes_routes,
                metrics=self.metrics,
                publish=lambda: applying.route(self, None),
            )
            watch = self.route_watch
            self.watching[watch] = loop.create_task(watch.run(), name=watch.path)
            for _ in range(40):  # its first list before /ready says yes
                if watch.last is not None or watch.errors:
                    break
                await asyncio.sleep(0.05)
        for _, source in self.watches:
            self.watching[source] = loop.create_task(source.run(), name=source.path)
        for _, source in self.watches:  # the first list before /ready says yes
            for _ in range(40):
                if source.last is not None or source.errors:
                    break
                await asyncio.sleep(0.05)
        for service, name in self.names:  # the first answer before /ready says yes
            name.due = math.inf
            with contextlib.suppress(asyncio.TimeoutError):  # a hung resolver must not stall us
                await asyncio.wait_for(asyncio.shield(self._resolve(service, name)), 2.5)
        if self.sources is not None:
            await self.sources.start()
        if s.transparent is not None:
            await self._intercept(loop, s.transparent)
        self.admin_address = s.admin
        admin_server = await admin.serve(s.admin[0], s.admin[1], self._routes())
        log.info("admin endpoint on %s:%d", *s.admin)
        if self.config_watch is not None:
            with contextlib.suppress(OSError):
                self.config_watch.accept(self.config_watch.changed() or ())
        if self.load is not None:
            loop.add_signal_handler(signal.SIGHUP, self._hangup, loop)
        self.ready = True
        ticker = loop.create_task(self._tick(loop), name="proxy ticker")
        await self.stopping.wait()
        self.ready = False
        if self.interceptor is not None:
            self.interceptor.close()
        await draining.drain(self, loop)
        ticker.cancel()
        for task in self.watching.values():
            task.cancel()
        if self.sources is not None:
            await self.sources.close()
        admin_server.close()

    async def _take_policy(self, new: policies.Policy) -> None:
        """A changed policy file: a new authentication gets its key sets first."""
        assert self.sources is not None
        authenticator = await self.sources.update(new)
        self.policy = new  # for listeners a settings reload adds
        for guard in self.guards:
            port = self.scopes.get(guard)
            guard.take(new if port is None else new.on_port(port), authenticator)
        for gate in self.gates:
            gate.take(new)

    def _check_policy(
        self, policy: policies.Policy, settings: proxy_settings.Settings | None = None
    ) -> None:
        """ConfigError when ``policy`` cannot hold on the inbound ports (``tcpguarding``)."""
        from sidecarkit.agents.proxy import tcpguarding  # noqa: PLC0415 - only with a policy

        settings = settings or self.settings
        source = self.start_settings.policy or "the policy"
        tcpguarding.check(policy, settings, source=source)

    async def _intercept(self, loop: asyncio.AbstractEventLoop, address: tuple[str, int]) -> None:
        from sidecarkit.agents.proxy import intercepting  # noqa: PLC0415 - only when used

        def lookup(destination: tuple[str, int]) -> Service | None:
            for up in self.settings.upstreams:
                if destination in up.addresses:
                    return self.keyed.get(f"upstream:{up.name}")
            return None

        self.interceptor = intercepting.Interceptor(
            lookup=lookup, settings=lambda: self.settings, metrics=self.metrics, loop=loop
        )
        await self.interceptor.start(*address)

    def _hangup(self, loop: asyncio.AbstractEventLoop) -> None:
        self._spawn(loop, self.reload("SIGHUP"), "reload")

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Any, name: str) -> None:
        task = loop.create_task(work, name=name)
        self.resolving.add(task)
        task.add_done_callback(self.resolving.discard)

    async def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            for service in self.services:
                service.tick(now)
                if service.terminator is not None:
                    service.terminator.tick()
            if self.mesh is not None:
                self.mesh.tick(loop)
            if self.policy_file is not None and (new := self.policy_file.poll()) is not None:
                self._spawn(loop, self._take_policy(new), "policy")
            if self.sources is not None:
                self.sources.tick(loop)
                for guard in self.guards:
                    guard.tick(time.monotonic())
                for gate in self.gates:
                    gate.tick(time.monotonic())
            draining.sweep(self, now)
            if self.config_watch is not None:
                try:
                    contents = self.config_watch.changed()
                except OSError:  # mid-swap of a ConfigMap: look again at the next tick
                    contents = None
                if contents is not None:
                    self.config_watch.accept(contents)
                    self._spawn(loop, self.reload("the file changed"), "reload")
            for service, source in self.files:
                endpoints = source.poll()
                if endpoints is not None:
                    service.marks = source.marks
                    service.set_endpoints(endpoints)
            for service, name in self.names:
                if now >= name.due:
                    name.due = math.inf  # until this question is answered
                    self._spawn(loop, self._resolve(service, name), name.path)

    async def _resolve(self, service: Service, name: discovery.DnsSource) -> None:
        try:
            endpoints = await name.resolve()
        finally:
            name.due = asyncio.get_running_loop().time() + name.interval
        if endpoints is not None:
            service.set_endpoints(endpoints, name.weights)
