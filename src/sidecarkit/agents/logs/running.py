"""``sidecarkit agent logs``: follow the app's log files and deliver every line, at least once.

The agent builds one ``shipping.Shipper`` from its settings: a tailer and a parser per source,
the sinks, and the offsets file. It serves ``/healthz``, ``/ready`` (once the sources are open
and the saved offsets loaded) and ``/metrics``. On SIGTERM it reads to the end of what the app
wrote, ships it, waits for the sinks up to ``drain_timeout``, saves the offsets of what was
confirmed and exits; whatever a sink did not confirm by then is read again by the next start.
With ``SIDECARKIT_EXIT_WHEN_DONE`` (legacy Job pods) it also exits once every named app
container has written its ``.done`` file into ``SIDECARKIT_LIFECYCLE_DIR``, after shipping
everything.

On SIGHUP, or when the ``--config`` file's content changes (looked at every
``CONFIG_POLL`` seconds, which sees a ConfigMap's ``..data`` swap), the config is loaded again
and applied between two batches (``reloading``); a config that does not load is refused with
its error in the log, the running one stays, and ``sidecarkit_logs_config_*`` say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sidecarkit import errors, metering
from sidecarkit import watching as filewatching
from sidecarkit.agents.logs import (
    admin,
    lanes,
    offsets,
    parsing,
    records,
    reloading,
    shipping,
    sinks,
    tailing,
    watching,
)
from sidecarkit.agents.logs.settings import Settings, effective_sources, pod_labels

__all__ = ["CONFIG_POLL", "Agent"]

CONFIG_POLL: Final = 1.0
"""Seconds between looks at the config file's content."""

log = logging.getLogger("sidecarkit.agent.logs")


def _is_raw(spec: parsing.ParserSpec) -> bool:
    return spec.format == "raw" and not spec.multiline and not spec.multiline_start


def metadata(settings: Settings) -> dict[str, str]:
    """What a ``modify`` stage's ``copy`` can name: the pod's identity and static labels
    (``pod``, ``namespace``, ``node``, ``container``, ...) and ``labels.NAME`` for every pod
    label in the Downward API volume."""
    found = dict(settings.labels)
    for key, value in pod_labels(settings.podinfo_dir, ("*",)).items():
        found[f"labels.{key}"] = value
    return found


def _labels(settings: Settings) -> dict[str, str]:
    labels = dict(settings.labels)
    labels.update(pod_labels(settings.podinfo_dir, settings.pod_labels))
    return labels


