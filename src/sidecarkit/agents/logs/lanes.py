"""One lane per sink: the batches routed to it, taken in order, one request at a time.

A lane ends in one of two ways when a reload drops or changes its sink (``Shipper.reconfigure``):

- **removed**: the lane finishes the batches already routed to it, retrying as usual, but only
  until ``until`` (the reload's time plus ``drain_timeout``); what its sink has not taken by
  then is given up, counted in ``sidecarkit_logs_events_dropped_total`` and logged, so that a
  sink nobody wants any more cannot hold the offsets back for good.
- **replaced** (same name, other settings): the batches queued and not yet started move at once
  to the new lane, ahead of the new batches; the one being sent finishes against the old sink,
  and if the old sink wants it again (an error, a 5xx, a partial answer), what is left of it
  moves to the new lane too instead of being retried. The new lane starts sending only once the
  old one has stopped, so the sink's batches keep their order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecarkit.agents.logs import delivering, records, routing, spooling

if TYPE_CHECKING:
    from sidecarkit.agents.logs import shipping

__all__ = ["Lane", "Mark", "Pending", "hand_over", "kept", "run", "swap", "wanting_events"]

log = logging.getLogger("sidecarkit.agent.logs")

Mark = tuple[Any, tuple[int, int], int, int, int]
"""A commit point: source (``shipping.Source``), file identity, generation, offset, line."""


@dataclass(slots=True, eq=False)
class Pending:
    marks: list[Mark]
    size: int
    """Bytes of input read into the batch: counted against ``max_lead`` until committed."""
    sealed_at: float
    routes: dict[int, int] = field(default_factory=dict)
    """Sinks (by lane index) that have yet to confirm their part, with its size in bytes."""
    held: int = 0
    """Bytes counted against ``max_inflight``: the largest part not yet confirmed."""
    done: bool = False


Item = tuple[Pending, records.Batch]


@dataclass(slots=True, eq=False)
class Lane:
    index: int
    """Unique in the agent's life: a lane made by a reload never takes an old one's number."""
    sink: records.Sink
    spec: Any = None
    """What the sink was made from; a reload keeps the lane when it is equal."""
    queue: asyncio.Queue[Item | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    current: Pending | None = None
    """The batch being delivered: its age is the sink's lag."""
    pending_bytes: int = 0
    """Bytes of input routed to the sink and not yet confirmed by it."""
    carry: deque[Item] = field(default_factory=deque)
    """Batches handed over by the lane this one replaces, sent before those of ``queue``."""
    before: Lane | None = None
    """The lane this one replaces: this one starts sending once that one has stopped."""
    after: Lane | None = None
    """The lane that replaces this one, which takes what this one has not sent."""
    retirement: delivering.Retirement = field(default_factory=delivering.Retirement)
    spool: spooling.Spool | None = None
    """Where this sink's batches go while it holds the others back (``spooling``)."""
    batch: records.Batch | None = None
    """The batch being delivered (``current``'s part for this sink)."""
    spooled: Path | None = None
    """The spool file of the batch being delivered: deleted, not confirmed, once it is taken."""


def hand_over(old: Lane, new: Lane, item: Item, *, front: bool) -> None:
    """Move ``item`` (a batch ``old`` had, or what is left of it) to ``new``."""
    pending, batch = item
    size = pending.routes.pop(old.index)
    old.pending_bytes -= size
    pending.routes[new.index] = size
    new.pending_bytes += size
    if not getattr(new.sink, "raw", False):
        batch = _with_events(batch)
    if front:
        new.carry.appendleft((pending, batch))
    else:
        new.carry.append((pending, batch))


def _with_events(batch: records.Batch) -> records.Batch:
    """``batch`` with its groups of bytes alone turned into events: made for sinks that write
    bytes, it goes to one that reads events."""
    if all(group.events or group.raw is None for group in batch.groups):
        return batch
    groups = [
        group
        if group.events or group.raw is None
        else records.Group(group.source, group.key, group.materialized(), group.time_ns, group.raw)
        for group in batch.groups
    ]
    return records.Batch(groups, batch.labels, batch.events, batch.size, batch.seq)


