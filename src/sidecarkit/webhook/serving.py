"""``sidecarkit webhook``: the HTTPS server around ``admitting.admit``.

Routes:

==========================  ==============================================================
``POST /inject``            the pod's own label opted it in (the ``object`` webhook)
``POST /inject/namespace``  its namespace's label opted it in (the ``namespace`` webhook)
``GET /healthz``            the process is alive
``GET /readyz``             config and certificate loaded, not shutting down
``GET /metrics``            Prometheus text: admissions, latency, reloads, certificate expiry
==========================  ==============================================================

Shutdown order, on SIGTERM or SIGINT: mark not ready; keep serving for ``shutdown_delay`` so
load balancers notice; stop accepting connections; let in-flight admissions finish until
``grace`` runs out; cancel the rest and say how many; exit.

Every ``reload_interval`` the config file and the certificate files are checked. A new config
that fails to load is refused with a log line and the old one keeps serving; a new certificate
pair is loaded from the bytes of one read of both files, checked to match, so a half-written
rotation (new certificate, old key) is simply tried again on the next tick.

HTTP/1.1 is spoken by ``answering`` (httptools; no web framework, whose request handling cost
more than deciding an admission). Connections are guarded (``guarding``: header, body, idle and
write timeouts, a connection cap), admissions are capped (a slot is taken when a request's head
is in, so a body that dribbles in holds one), and bodies of ``offload_body`` bytes or more are
decided in a worker process (``offloading``), so neither a slow client nor a huge pod holds up
the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sidecarkit import configfiles, errors, metering, watching
from sidecarkit.injection import configs, facts, policy
from sidecarkit.webhook import (
    admitting,
    answering,
    certificates,
    guarding,
    namespaces,
    offloading,
    outboxes,
    reviews,
    verdicts,
)

__all__ = ["Server", "Settings", "serve"]

log = logging.getLogger("sidecarkit.webhook")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_ADMISSIONS = frozenset((b"/inject", b"/inject/namespace"))
_JSON = "application/json"
_NOT_FOUND = answering.Answer(404, b"404: Not Found")
_OVERLOADED = answering.Answer(
    503, b"sidecarkit: too many admissions in progress; retry\n", headers=(("Retry-After", "1"),)
)

Route = Callable[[answering.Request], answering.Answer | Coroutine[Any, Any, answering.Answer]]


@dataclass(frozen=True, slots=True)
class Settings:
    """How the webhook server runs; the CLI maps its options one to one onto these."""

    tls_cert: Path
    """Serving certificate (PEM, chain allowed); reloaded when it changes."""
    tls_key: Path
    """Its private key (PEM); reloaded with it."""
    config: Path | None = None
    """Injection config; None means the built-in profiles. Reloaded when it changes."""
    host: str = "0.0.0.0"
    """Address to listen on; every interface by default, as a Service needs."""
    port: int = 8443
    """Port to listen on; the Service maps 443 to it. Above 1024 so no privilege is needed."""
    reload_interval: float = 2.0
    """Seconds between checks of the config and certificate files."""
    shutdown_delay: float = 0.0
    """Seconds to keep serving after SIGTERM while reporting not ready, so endpoints update."""
    grace: float = 15.0
    """Seconds in-flight admissions get to finish once accepting stopped."""
    max_body: int = 4 * 1024 * 1024
    """Largest request body in bytes; an AdmissionReview carries at most two ~1.5 MB objects."""
    kubernetes_version: tuple[int, int] | None = None
    """The cluster's version, for profiles in mode auto."""
    namespace_lookup: bool = False
    """Whether to read namespace labels from the API server (needs RBAC get on namespaces)."""
    lookup: namespaces.NamespaceLookup | None = field(default=None, compare=False)
    """The lookup to use when ``namespace_lookup`` is on; None means the in-cluster one."""
    limits: guarding.Limits = field(default_factory=guarding.Limits)
    """Timeouts and caps on connections and admissions."""
    offload_body: int = 128 * 1024
    """Bodies of this many bytes or more are decided in a worker process (``offloading``)."""
    offload_workers: int = 1
    """Worker processes for large bodies; each may have four more waiting."""


class _Metrics:
    def __init__(self) -> None:
        self.registry = metering.Registry()
        r = self.registry
        self.admissions = r.add(
            metering.Counter(
                "sidecarkit_webhook_admissions_total",
                "Admission reviews answered, by decision and deciding reason.",
                ("decision", "reason"),
            )
        )
        self.latency = r.add(
            metering.Histogram(
                "sidecarkit_webhook_admission_duration_seconds",
                "Time from a review's body being read to its answer being ready.",
                _LATENCY_BUCKETS,
            )
        )
        self.reloads = r.add(
            metering.Counter(
                "sidecarkit_webhook_reloads_total",
                "Reloads of the config and the certificate, by what and result.",
                ("what", "result"),
            )
        )
        self.expiry = r.add(
            metering.Gauge(
                "sidecarkit_webhook_certificate_expiry_timestamp_seconds",
                "When the serving certificate in use expires (Unix time).",
            )
        )
        self.in_flight = r.add(
            metering.Gauge("sidecarkit_webhook_in_flight_requests", "Requests being handled.")
        )