class Agent:
    def __init__(
        self,
        settings: Settings,
        *,
        load: Callable[[], Settings] | None = None,
        config_path: str | None = None,
    ) -> None:
        self.settings = settings
        self.load = load
        """Reads the config again (file, env, flags) for a reload; None: no reloads."""
        self.config_watch = (
            filewatching.FileWatch((Path(config_path),)) if config_path and load else None
        )
        self.stopping = asyncio.Event()
        self.ready = False
        self.port: int | None = None
        self.metrics = metering.Registry()

        watcher = watching.Watcher(watching.directories(s.paths for s in settings.sources))

        def tailer(paths: str) -> tailing.Tailer:
            if paths == "-":
                return tailing.StdinTailer(
                    read_size=settings.read_size,
                    max_line=settings.max_line,
                    long_lines=settings.long_lines,
                )
            return tailing.Tailer(
                paths,
                read_size=settings.read_size,
                max_line=settings.max_line,
                long_lines=settings.long_lines,
                count_lines=False,  # the shipper counts while it splits
                look_every=(
                    max(settings.tuning.poll, watching.SAFETY_POLL)
                    if watcher.watches(paths)
                    else settings.tuning.poll
                ),
            )

        labels = _labels(settings)
        pipeline = None
        if settings.stages:
            from sidecarkit.agents.logs import staging  # noqa: PLC0415 - only with stages

            pipeline = staging.compile(
                settings.stages, metadata=metadata(settings), metrics=self.metrics
            )
        sources = [
            shipping.Source(
                s.name,
                tailer(s.paths),
                parsing.compile(s.parser),
                raw=_is_raw(s.parser) and pipeline is None,
                stages=pipeline,
            )
            for s in effective_sources(settings)
        ]
        store = (
            offsets.OffsetStore(Path(settings.offsets_dir) / "offsets.json")
            if settings.offsets_dir
            else None
        )
        self.shipper = shipping.Shipper(
            sources,
            [sinks.create(spec) for spec in settings.sinks],
            labels=labels,
            store=store,
            tuning=settings.tuning,
            metrics=self.metrics,
            watcher=watcher,
            routes=[spec.match for spec in settings.sinks],
            spool_dir=Path(settings.offsets_dir) / "spool" if settings.offsets_dir else None,
        )
        for lane, spec in zip(self.shipper.lanes, settings.sinks, strict=True):
            lane.spec = reloading.lane_spec(spec)
        m = self.metrics
        self.m_reloads = m.add(
            metering.Counter(
                "sidecarkit_logs_config_reloads_total",
                "Reloads of the config, by result.",
                ("result",),
            )
        )
        self.m_reload_ok = m.add(
            metering.Gauge(
                "sidecarkit_logs_config_last_reload_successful",
                "1 if the last reload was applied (or none was tried), 0 if it was refused.",
            )
        )
        self.m_reload_ok.set(1)
        self.m_sink_pending = m.add(
            metering.Gauge(
                "sidecarkit_logs_sink_pending_bytes",
                "Bytes of input routed to a sink and not yet confirmed by it.",
                ("sink",),
            )
        )
        self.m_sink_lag = m.add(
            metering.Gauge(
                "sidecarkit_logs_sink_lag_seconds",
                "Age of the oldest batch a sink has not confirmed (0 when it is idle).",
                ("sink",),
            )
        )
        self.m_lag = m.add(
            metering.Gauge(
                "sidecarkit_logs_lag_bytes", "Bytes written but not yet delivered.", ("file",)
            )
        )
        self.m_truncations = m.add(
            metering.Gauge(
                "sidecarkit_logs_truncations",
                "Files truncated in place (copytruncate); lines written just before may be lost.",
                ("source",),
            )
        )
        self.m_long = m.add(
            metering.Gauge(
                "sidecarkit_logs_long_lines",
                "Lines longer than max_line (split or truncated).",
                ("source",),
            )
        )
        self.m_cut = m.add(
            metering.Gauge(
                "sidecarkit_logs_truncated_bytes",
                "Bytes dropped from too-long lines (long_lines: truncate).",
                ("source",),
            )
        )
        self.m_lost = m.add(
            metering.Counter(
                "sidecarkit_logs_lost_bytes_total",
                "Bytes known to be written and never read: truncated (copytruncate) or deleted "
                "before they were, and found in no copy.",
                ("source",),
            )
        )
        self.m_lost_lines = m.add(
            metering.Counter(
                "sidecarkit_logs_lost_lines_total",
                "Lines of the lost bytes whose number is known: read but not delivered before "
                "the agent stopped, of a file gone when it started again. Bytes lost before "
                "they were read have no known line count (see sidecarkit_logs_losses_total).",
                ("source",),
            )
        )
        self.m_losses = m.add(
            metering.Counter(
                "sidecarkit_logs_losses_total",
                "Times bytes were lost, by reason: truncated (copytruncate, no copy found), "
                "truncated_past_copy (written between the copy and the truncation), deleted "
                "(while the agent was down).",
                ("source", "reason"),
            )
        )
        self.m_unreadable = m.add(
            metering.Gauge(
                "sidecarkit_logs_files_unreadable",
                "Files the glob matches that could not be opened at the last look.",
                ("source",),
            )
        )
        self.m_files = m.add(
            metering.Gauge("sidecarkit_logs_files", "Files being followed.", ("source",))
        )

    async def _metrics(self) -> tuple[int, str, bytes]:
        self.m_lag.values.clear()
        self.m_sink_pending.values.clear()
        self.m_sink_lag.values.clear()
        for path, lag in self.shipper.lag().items():
            self.m_lag.set(lag, path)
        for name, (pending, age) in self.shipper.sink_lag().items():
            self.m_sink_pending.set(pending, name)
            self.m_sink_lag.set(round(age, 3), name)
        for source in self.shipper.sources:
            t = source.tailer
            self.m_truncations.set(t.truncations, source.name)
            self.m_long.set(t.long_lines_seen, source.name)
            self.m_cut.set(t.truncated_bytes, source.name)
            self.m_files.set(len(t.files), source.name)
            self.m_lost.values[(source.name,)] = t.lost_bytes
            self.m_lost_lines.values[(source.name,)] = t.lost_lines
            for reason, count in t.losses.items():
                self.m_losses.values[(source.name, reason)] = count
            self.m_unreadable.set(len(t.unreadable), source.name)
        return 200, metering.CONTENT_TYPE, self.metrics.render()

    async def _healthz(self) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"ok\n"

    async def _ready(self) -> tuple[int, str, bytes]:
        if not self.ready:
            return 503, "text/plain", b"starting\n"
        return 200, "text/plain", b"ok\n"

    def _done(self) -> bool:
        tailers = [source.tailer for source in self.shipper.sources]
        if all(isinstance(t, tailing.StdinTailer) and t.ended for t in tailers):
            log.info("end of input")
            return True
        names = self.settings.exit_when_done
        return bool(names) and all(
            (Path(self.settings.lifecycle_dir) / f"{name}.done").exists() for name in names
        )

    async def run(self, *, started: Callable[[Agent], None] | None = None) -> None:
        server = await admin.serve(
            self.settings.host,
            self.settings.port,
            {"/healthz": self._healthz, "/ready": self._ready, "/metrics": self._metrics},
        )
        self.port = server.sockets[0].getsockname()[1] if server.sockets else self.settings.port
        shipper = self.shipper
        shipper.restore()
        for source in shipper.sources:
            source.tailer.discover()
        gc.freeze()  # start-up's objects live as long as the agent: out of every collection
        shipper.start()
        self.ready = True
        log.info(
            "logs agent on :%s, shipping %s to %s",
            self.port,
            ", ".join(s.paths for s in self.settings.sources),
            ", ".join(
                (s.name or s.kind) + (f" ({s.match.describe()})" if s.match else "")
                for s in self.settings.sinks
            ),
        )
        if started is not None:
            started(self)
        loop = asyncio.get_running_loop()
        watcher = None
        if self.load is not None:
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
            if self.config_watch is not None:
                with contextlib.suppress(OSError):
                    self.config_watch.accept(self.config_watch.changed() or ())
                watcher = loop.create_task(self._watch_config(), name="config watch")
        try:
            await shipper.run(self.stopping, self._done)
            deadline = time.monotonic() + self.settings.drain_timeout
            if not await shipper.drain(deadline):
                log.warning(
                    "sinks did not confirm %d bytes within %.0f s; they will be sent again "
                    "on the next start",
                    shipper.lead,
                    self.settings.drain_timeout,
                )
        finally:
            if watcher is not None:
                watcher.cancel()
            if self.load is not None:
                loop.remove_signal_handler(signal.SIGHUP)
            shipper.checkpoint(force=True)
            await shipper.close()
            server.close()
            await server.wait_closed()
            log.info("logs agent stopped")

    def stop(self) -> None:
        self.stopping.set()

    async def _watch_config(self) -> None:
        assert self.config_watch is not None
        while True:
            await asyncio.sleep(CONFIG_POLL)
            try:
                changed = self.config_watch.changed()
            except OSError:  # mid-swap of a ConfigMap, or gone: look again next time
                continue
            if changed is not None:
                self.reload("the config file changed")

    def reload(self, reason: str) -> bool:
        """Load the config again and apply it between two batches; a config that does not
        load (or whose sinks cannot be made) leaves the running one in force. True when the
        new config runs."""
        if self.load is None or self.stopping.is_set():
            return False  # shutting down: the drain ships with what runs
        if self.config_watch is not None:
            with contextlib.suppress(OSError):  # this reload reads what is there now
                self.config_watch.accept(self.config_watch.changed() or ())
        shipper = self.shipper
        made: list[records.Sink] = []
        try:
            new = self.load()
            reloading.check_sources(new)
            if new.stages:
                from sidecarkit.agents.logs import staging  # noqa: PLC0415

                staging.compile(new.stages, metadata=metadata(new))  # refused before any change
            specs = [reloading.lane_spec(spec) for spec in new.sinks]
            kept = lanes.kept(shipper.lanes, specs)
            for spec, lane in zip(new.sinks, kept, strict=True):
                if lane is None:
                    made.append(sinks.create(spec))
        except (ValueError, OSError, errors.SidecarkitError) as exc:
            for sink in made:
                asyncio.get_running_loop().create_task(sink.close(), name="closing a sink")
            return self._reloaded(False, f"config reload ({reason}) refused: {exc}")
        for key in reloading.fixed_changes(self.settings, new):
            log.warning("%s: changed, but stays as it runs until the agent restarts", key)
        new = reloading.keep_fixed(self.settings, new)
        shipper.seal()  # what was read so far goes out under the old routes
        pipeline = None
        if new.stages:
            from sidecarkit.agents.logs import staging  # noqa: PLC0415

            pipeline = staging.compile(new.stages, metadata=metadata(new), metrics=self.metrics)
        for source, given in zip(shipper.sources, effective_sources(new), strict=True):
            source.stages = pipeline
            source.raw = _is_raw(given.parser) and pipeline is None
        fresh = iter(made)
        wanted = [
            (spec, lane, None if lane is not None else next(fresh))
            for spec, lane in zip(specs, kept, strict=True)
        ]
        until = time.monotonic() + new.drain_timeout
        lanes.swap(shipper, wanted, [spec.match for spec in new.sinks], until=until)
        shipper.labels = _labels(new)
        shipper.tuning = new.tuning
        deliverer, tuning = shipper.deliverer, new.tuning
        deliverer.retry_initial, deliverer.retry_max = tuning.retry_initial, tuning.retry_max
        deliverer.max_retries = tuning.max_retries
        if shipper.spools is not None:
            shipper.spools.resize(tuning.spool_max)
        self.settings = new
        return self._reloaded(
            True,
            f"config reloaded ({reason}): {len(new.stages)} stage(s), sinks "
            + ", ".join(lane.sink.name for lane in shipper.lanes),
        )

    def _reloaded(self, ok: bool, message: str) -> bool:
        if ok:
            log.info("%s", message)
        else:
            log.error("%s; the running config stays in force", message)
        self.m_reloads.inc("success" if ok else "failure")
        self.m_reload_ok.set(int(ok))
        return ok
