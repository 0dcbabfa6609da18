"""``sidecarkit agent logs``: tail the app's log files and ship every line, at least once.

This first version ships to stdout, one JSON record per line (``time``, ``file``, ``log``, and
the pod's identity), which the container runtime collects like any container's output. Offsets
are saved only after a batch was written and flushed; on SIGTERM the agent reads to the end of
what the app wrote, ships it, saves offsets and exits. With ``SIDECARKIT_EXIT_WHEN_DONE`` (legacy
Job pods) it also exits once every named app container has written its ``.done`` file into
``SIDECARKIT_LIFECYCLE_DIR``, after shipping everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from sidecarkit import metering
from sidecarkit.agents.logs import tailing

__all__ = ["Agent", "Settings"]

log = logging.getLogger("sidecarkit.agent.logs")


@dataclass(frozen=True, slots=True)
class Settings:
    paths: str
    """Glob of the files to ship, e.g. ``/var/log/app/*.log``."""
    offsets_dir: str | None = None
    """Where offsets are saved; in the shared volume, so they survive agent restarts."""
    host: str = "0.0.0.0"
    port: int = 15100
    """Port of ``/healthz``, ``/ready`` and ``/metrics``."""
    poll: float = 0.2
    """Seconds between looks at the files."""
    identity: tuple[tuple[str, str], ...] = ()
    """Labels added to every record: the pod's identity."""
    exit_when_done: tuple[str, ...] = ()
    """App containers whose ``<name>.done`` file ends the agent (legacy Job pods)."""
    lifecycle_dir: str = "/run/sidecarkit"


class Agent:
    def __init__(self, settings: Settings, *, out: Callable[[bytes], None] | None = None) -> None:
        self.settings = settings
        offsets = Path(settings.offsets_dir) / "offsets.json" if settings.offsets_dir else None
        self.tailer = tailing.Tailer(settings.paths, offsets)
        self.out = out or self._stdout
        self.stopping = asyncio.Event()
        self.port: int | None = None
        self.metrics = metering.Registry()
        self.lines = self.metrics.add(
            metering.Counter("sidecarkit_logs_lines_shipped_total", "Lines shipped.")
        )
        self.read_bytes = self.metrics.add(
            metering.Gauge("sidecarkit_logs_bytes_read", "Bytes read from the log files.")
        )
        self.lag = self.metrics.add(
            metering.Gauge(
                "sidecarkit_logs_lag_bytes",
                "Bytes written but not yet shipped, per file.",
                ("file",),
            )
        )
        self.lost = self.metrics.add(
            metering.Gauge(
                "sidecarkit_logs_truncations_possibly_lost",
                "Truncations (copytruncate) that may have dropped unread lines.",
            )
        )

    @staticmethod
    def _stdout(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def ship(self, *, final: bool = False) -> int:
        lines = self.tailer.poll(final=final)
        if not lines:
            return 0
        identity = dict(self.settings.identity)
        now = time.time()
        batch = b"".join(
            orjson.dumps({"time": now, "file": line.path, "log": line.text, **identity}) + b"\n"
            for line in lines
        )
        self.out(batch)  # written and flushed: now, and only now, the offsets may move
        self.tailer.commit(lines)
        self.tailer.save()
        self.lines.inc(amount=len(lines))
        return len(lines)

    def _done(self) -> bool:
        names = self.settings.exit_when_done
        return bool(names) and all(
            (Path(self.settings.lifecycle_dir) / f"{name}.done").exists() for name in names
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        self.read_bytes.set(self.tailer.bytes_read)
        self.lost.set(self.tailer.possibly_lost)
        self.lag.values.clear()
        for path, lag in self.tailer.lag().items():
            self.lag.set(lag, path)
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": metering.CONTENT_TYPE}
        )

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def run(self, *, started: Callable[[Agent], None] | None = None) -> None:
        self.tailer.load()
        app = web.Application()
        app.router.add_get("/healthz", self._ok)
        app.router.add_get("/ready", self._ok)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info("logs agent on :%s, shipping %s to stdout", self.port, self.settings.paths)
        if started is not None:
            started(self)
        try:
            while not self.stopping.is_set():
                self.ship()
                if self._done():
                    log.info("every app container is done; shipping the rest and exiting")
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.settings.poll)
        finally:
            while self.ship(final=True):  # read to the end of what the app wrote
                pass
            self.tailer.close()
            await runner.cleanup()
            log.info("logs agent stopped")

    def stop(self) -> None:
        self.stopping.set()


def from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    identity = tuple(
        (label, env[var])
        for label, var in (
            ("pod", "SIDECARKIT_POD_NAME"),
            ("namespace", "SIDECARKIT_POD_NAMESPACE"),
            ("node", "SIDECARKIT_NODE_NAME"),
        )
        if env.get(var)
    )
    return Settings(
        paths=env.get("SIDECARKIT_LOGS_PATHS", "/var/log/app/*.log"),
        offsets_dir=env.get("SIDECARKIT_LOGS_OFFSETS_DIR"),
        port=int(env.get("SIDECARKIT_ADMIN_PORT", "15100")),
        identity=identity,
        exit_when_done=tuple(n for n in env.get("SIDECARKIT_EXIT_WHEN_DONE", "").split(",") if n),
        lifecycle_dir=env.get("SIDECARKIT_LIFECYCLE_DIR", "/run/sidecarkit"),
    )