class Server:
    """One webhook server: its state, its handlers, and its lifecycle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = _Metrics()
        self.config = configs.Config()
        self.config_text: str | None = None
        """The config's source text, for the worker that decides large reviews."""
        self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ssl.set_alpn_protocols(["http/1.1"])
        self.stopping = asyncio.Event()
        self.draining = False
        self.in_flight = 0
        self.port: int | None = None
        self._config_watch = watching.FileWatch((settings.config,)) if settings.config else None
        self._cert_watch = watching.FileWatch((settings.tls_cert, settings.tls_key))
        self._verdicts = verdicts.Verdicts()
        self.guards: guarding.Guards | None = None
        self._free_slots = settings.limits.max_admissions
        self._slot_queue: collections.deque[answering.Request] = collections.deque()
        """Admissions whose head came in at the cap, oldest first, waiting for a slot."""
        self._routes: dict[bytes, tuple[bytes, Route]] = {
            b"/inject": (b"POST", self._inject),
            b"/inject/namespace": (b"POST", self._inject_namespace),
            b"/healthz": (b"GET", self._healthz),
            b"/readyz": (b"GET", self._readyz),
            b"/metrics": (b"GET", self._metrics),
        }
        self._offloader = offloading.Offloader(workers=settings.offload_workers)
        self.lookup: namespaces.NamespaceLookup | None = None
        if settings.namespace_lookup:
            self.lookup = settings.lookup or namespaces.NamespaceLookup.in_cluster()
        self._plain_facts = {
            opted_in: facts.Facts(
                kubernetes_version=settings.kubernetes_version,
                namespace_labels=MappingProxyType(
                    {policy.INJECT_LABEL: "true"} if opted_in else {}
                ),
            )
            for opted_in in (False, True)
        }
        """Facts without a namespace lookup: by whether the namespace webhook was called."""

    # -- loading ---------------------------------------------------------------------------

    def load_initial(self) -> None:
        """Load config and certificate before serving; errors here stop the start."""
        if not self._reload_certificate(initial=True):
            raise errors.ConfigError(
                f"cannot load the TLS certificate {self.settings.tls_cert} and key "
                f"{self.settings.tls_key}; make them with `sidecarkit certs`"
            )
        if self._config_watch is not None and not self._reload_config(initial=True):
            raise errors.ConfigError(f"cannot load the config {self.settings.config}")

    def _reload_config(self, *, initial: bool = False) -> bool:
        assert self._config_watch is not None
        assert self.settings.config is not None
        try:
            contents = self._config_watch.changed()
        except OSError as exc:
            log.error(
                "config %s unreadable (%s); keeping the config in use",
                self.settings.config,
                exc.strerror,
            )
            self.metrics.reloads.inc("config", "error")
            return False
        if contents is None:
            return True
        text = contents[0].decode("utf-8", "replace")
        try:
            config = configfiles.parse_config(text, source=str(self.settings.config))
        except errors.ConfigError as exc:
            self._config_watch.accept(contents)  # the same bad file is not worth a line a tick
            log.error("new config refused, the old one keeps serving: %s", exc)
            self.metrics.reloads.inc("config", "error")
            return False
        self._config_watch.accept(contents)
        self.config, self.config_text = config, text
        if not initial:
            log.info(
                "config reloaded from %s: profiles %s",
                self.settings.config,
                ", ".join(config.profiles),
            )
        self.metrics.reloads.inc("config", "ok")
        return True

    def _reload_certificate(self, *, initial: bool = False) -> bool:
        try:
            contents = self._cert_watch.changed()
        except OSError as exc:
            log.error("certificate files unreadable (%s); keeping the ones in use", exc.strerror)
            return False
        if contents is None:
            return True
        cert = self.settings.tls_cert
        pair = certificates.Pair(contents[0], contents[1])
        try:
            # Both from the bytes read together above: the live context never takes a
            # certificate of one generation with the key of another. A scratch load first, so
            # a pair OpenSSL refuses leaves the live context as it was.
            certificates.load_into(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pair)
            certificates.load_into(self.ssl, pair)
        except (ssl.SSLError, OSError) as exc:
            # Most often a rotation caught half way (new certificate, old key): try next tick.
            log.warning("certificate not (yet) loadable, keeping the one in use: %s", exc)
            self.metrics.reloads.inc("certificate", "error")
            return False
        self._cert_watch.accept(contents)
        try:
            self.metrics.expiry.set(certificates.expiry(contents[0]))
        except ValueError:
            log.warning("cannot read the expiry of %s", cert)
        if not initial:
            log.info("certificate reloaded from %s", cert)
        self.metrics.reloads.inc("certificate", "ok")
        return True

    async def _reload_loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.reload_interval)
            if self._config_watch is not None:
                self._reload_config()
            self._reload_certificate()

    # -- handlers (answering.App) ----------------------------------------------------------

    def begin(self, request: answering.Request) -> None:
        """A request's head is in: count it in flight; an admission takes a slot or queues."""
        self.in_flight += 1
        if request.path in _ADMISSIONS:
            if self._free_slots > 0:
                self._free_slots -= 1
                request.slot = True
            else:
                self._slot_queue.append(request)

    def end(self, request: answering.Request) -> None:
        """A request was answered or its connection lost: give its slot to the next in line."""
        self.in_flight -= 1
        if request.slot:
            request.slot = False
            while self._slot_queue:
                waiting = self._slot_queue.popleft()
                if not waiting.answered:
                    waiting.slot = True
                    if waiting.waiter is not None and not waiting.waiter.done():
                        waiting.waiter.set_result(None)
                    return
            self._free_slots += 1
        elif self._slot_queue and request in self._slot_queue:
            self._slot_queue.remove(request)

    def answer(
        self, request: answering.Request
    ) -> answering.Answer | Coroutine[Any, Any, answering.Answer]:
        route = self._routes.get(request.path)
        if route is None:
            return _NOT_FOUND
        method, handler = route
        if request.method != method:
            return answering.Answer(
                405, b"405: Method Not Allowed", headers=(("Allow", method.decode()),)
            )
        return handler(request)

    def _inject(
        self, request: answering.Request
    ) -> answering.Answer | Coroutine[Any, Any, answering.Answer]:
        return self._admit(request, namespace_opted_in=False)

    def _inject_namespace(
        self, request: answering.Request
    ) -> answering.Answer | Coroutine[Any, Any, answering.Answer]:
        return self._admit(request, namespace_opted_in=True)

    def _admit(
        self, request: answering.Request, *, namespace_opted_in: bool
    ) -> answering.Answer | Coroutine[Any, Any, answering.Answer]:
        body = request.body
        if request.slot and self.lookup is None and len(body) < self.settings.offload_body:
            # The usual case decides at once, on the loop, without a task: nothing to wait for.
            return self._decide_small(body, self._plain_facts[namespace_opted_in])
        return self._admit_waiting(request, body, namespace_opted_in=namespace_opted_in)

    async def _admit_waiting(
        self, request: answering.Request, body: bytes, *, namespace_opted_in: bool
    ) -> answering.Answer:
        if not request.slot:  # at the cap: wait until body_timeout after its head for a slot
            loop = asyncio.get_running_loop()
            request.waiter = loop.create_future()
            left = request.started + self.settings.limits.body_timeout - loop.time()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    await request.waiter
            except TimeoutError:
                self.metrics.admissions.inc("invalid", "overloaded")
                return _OVERLOADED
            finally:
                request.waiter = None
        if len(body) >= self.settings.offload_body:
            return await self._admit_large(body, namespace_opted_in=namespace_opted_in)
        return await self._admit_small(body, namespace_opted_in=namespace_opted_in)

    async def _admit_large(self, body: bytes, *, namespace_opted_in: bool) -> answering.Answer:
        """Decide in a worker process; the loop never parses the large body."""
        if self._offloader.full():
            self.metrics.admissions.inc("invalid", "large-review-queue-full")
            return answering.Answer(
                503,
                b"sidecarkit: too many large reviews in progress; retry\n",
                headers=(("Retry-After", "1"),),
            )
        started = time.perf_counter()
        cluster = await self._facts_for_body(body, namespace_opted_in=namespace_opted_in)
        source = str(self.settings.config) if self.settings.config else "built-in"
        done = await self._offloader.decide(body, self.config_text, source, cluster)
        if done.error is not None:
            log.error("large admission failed: %s", done.error)
        self.metrics.admissions.inc(done.decision, done.reason)
        self.metrics.latency.observe(time.perf_counter() - started)
        if done.status != 200:
            return answering.Answer(done.status, done.body)
        return answering.Answer(200, done.body, _JSON)

    async def _facts_for_body(self, body: bytes, *, namespace_opted_in: bool) -> facts.Facts:
        if self.lookup is None:  # the usual case: no need to look into the body at all
            return await self._facts(None, namespace_opted_in=namespace_opted_in)
        try:
            review = reviews.parse(body)
        except reviews.BadReview:
            return await self._facts(None, namespace_opted_in=namespace_opted_in)
        return await self._facts(review, namespace_opted_in=namespace_opted_in)

    async def _admit_small(self, body: bytes, *, namespace_opted_in: bool) -> answering.Answer:
        if self.lookup is None:
            return self._decide_small(body, self._plain_facts[namespace_opted_in])
        try:
            review = reviews.parse(body)
        except reviews.BadReview:
            cluster = self._plain_facts[namespace_opted_in]  # refused below, without a lookup
        else:
            cluster = await self._facts(review, namespace_opted_in=namespace_opted_in)
        return self._decide_small(body, cluster)

    def _decide_small(self, body: bytes, cluster: facts.Facts) -> answering.Answer:
        started = time.perf_counter()
        try:
            review = reviews.parse(body)
        except reviews.BadReview as exc:
            self.metrics.admissions.inc("invalid", "bad-review")
            return answering.Answer(400, f"sidecarkit: not an AdmissionReview: {exc}\n".encode())
        verdict = self._verdicts.get(review.request, self.config, cluster, body=body)
        if verdict.error is not None:
            log.error("admission %s failed: %s", review.uid, verdict.error, exc_info=verdict.error)
        answer = admitting.answer(review, verdict)
        self.metrics.admissions.inc(verdict.decision, verdict.reason)
        self.metrics.latency.observe(time.perf_counter() - started)
        return answering.Answer(200, answer, _JSON)

    async def _facts(
        self, review: reviews.Review | None, *, namespace_opted_in: bool
    ) -> facts.Facts:
        if self.lookup is None:  # the same facts for every review: made once
            return self._plain_facts[namespace_opted_in]
        labels: dict[str, str] = {}
        namespace = review.request.get("namespace") if review is not None else None
        if isinstance(namespace, str) and namespace:
            found = await self.lookup.labels(namespace)
            labels.update(found or {})
        if namespace_opted_in:
            labels[policy.INJECT_LABEL] = "true"
        return facts.Facts(
            kubernetes_version=self.settings.kubernetes_version,
            namespace_labels=MappingProxyType(labels),
        )

    def _healthz(self, request: answering.Request) -> answering.Answer:
        return answering.Answer(200, b"ok\n")

    def _readyz(self, request: answering.Request) -> answering.Answer:
        if self.draining:
            return answering.Answer(503, b"shutting down\n")
        return answering.Answer(200, b"ready\n")

    def _metrics(self, request: answering.Request) -> answering.Answer:
        self.metrics.in_flight.set(self.in_flight)
        return answering.Answer(200, self.metrics.registry.render(), metering.CONTENT_TYPE)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, started: Callable[[int], None] | None = None) -> None:
        """Serve until ``stopping`` is set, then shut down in the documented order."""
        self.load_initial()
        limits = self.settings.limits
        max_body = self.settings.max_body
        outbox = outboxes.Outbox()
        self.guards = guarding.Guards(
            limits, lambda guard: answering.Connection(self, guard, max_body, outbox)
        )
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            self.guards.factory,
            self.settings.host,
            self.settings.port,
            ssl=self.ssl,
            ssl_handshake_timeout=limits.header_timeout,
            backlog=1024,
            reuse_address=True,
        )
        sockets = list(getattr(listener, "sockets", ()))  # asyncio: a tuple; uvloop: a list
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info("serving admission reviews on https://%s:%s", self.settings.host, self.port)
        if started is not None:
            started(self.port)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._reload_loop(), name="webhook-reload")
                await self.stopping.wait()
        finally:
            self.draining = True
            if self.settings.shutdown_delay > 0:
                log.info(
                    "not ready; serving %.1fs more before closing", self.settings.shutdown_delay
                )
                await asyncio.sleep(self.settings.shutdown_delay)
            listener.close()
            log.info(
                "stopped accepting; draining %d in-flight admission(s) for up to %.1fs",
                self.in_flight,
                self.settings.grace,
            )
            deadline = loop.time() + self.settings.grace
            while self.in_flight and loop.time() < deadline:
                await asyncio.sleep(0.02)
            if self.in_flight:
                log.warning(
                    "cancelling %d admission(s) still running at the deadline", self.in_flight
                )
            outbox.flush()  # answers made in this turn go out before the connections close
            self.guards.close_all()
            self._offloader.close()
            if self.lookup is not None:
                await self.lookup.close()
            log.info("webhook stopped")

    def stop(self) -> None:
        """Begin shutdown; safe to call from a signal handler."""
        self.stopping.set()


def serve(settings: Settings) -> None:
    """Run a webhook server in this process until SIGTERM or SIGINT (on uvloop if installed)."""

    async def main() -> None:
        server = Server(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.run()

    try:
        import uvloop  # noqa: PLC0415 - optional, faster event loop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
