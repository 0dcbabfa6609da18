"""``sidecarkit agent metrics``: scrape the app, receive StatsD, serve one merged endpoint.

Tasks, all owned by one task group: one scrape loop per target; the StatsD datagram endpoints
(UDP, and a Unix socket if asked); the HTTP server with ``/metrics``, ``/healthz`` and
``/ready``. ``/ready`` answers 200 as soon as the endpoints listen, not after a first scrape: as
a native sidecar the agent starts before the app, and waiting for the app would deadlock.

A scrape asks for OpenMetrics first, as Prometheus does, picks the parser from the response's
Content-Type, and parses while the body streams in. The result is relabelled, enriched with the
pod's identity and kept until the next scrape replaces it; a failed scrape drops the target's
series (as Prometheus marks them stale) and sets ``up`` to 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecarkit.agents.metrics import (
    discovering,
    exposition,
    mapping,
    merging,
    openmetrics,
    promtext,
    pushing,
    reading,
    relabeling,
    rendering,
    selfmetrics,
    settings,
    statsd,
)

__all__ = ["ACCEPT", "Agent"]

log = logging.getLogger("sidecarkit.agent.metrics")

#: Seconds a target that has never answered may fail before it is reported: the app behind it
#: may still be starting.
FIRST_ANSWER_GRACE = 60.0

#: What Prometheus 2.42 sends: OpenMetrics 1.0 first, then 0.0.1, then text 0.0.4.
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@dataclass(slots=True)
class _Target:
    spec: settings.Target
    labels: tuple[tuple[str, str], ...]
    """What the agent adds to this target's series: the pod's identity, static labels, the
    target label and the target's own."""
    honor: bool
    source: merging.Source
    families: list[exposition.Family] = field(default_factory=list)
    up: float = 0.0
    duration: float = 0.0
    samples: int = 0
    limited: dict[str, int] = field(default_factory=dict)
    """Scrapes refused by a limit, by the limit's name."""
    held: int = 0
    """The memory its series hold, by ``reading.estimate``."""
    answered: bool = False
    scraped_ms: int | None = None
    """When the last scrape started, in milliseconds since the epoch."""
    warned_silent: bool = False
    error: str = "not scraped yet"
    text_label_sets: dict[str, Any] = field(default_factory=dict)
    openmetrics_label_sets: dict[str, Any] = field(default_factory=dict)
    """Label sets read by earlier scrapes, by their text (see the parsers' ``label_sets``):
    a scrape reads only its new series' labels, and a series keeps one labels tuple."""
    enriched: dict[int, tuple[relabeling.Labels, relabeling.Labels]] = field(default_factory=dict)
    """Each labels tuple of the target's series with the target's labels added (see
    ``relabeling.enrich``)."""


