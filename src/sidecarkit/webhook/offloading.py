"""Large admission reviews decided in a worker process, so the event loop stays responsive.

A pod is usually a few KiB and is decided in well under a millisecond on the event loop. A
review body of hundreds of KiB (thousands of containers: legal, if absurd) takes tens to
hundreds of milliseconds to parse, decide and encode, and Python threads would still share one
interpreter lock with the loop. Bodies of at least ``Settings.offload_body`` bytes therefore go,
as bytes, to a worker process that parses, decides and renders the answer, and hands back the
finished body; the loop never touches the large JSON.

The worker gets the config as its source text and caches the parsed form, so a reload reaches
it with the next review. ``workers`` processes run at once and ``queue`` more reviews may wait;
beyond that a large review is refused with 503 at once, so a flood of huge pods costs at most
that much memory and never delays small pods.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from dataclasses import dataclass
from types import MappingProxyType

from sidecarkit import configfiles, errors
from sidecarkit.injection import configs, facts
from sidecarkit.webhook import admitting, reviews

__all__ = ["Offloaded", "Offloader"]


@dataclass(frozen=True, slots=True)
class Offloaded:
    """A worker's answer: an HTTP status and body, and what to count."""

    status: int
    body: bytes
    decision: str
    reason: str
    error: str | None = None


_configs: dict[str | None, configs.Config] = {}


def _config(text: str | None, source: str) -> configs.Config:
    config = _configs.get(text)
    if config is None:
        _configs.clear()  # one config at a time: a reload replaces it
        config = configs.Config() if text is None else configfiles.parse_config(text, source=source)
        _configs[text] = config
    return config


def decide(
    body: bytes,
    config_text: str | None,
    config_source: str,
    kubernetes_version: tuple[int, int] | None,
    labels: tuple[tuple[str, str], ...],
) -> Offloaded:
    """Parse, decide and render one review (in the worker). Never raises."""
    try:
        review = reviews.parse(body)
    except reviews.BadReview as exc:
        text = f"sidecarkit: not an AdmissionReview: {exc}\n".encode()
        return Offloaded(400, text, "invalid", "bad-review")
    try:
        config = _config(config_text, config_source)
    except errors.ConfigError as exc:  # the server checked it already; say so if not
        verdict = admitting.Verdict(
            "denied", "internal-error", status=(500, f"sidecarkit: config: {exc}")
        )
    else:
        cluster = facts.Facts(
            kubernetes_version=kubernetes_version, namespace_labels=MappingProxyType(dict(labels))
        )
        verdict = admitting.decide(review.request, config, cluster)
    error = None if verdict.error is None else f"{type(verdict.error).__name__}: {verdict.error}"
    body = admitting.answer(review, verdict)
    return Offloaded(200, body, verdict.decision, verdict.reason, error)


class Offloader:
    """A lazily started pool of worker processes with a bounded queue."""

    def __init__(self, *, workers: int = 1, queue: int = 4) -> None:
        self.workers = workers
        self.slots = asyncio.Semaphore(workers + queue)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def full(self) -> bool:
        return self.slots.locked()

    async def decide(
        self,
        body: bytes,
        config_text: str | None,
        config_source: str,
        cluster: facts.Facts,
    ) -> Offloaded:
        """Decide ``body`` in a worker; callers check ``full()`` first, to refuse, not wait."""
        async with self.slots:
            labels = tuple(sorted(cluster.namespace_labels.items()))
            try:
                if self._pool is None:
                    # forkserver: a clean child, not a fork of a process with a loop and threads.
                    context = multiprocessing.get_context("forkserver")
                    self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, context)
                future = self._pool.submit(
                    decide, body, config_text, config_source, cluster.kubernetes_version, labels
                )
                return await asyncio.wrap_future(future)
            except concurrent.futures.BrokenExecutor as exc:  # a worker died (OOM kill?)
                self.close()
                message = f"sidecarkit: the worker deciding large reviews died ({exc}); retry\n"
                return Offloaded(503, message.encode(), "invalid", "worker-died", str(exc))
            except OSError as exc:  # cannot start one (no writable TMPDIR, no processes left)
                self.close()
                message = (
                    f"sidecarkit: cannot start the worker for large reviews ({exc}); give the "
                    "webhook a writable TMPDIR\n"
                )
                return Offloaded(503, message.encode(), "invalid", "worker-failed", str(exc))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
