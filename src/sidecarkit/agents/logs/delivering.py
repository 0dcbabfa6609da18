"""Delivering one batch to one sink: retries with back-off, refusals counted and logged.

The shipper runs one delivery at a time per sink (``shipping.Shipper``'s lanes); ``deliver``
returns once the sink has taken, refused or (with ``max_retries``) given up every event of the
batch. A sink's answer (``records.Outcome``) says what it took, what it refused for good and
what to send again; an exception means "send it all again". Retries back off exponentially
from ``retry_initial`` to ``retry_max`` with jitter, honouring ``Retry-After`` up to 300 s, and
go on forever unless ``max_retries`` is set (then what is given up is counted as dropped).

A reload that drops or changes the sink ends its retries early (``Retirement``): a removed
sink's batch is given up at ``until``, a replaced one's is handed back for the new sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Final

from sidecarkit.agents.logs import meters, records

__all__ = ["REFUSAL_LOG_EVERY", "Deliverer", "Retirement"]

log = logging.getLogger("sidecarkit.agent.logs")

REFUSAL_LOG_EVERY: Final = 10.0
"""Seconds between warnings about one sink's refused events."""


@dataclass(slots=True, eq=False)
class Retirement:
    """Whether a reload retired a sink, told to the delivery under way (the sink's lane)."""

    retired: bool = False
    hand_back: bool = False
    """Return what the sink wants again instead of retrying it: a new sink takes it."""
    until: float | None = None
    """Monotonic time after which what the sink did not take is given up (dropped)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on retirement: a delivery waiting to retry looks again at once."""
    dropped: int = 0
    """Events given up at ``until`` (logged once, when the sink's lane ends)."""

    def overdue(self) -> bool:
        """Retired for good and past ``until``: what the sink has not taken is given up."""
        return (
            self.retired
            and not self.hand_back
            and self.until is not None
            and time.monotonic() >= self.until
        )

    def retire(self, *, hand_back: bool, until: float | None) -> None:
        self.retired, self.hand_back, self.until = True, hand_back, until
        self.wake.set()


def _transient(exc: BaseException) -> bool:
    """Network trouble (refused, reset, timed out, or an HTTP client's own errors): expected
    and retried quietly, unlike a failure that points at a bug."""
    return isinstance(exc, OSError | TimeoutError) or type(exc).__module__.startswith("aiohttp")


class Deliverer:
    """Sends batches to sinks until each is settled, counting in ``meters``."""

    def __init__(
        self,
        meters: meters.Meters,
        *,
        retry_initial: float,
        retry_max: float,
        max_retries: int | None,
    ) -> None:
        self.meters = meters
        self.retry_initial, self.retry_max, self.max_retries = retry_initial, retry_max, max_retries
        self._refusals: dict[str, tuple[float, int]] = {}
        """Per sink: when its refusals were last logged, and how many since."""

    async def deliver(
        self, sink: records.Sink, batch: records.Batch, retirement: Retirement | None = None
    ) -> records.Batch | None:
        """Send ``batch`` to ``sink`` until every event is taken, refused or given up; or,
        once ``retirement`` says to hand back, until the sink wants some again: then what it
        wants is returned."""
        attempt = 0
        current: records.Batch | None = batch
        if retirement is not None and retirement.overdue():  # not even tried: it is gone
            self._give_up(sink, batch, retirement)
            return None
        while current is not None:
            try:
                outcome = await sink.send(current)
            except Exception as exc:  # whatever it is, the batch is kept
                outcome = records.Outcome(retry=current)
                if _transient(exc):
                    self.meters.errors.inc(sink.name, type(exc).__name__)
                    if attempt == 0:
                        log.warning("sink %s: %s; retrying", sink.name, exc or type(exc).__name__)
                else:
                    # A bug must not lose lines: the batch is retried like any failure.
                    self.meters.errors.inc(sink.name, "internal")
                    log.exception("sink %s failed unexpectedly; retrying", sink.name)
            retry = outcome.retry
            settled = current.events - (retry.events if retry is not None else 0)
            if outcome.rejected:
                for reason, count in (outcome.reasons or {"rejected": outcome.rejected}).items():
                    self.meters.rejected.inc(sink.name, reason, amount=count)
                self._refused(sink.name, current.seq, outcome)
            if settled - outcome.rejected > 0:
                self.meters.shipped.inc(sink.name, amount=settled - outcome.rejected)
            if retry is None:
                self.meters.bytes_shipped.inc(sink.name, amount=batch.size)
                return None
            if retirement is not None and retirement.retired:
                if retirement.hand_back:
                    return retry
                if retirement.overdue():
                    self._give_up(sink, retry, retirement)
                    return None
            attempt += 1
            if self.max_retries is not None and attempt > self.max_retries:
                self.meters.dropped.inc(sink.name, amount=retry.events)
                log.error(
                    "sink %s: giving up on %d events after %d retries (max_retries)",
                    sink.name,
                    retry.events,
                    attempt - 1,
                )
                return None
            self.meters.retries.inc(sink.name)
            delay = min(self.retry_max, self.retry_initial * 2 ** (attempt - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, 300.0))
            if retirement is None:
                await asyncio.sleep(delay)
            elif retirement.retired:  # retry until ``until``, no later
                if retirement.until is not None:
                    delay = max(0.0, min(delay, retirement.until - time.monotonic()))
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(retirement.wake.wait(), delay)
                if retirement.hand_back:  # replaced while waiting: the new sink sends it
                    return retry
            current = retry
        return None

    def _give_up(self, sink: records.Sink, batch: records.Batch, retirement: Retirement) -> None:
        self.meters.dropped.inc(sink.name, amount=batch.events)
        retirement.dropped += batch.events

    def _refused(self, sink: str, seq: int, outcome: records.Outcome) -> None:
        """Log refused events, with the receiver's words and a sample; at most one warning per
        sink every ``REFUSAL_LOG_EVERY`` seconds, so a receiver refusing everything does not
        flood the agent's own log (the counter has every refusal)."""
        now = time.monotonic()
        last, quiet = self._refusals.get(sink, (-REFUSAL_LOG_EVERY, 0))
        if now - last < REFUSAL_LOG_EVERY:
            self._refusals[sink] = (last, quiet + outcome.rejected)
            return
        self._refusals[sink] = (now, 0)
        log.warning(
            "sink %s refused %d event(s) of batch %d for good (not retried)%s: %s%s%s",
            sink,
            outcome.rejected,
            seq,
            f", {quiet} more since the last warning" if quiet else "",
            ", ".join(f"{k} x{v}" for k, v in outcome.reasons.items()) or "no reason given",
            f"; {outcome.detail}" if outcome.detail else "",
            f"; e.g. {outcome.sample}" if outcome.sample else "",
        )