class _Statsd(asyncio.DatagramProtocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.agent.statsd_packets += 1
        aggregator = self.agent.aggregator
        aggregator.add_packet(data)
        if aggregator.newly_capped:
            for name in aggregator.newly_capped:
                log.warning(
                    "StatsD set %s reached %d distinct values; further ones are not counted "
                    "(sidecarkit_metrics_statsd_set_values_dropped_total)",
                    name,
                    statsd.MAX_SET_VALUES,
                )
            aggregator.newly_capped.clear()


def _grow_receive_buffer(sock: socket.socket | None, size: int = 8 << 20) -> None:
    """Ask for a large UDP receive buffer (the kernel caps it at net.core.rmem_max): StatsD
    comes in bursts, and a burst that overflows the buffer is lost without a trace."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class Agent:
    """One metrics agent: its state, its endpoints, and its lifecycle."""

    def __init__(self, config: settings.Settings) -> None:
        self.settings = config
        self._given = config.targets
        """The targets the agent was given, kept while the pod's annotations do not speak."""
        if config.annotations_file:
            self._annotations = self._read_annotations(config.annotations_file)
            try:
                found = discovering.read_targets(config.annotations_file, fallback=config.targets)
            except ValueError as exc:
                if not config.targets:
                    raise
                # The injector ignored such an annotation with a warning: so does the agent,
                # scraping the target it was given rather than failing to start.
                log.warning("%s; scraping the targets given instead", exc)
                found = config.targets
            config = replace(config, targets=found)
            self.settings = config
        self.targets = [self._target(t) for t in config.targets]
        self.conflicts: dict[str, int] = {"type": 0, "duplicate": 0}
        self._active_conflicts: set[tuple[str, str, str]] = set()
        self.aggregator = statsd.Aggregator(
            buckets=config.buckets,
            max_series=config.statsd_series_limit,
            ttl=config.statsd_ttl,
            mapper=mapping.Mapper(config.statsd_mappings) if config.statsd_mappings else None,
        )
        self.statsd_packets = 0
        self.writer = pushing.writer_for(config)
        self.pushes: dict[tuple[str, str], int] = {}
        self.stopping = asyncio.Event()
        self.port: int | None = None
        self.started_at = time.monotonic()
        self._tasks: asyncio.TaskGroup | None = None
        self._in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._skipping: set[tuple[str, str]] = set()
        self._queued: set[asyncio.Task[None]] = set()
        self._scrapers: dict[str, asyncio.Task[None]] = {}
        self.statsd_port: int | None = None

    def _target(self, spec: settings.Target) -> _Target:
        extra = dict(self.settings.labels)
        if self.settings.target_label:
            extra[self.settings.target_label] = spec.address
        extra.update(spec.labels)
        honor = self.settings.honor_labels if spec.honor_labels is None else spec.honor_labels
        return _Target(spec, tuple(extra.items()), honor, merging.Source.of(spec.url, []))

    # -- scraping --------------------------------------------------------------------------

    def _limits(self, target: _Target) -> reading.Limits:
        """This scrape's limits: the settings', and the memory the other targets leave."""
        config = self.settings
        memory = 0
        if config.memory_limit:
            # The target's previous series stay until this scrape replaces them.
            memory = max(1, config.memory_limit - sum(t.held for t in self.targets))
        return reading.Limits(
            body_bytes=config.body_size_limit,
            samples=config.series_limit,
            labels=config.label_limit,
            label_name_length=config.label_name_length_limit,
            label_value_length=config.label_value_length_limit,
            memory_bytes=memory,
        )

    def _interval(self, target: _Target) -> float:
        return target.spec.interval or self.settings.interval

    async def scrape(self, session: aiohttp.ClientSession, target: _Target) -> None:
        started = time.perf_counter()
        target.scraped_ms = int(time.time() * 1000)  # what samples without a timestamp get
        limit = min(target.spec.timeout or self.settings.timeout, self._interval(target))
        try:
            limits = self._limits(target)
            async with session.get(
                target.spec.url,
                headers={"Accept": ACCEPT},
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as r:
                target.answered = True
                if r.status != 200:
                    raise ValueError(f"HTTP {r.status}")
                if limits.body_bytes and (r.content_length or 0) > limits.body_bytes:
                    raise reading.LimitExceeded(
                        "body_bytes",
                        f"the body is {r.content_length} bytes, over {limits.body_bytes} "
                        "(body_size_limit); raise it, or expose fewer series",
                    )
                content_type = r.headers.get("Content-Type", "")
                parser: openmetrics.OpenMetricsParser | promtext.PrometheusTextParser
                if content_type.startswith("application/openmetrics-text"):
                    label_sets = target.openmetrics_label_sets
                    parser = openmetrics.OpenMetricsParser(limits, label_sets=label_sets)
                else:
                    label_sets = target.text_label_sets
                    parser = promtext.PrometheusTextParser(limits, label_sets=label_sets)
                async for chunk in r.content.iter_chunked(1 << 16):
                    parser.feed(chunk)
                families = parser.close()
            samples = sum(len(f.samples) for f in families)
            if len(label_sets) > 2 * samples + 16384:  # series come and go: start afresh
                label_sets.clear()
            if len(target.enriched) > 2 * samples + 16384:
                target.enriched.clear()
            families = relabeling.apply(families, self.settings.rules)
            target.families = relabeling.enrich(
                families,
                target.labels,
                in_place=True,
                honor=target.honor,
                cache=target.enriched,
            )
            target.source = merging.Source.of(target.spec.url, target.families)
            target.held = reading.estimate(lines=parser.reader.lines, size=parser.reader.fed)
            target.up, target.samples, target.error = 1.0, samples, ""
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            if isinstance(exc, TimeoutError):
                reason = f"no complete answer within {limit:g} s (timeout, at most the interval)"
            elif isinstance(exc, reading.LimitExceeded):
                reason = f"over a limit: {exc}"
                target.limited[exc.limit] = target.limited.get(exc.limit, 0) + 1
            else:
                reason = str(exc) or type(exc).__name__
            self._report_failure(target, reason)
            target.families, target.up, target.samples, target.held = [], 0.0, 0, 0
            target.source = merging.Source.of(target.spec.url, [])
            target.error = reason
        target.duration = time.perf_counter() - started

    def _report_failure(self, target: _Target, reason: str) -> None:
        """Log a failed scrape once per change of reason. Before a target has ever answered
        HTTP (the app is still starting, and the agent, a native sidecar, started first)
        failures stay at debug level for ``FIRST_ANSWER_GRACE`` seconds, as Prometheus shows such a
        target as unknown rather than down."""
        if not target.answered:
            waited = time.monotonic() - self.started_at
            if waited < FIRST_ANSWER_GRACE:
                log.debug("scrape of %s failed (not up yet): %s", target.spec.url, reason)
                return
            if not target.warned_silent:
                target.warned_silent = True
                log.warning(
                    "%s has not answered a scrape in %.0f s: %s",
                    target.spec.url,
                    waited,
                    reason,
                )
                target.error = reason
                return
        if target.up or target.error != reason:
            log.warning("scrape of %s failed: %s", target.spec.url, reason)

    async def _scrape_loop(self, session: aiohttp.ClientSession, target: _Target) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        interval = self._interval(target)
        while not self.stopping.is_set():
            deadline = time.monotonic() + interval
            await self.scrape(session, target)
            if self.writer is not None:
                url = target.spec.url
                families, stamp = target.families, target.scraped_ms
                self._start_push(
                    "remote_write",
                    url,
                    functools.partial(
                        self._write, session, families, source=url, at=stamp, until=deadline
                    ),
                )
            next_at += interval
            delay = max(0.0, next_at - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    def _start_scraping(self, session: aiohttp.ClientSession, target: _Target) -> None:
        assert self._tasks is not None
        self._scrapers[target.spec.url] = self._tasks.create_task(
            self._scrape_loop(session, target), name=f"scrape {target.spec.url}"
        )

    # -- following the pod's annotations ------------------------------------------------------
    #
    # The kubelet rewrites the Downward API file when the pod's annotations change (within its
    # sync period, about a minute). The file is read again every few seconds; when the target
    # it names changes, the old target's loop stops, its series leave the merged endpoint and
    # get stale markers on remote_write, and the new target's loop starts.

    @staticmethod
    def _read_annotations(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    async def _watch_annotations(self, session: aiohttp.ClientSession) -> None:
        path = self.settings.annotations_file
        assert path is not None
        every = min(5.0, self.settings.interval)
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)
            text = self._read_annotations(path)
            if text == self._annotations or not text:
                continue
            self._annotations = text
            try:
                found = discovering.read_targets(path, fallback=self._given)
            except ValueError as exc:
                log.warning("the pod's annotations changed but name no target: %s", exc)
                continue
            await self._retarget(session, found)

    async def _retarget(
        self, session: aiohttp.ClientSession, found: tuple[settings.Target, ...]
    ) -> None:
        wanted = {t.url: t for t in found}
        gone = [t for t in self.targets if t.spec.url not in wanted]
        kept = {t.spec.url for t in self.targets} & wanted.keys()
        if not gone and len(kept) == len(wanted):
            return
        log.info(
            "the pod's annotations changed: scraping %s",
            ", ".join(wanted) or "nothing",
        )
        for target in gone:
            task = self._scrapers.pop(target.spec.url, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.targets = [t for t in self.targets if t.spec.url in wanted]
        self.settings = replace(self.settings, targets=found)
        for url, spec in wanted.items():
            if url not in kept:
                target = self._target(spec)
                self.targets.append(target)
                self._start_scraping(session, target)
        if self.writer is not None:  # end the old target's series now, not in five minutes
            until = time.monotonic() + self.settings.interval
            for target in gone:
                url = target.spec.url
                self._start_push(
                    "remote_write",
                    url,
                    functools.partial(self._write, session, [], source=url, at=None, until=until),
                )

    # -- pushing ---------------------------------------------------------------------------
    #
    # remote_write sends each target's samples right after its scrape, stamped with the
    # scrape's time, as Prometheus in agent mode does; StatsD's and the agent's own series go
    # on the push timer, as does the Pushgateway's whole group. Every push has a deadline: the
    # next push of the same series. A push still running when the next is due makes that one
    # skipped and counted, never queued behind it.

    def _start_push(
        self, to: str, source: str, push: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        key = (to, source)
        running = self._in_flight.get(key)
        if running is not None and not running.done() and self._queues(to):
            # With a WAL nothing is skipped: the push joins the bodies waiting on disk.
            if self._tasks is not None:
                task = self._tasks.create_task(push(), name=f"{to} {source} queued")
                self._queued.add(task)
                task.add_done_callback(self._queued.discard)
            return
        if running is not None and not running.done():
            self._count(to, "skipped")
            if key not in self._skipping:
                self._skipping.add(key)
                log.warning(
                    "%s push of %s skipped: the previous one is still running (the receiver "
                    "is slower than the interval); counted in sidecarkit_metrics_pushes_total",
                    to,
                    source,
                )
            return
        self._skipping.discard(key)
        if self._tasks is not None:
            self._in_flight[key] = self._tasks.create_task(push(), name=f"{to} {source}")

    def _queues(self, to: str) -> bool:
        return to == "remote_write" and self.writer is not None and self.writer.journal is not None

    def _count(self, to: str, result: str) -> None:
        self.pushes[(to, result)] = self.pushes.get((to, result), 0) + 1

    async def _write(
        self,
        session: aiohttp.ClientSession,
        families: Sequence[exposition.Family],
        *,
        source: str,
        at: int | None,
        until: float,
    ) -> None:
        assert self.writer is not None
        result = await self.writer.push(session, families, deadline=until, source=source, now_ms=at)
        self._count("remote_write", "ok" if result.ok else "failed")
        dropped, _ = self.writer.dropped()
        if dropped:
            self.pushes[("remote_write", "dropped")] = dropped

    async def _drain(self, session: aiohttp.ClientSession, *, until: float) -> None:
        """Send what waits in the WAL for sources that push no more (a target gone since the
        WAL was written); the others' bodies go first in their own next push."""
        assert self.writer is not None
        for source in self.writer.pending_sources():
            running = self._in_flight.get(("remote_write", source))
            if running is None or running.done():
                await self.writer.drain(session, source, deadline=until)

    async def _push_gateway(self, session: aiohttp.ClientSession, *, until: float) -> None:
        assert self.settings.pushgateway_url
        grouping = [(k, v) for k, v in self.settings.labels if k in ("namespace", "pod")]
        result = await pushing.push_gateway(
            session,
            self.settings.pushgateway_url,
            self.settings.push_job,
            grouping or [("instance", socket.gethostname())],
            self.families(),
            timeout=max(0.05, until - time.monotonic()),
        )
        self._count("pushgateway", "ok" if result.ok else "failed")

    async def _push_loop(self, session: aiohttp.ClientSession) -> None:
        interval = self.settings.push_interval or self.settings.interval
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, next_at - loop.time()))
            if self.stopping.is_set():
                break
            while next_at <= loop.time():  # ticks missed while the loop was busy: no burst
                next_at += interval
            until = time.monotonic() + interval
            if self.writer is not None:
                stamp = int(time.time() * 1000)
                self._start_push(
                    "remote_write",
                    "agent",
                    functools.partial(
                        self._write,
                        session,
                        self._agent_families(),
                        source="agent",
                        at=stamp,
                        until=until,
                    ),
                )
            if self._queues("remote_write") and self.writer and self.writer.pending_sources():
                self._start_push(
                    "remote_write",
                    "backlog",
                    functools.partial(self._drain, session, until=until),
                )
            if self.settings.pushgateway_url:
                self._start_push(
                    "pushgateway",
                    "group",
                    functools.partial(self._push_gateway, session, until=until),
                )
        running = [t for t in (*self._in_flight.values(), *self._queued) if not t.done()]
        if running:
            await asyncio.wait(running, timeout=2)
        if self.writer is not None:  # leaving: end every series at once, not in five minutes
            until = time.monotonic() + 2
            for source in self.writer.sources():
                await self.writer.push(session, [], deadline=until, source=source)
            if self.writer.journal is not None:
                self.writer.journal.close()

    # -- exposing --------------------------------------------------------------------------

    def families(self) -> list[exposition.Family]:
        """Every target's families, StatsD's, and the agent's own, merged by name.

        What the merge leaves out (a family another source has with another type, a series
        another target already gave) is logged and counted when it first shows, not on every
        request that merges again.
        """
        sources = [t.source for t in self.targets]
        received = relabeling.apply(self.aggregator.families(), self.settings.rules)
        sources.append(
            merging.Source.of("statsd", relabeling.enrich(received, self.settings.labels))
        )
        families, conflicts = merging.merge(sources)
        active = {(c.kind, c.family, c.source) for c in conflicts}
        for conflict in conflicts:
            if (conflict.kind, conflict.family, conflict.source) not in self._active_conflicts:
                self.conflicts[conflict.kind] += 1
                log.warning("%s", conflict.message)
        self._active_conflicts = active
        own = relabeling.enrich(self._own(), self.settings.labels)
        return families + own

    def _agent_families(self) -> list[exposition.Family]:
        """StatsD's families and the agent's own, each with the pod's labels."""
        received = relabeling.apply(self.aggregator.families(), self.settings.rules)
        return relabeling.enrich([*received, *self._own()], self.settings.labels)

    def _own(self) -> list[exposition.Family]:
        rows = []
        for t in self.targets:
            labels = (("target", t.spec.url), *((k, v) for k, v in t.labels if k != "target"))
            labels = tuple((k, v) for k, v in labels if (k, v) not in self.settings.labels)
            rows.append(selfmetrics.TargetRow(labels, t.up, t.duration, t.samples, t.limited))
        return selfmetrics.families(
            rows,
            conflicts=self.conflicts,
            pushes=self.pushes,
            statsd=(
                self.statsd_packets,
                self.aggregator.malformed,
                self.aggregator.dropped,
                self.aggregator.set_values_dropped,
                self.aggregator.expired,
            ),
            remote_write=self._remote_write_figures(),
        )

    def _remote_write_figures(self) -> tuple[int, int | None, int] | None:
        writer = self.writer
        if writer is None:
            return None
        journal = writer.journal
        if journal is None:
            return writer.dropped()[1], None, 0
        return writer.dropped()[1], journal.size, journal.corrupt_records

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._ok)
        app.router.add_get("/ready", self._ready)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        content_type = rendering.negotiate(request.headers.get("Accept"))
        body = rendering.render(self.families(), content_type)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ready(self, request: web.Request) -> web.Response:
        if self.stopping.is_set():
            return web.Response(status=503, text="stopping\n")
        return web.Response(text="ready\n")

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, started: Callable[[Agent], None] | None = None) -> None:
        """Serve until ``stopping`` is set."""
        loop = asyncio.get_running_loop()
        transports: list[asyncio.BaseTransport] = []
        if self.settings.statsd_port:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Statsd(self),
                local_addr=(self.settings.statsd_host, self.settings.statsd_port),
            )
            transports.append(transport)
            self.statsd_port = transport.get_extra_info("sockname")[1]
            _grow_receive_buffer(transport.get_extra_info("socket"))
        if self.settings.statsd_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.statsd_socket)
            # A bound socket of our own: uvloop takes only (host, port) as local_addr.
            unix_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            unix_socket.bind(self.settings.statsd_socket)
            unix_socket.setblocking(False)
            _grow_receive_buffer(unix_socket)
            unix, _ = await loop.create_datagram_endpoint(lambda: _Statsd(self), sock=unix_socket)
            transports.append(unix)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info(
            "metrics agent on :%s, scraping %s, StatsD on %s",
            self.port,
            ", ".join(t.url for t in self.settings.targets) or "nothing",
            self.statsd_port or "no port",
        )
        if started is not None:
            started(self)
        try:
            async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                for target in self.targets:
                    self._start_scraping(session, target)
                if self.settings.annotations_file:
                    tasks.create_task(self._watch_annotations(session), name="annotations")
                if self.writer is not None or self.settings.pushgateway_url:
                    tasks.create_task(self._push_loop(session), name="push")
                await self.stopping.wait()
        finally:
            for endpoint in transports:
                endpoint.close()
            await runner.cleanup()
            log.info("metrics agent stopped")

    def stop(self) -> None:
        self.stopping.set()