def wanting_events(lanes: list[Lane]) -> tuple[bool, bool, bool]:
    """What the sinks of ``lanes`` need from the reader: events (some sink does not write raw
    bytes), lines (some sink frames raw groups line by line), and whether every sink is local
    (a request costs nothing, so what was read is sent at once)."""
    sinks = [lane.sink for lane in lanes]
    return (
        any(not getattr(sink, "raw", False) for sink in sinks),
        any(getattr(sink, "wants_lines", False) for sink in sinks),
        bool(sinks) and all(getattr(sink, "local", False) for sink in sinks),
    )


async def run(shipper: shipping.Shipper, lane: Lane) -> None:
    """Deliver ``lane``'s batches until its queue says stop (``None``) or it hands over."""
    if lane.before is not None and lane.before.task is not None:
        await asyncio.wait([lane.before.task])
    deliverer = shipper.deliverer
    while True:
        stored = lane.spool.oldest() if lane.spool is not None and not lane.carry else None
        if stored is not None:  # spooled batches are older than any in memory
            lane.spooled, batch, wall = stored
            pending = Pending([], 0, time.monotonic() - max(0.0, time.time() - wall))
        else:
            item = lane.carry.popleft() if lane.carry else await lane.queue.get()
            if item is None:
                break
            pending, batch = item
            del item
        lane.current, lane.batch = pending, batch
        try:
            left = await deliverer.deliver(lane.sink, batch, lane.retirement)
        finally:
            lane.current = lane.batch = None
        spooled, lane.spooled = lane.spooled, None
        if left is not None and lane.after is not None:
            if spooled is None:  # a spooled batch stays in the spool, for the new lane
                hand_over(lane, lane.after, (pending, left), front=True)
            break
        del batch, left  # the records go now, not when the next batch comes
        if spooled is not None:
            assert lane.spool is not None
            lane.spool.remove(spooled)
            shipper.progress.set()  # a drain waits for the spools too
        else:
            shipper.confirmed(lane, pending)
    if lane.retirement.retired:
        if lane.retirement.dropped:
            log.error(
                "sink %s was removed by a reload and did not take %d events within "
                "drain_timeout: given up (counted in sidecarkit_logs_events_dropped_total)",
                lane.sink.name,
                lane.retirement.dropped,
            )
        shipper.retired.discard(lane)
        await lane.sink.close()


def kept(current: list[Lane], specs: Sequence[Any]) -> list[Lane | None]:
    """For each of ``specs``, the running lane made from an equal one (a reload keeps it, with
    its connection and queue), or None (a sink to make)."""
    return [next((lane for lane in current if lane.spec == spec), None) for spec in specs]


def swap(
    shipper: shipping.Shipper,
    wanted: Sequence[tuple[Any, Lane | None, records.Sink | None]],
    routes: Sequence[routing.Match | None],
    *,
    until: float,
) -> None:
    """Make ``wanted`` (spec, the lane to keep or None, the new sink or None) the shipper's
    lanes, routed by ``routes``. Call between batches: what was sealed before keeps the routes
    it was given. A running lane not wanted any more is retired (see the module's docstring):
    replaced when a new lane has its sink's name, else removed, given up at ``until``."""
    new: list[Lane] = []
    for spec, running, sink in wanted:
        if running is None:
            assert sink is not None
            running = Lane(shipper.made, sink, spec)  # noqa: PLW2901 - the lane to run
            if shipper.spools is not None:
                running.spool = shipper.spools.get(sink.name)
            shipper.made += 1
        new.append(running)
    for lane in shipper.lanes:
        if lane in new:
            continue
        name = lane.sink.name
        after = next((n for n in new if n.task is None and n.sink.name == name), None)
        if after is not None:
            lane.after, after.before = after, lane
            while lane.carry:  # handed to it by a lane it replaced, and not yet sent
                hand_over(lane, after, lane.carry.popleft(), front=False)
            while not lane.queue.empty():
                item = lane.queue.get_nowait()
                if item is not None:
                    hand_over(lane, after, item, front=False)
            lane.retirement.retire(hand_back=True, until=None)
        else:
            lane.retirement.retire(hand_back=False, until=until)
        lane.queue.put_nowait(None)
        shipper.retired.add(lane)
    shipper.lanes = new
    shipper.router = routing.Router(routes)
    shipper.events_wanted, shipper.lines_wanted, shipper.local = wanting_events(new)
    if not shipper.router.everything:
        shipper.meters.unrouted.inc(amount=0)
    for lane in new:
        if lane.task is None:
            lane.task = asyncio.create_task(run(shipper, lane), name=f"sink {lane.sink.name}")
