"""From files to sinks, at least once: read, parse, batch, deliver, then commit offsets.

The log file is the buffer. The ``Shipper`` reads only while the bytes in flight (sealed batches
not yet confirmed plus the batch being filled) stay under ``max_inflight``; when a sink stalls it
stops reading, memory stays flat, and the unread lines wait in the file.

Every sealed batch goes to the sinks whose ``match`` rules its records satisfy (``routing``;
a sink without a rule takes everything), each sink taking its batches in order, one request at
a time (``delivering``: a sink's answer says what it took, refused for good or wants again;
retries back off and go on unless ``max_retries`` is set). Once *every* sink the batch went to
is done with it, and with every batch before it, the offsets of the lines it carried are
committed; committed offsets are saved atomically at most every ``checkpoint_interval`` seconds
and on exit. After a crash the agent resumes from there, so what it replays is at most what was
not yet confirmed.

Lines a parser holds (an unfinished multiline record, a partial CRI line) are not committed
until the record they belong to is shipped: the commit point of a chunk is its end minus the
parser's ``held_bytes``.

Two bounds hold reading back. ``max_inflight`` bounds memory: the bytes of batches some sink has
not yet confirmed (a batch's records are let go as soon as each of its sinks has them).
``max_lead`` bounds how far reading runs ahead of the committed offsets, which is what a crash
replays. One stalled sink therefore does not stop the others at once: they keep receiving until
the records waiting for it fill ``max_inflight``, or until reading is ``max_lead`` bytes past its
oldest unconfirmed batch; then reading pauses for all of them (back-pressure, nothing dropped)
until it recovers. The lines wait in the file meanwhile. With ``offsets_dir`` set, a sink that
holds the others back for ``spool_after`` seconds has its batches spooled to disk instead, up to
``spool_max`` bytes, and the others go on (``spooling``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sidecarkit import metering
from sidecarkit.agents.logs import (
    delivering,
    lanes,
    meters,
    offsets,
    records,
    routing,
    spooling,
    tailing,
    watching,
)
from sidecarkit.agents.logs.tuning import Tuning

__all__ = ["Shipper", "Source", "Tuning"]

log = logging.getLogger("sidecarkit.agent.logs")


class Parser(Protocol):
    held_bytes: int

    @property
    def held_lines(self) -> int: ...

    def feed(self, lines: list[str], first: int, now: float) -> list[records.Event]: ...

    def flush(self, now: float, *, force: bool = False) -> list[records.Event]: ...


@dataclass(slots=True, eq=False)
class Source:
    name: str
    tailer: tailing.Tailer
    make_parser: Callable[[], Parser]
    raw: bool = False
    """The parser keeps lines as they are: a chunk can travel as its bytes."""
    stages: Callable[[list[records.Event], int], list[records.Event]] | None = None
    """Processing stages run on the parsed events of each group (``staging.Pipeline``)."""
    parsers: dict[tuple[int, int, int], Parser] = field(default_factory=dict)


class Shipper:
    def __init__(
        self,
        sources: list[Source],
        sinks: list[records.Sink],
        *,
        labels: dict[str, str],
        store: offsets.OffsetStore | None = None,
        tuning: Tuning | None = None,
        metrics: metering.Registry | None = None,
        watcher: watching.Watcher | None = None,
        routes: Sequence[routing.Match | None] | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self.sources = sources
        self.watcher = watcher
        self.wake = asyncio.Event()
        """Set by inotify when a watched directory changed: look at the files now."""
        self.labels = labels
        self.store = store
        self.tuning = tuning or Tuning()
        self.lanes = [lanes.Lane(n, sink) for n, sink in enumerate(sinks)]
        self.made = len(self.lanes)
        self.spools = None
        if spool_dir is not None and self.tuning.spool_max:  # 0: no spool
            self.spools = spooling.Spools(spool_dir, self.tuning.spool_max)
            self.spools.warn_unknown({sink.name for sink in sinks})
        for lane in self.lanes:
            lane.spool = self.spools.get(lane.sink.name) if self.spools is not None else None
        """Lanes made so far: the next one's index."""
        self.retired: set[lanes.Lane] = set()
        """Lanes a reload took away, finishing (or handing over) what they had."""
        self.router = routing.Router(routes or [None] * len(sinks))
        self.events_wanted, self.lines_wanted, self.local = lanes.wanting_events(self.lanes)
        """Some sink reads events; some frames raw groups line by line (split them once here,
        counting them too); every sink writes locally (stdout, a file: a request costs nothing,
        so what was read is sent as soon as the files are caught up with)."""
        self.pending: deque[lanes.Pending] = deque()
        self.inflight = 0
        """Bytes of batches not yet confirmed by all their sinks (held in memory)."""
        self.lead = 0
        """Bytes read and not yet committed (the batches of ``pending``)."""
        self.seq = 0
        self._groups: list[records.Group] = []
        self._sizes: list[int] = []
        self._marks: list[lanes.Mark] = []
        self._size = 0
        self._events = 0
        self._since: float | None = None
        self._saved_at = time.monotonic()
        self._dirty = False
        self._unsynced = False
        self._turn = 0
        self._written_at = 0.0
        self._write_cost = 0.0
        """How long the last save took: saves are spaced to ten times that."""
        self._changes = self._grown = 0
        """The tailers' ``changes`` and ``grown`` at the last save: files that appeared or left
        the glob are saved at once, growth every ``checkpoint_interval``, even while nothing is
        delivered, so a restart finishes them."""
        self.progress = asyncio.Event()
        self.metrics = metrics or metering.Registry()
        self.meters = meters.Meters.add_to(self.metrics)
        if not self.router.everything:
            self.meters.unrouted.inc(amount=0)  # routing on: 0 says so, where no line says nothing
        self.deliverer = delivering.Deliverer(
            self.meters,
            retry_initial=self.tuning.retry_initial,
            retry_max=self.tuning.retry_max,
            max_retries=self.tuning.max_retries,
        )

    # --- reading ------------------------------------------------------------------------------

    def read(self, *, final: bool = False) -> int:
        """Read what the budget allows, parse it into the open batch; bytes read.

        Every source is polled even when the budget is spent: new files are opened and
        rotations followed while the sinks hold reading back, so a file created and rotated
        away (or deleted) during an outage is still read once they catch up."""
        now = time.monotonic()
        room = max(self.tuning.batch_bytes - self._size, min(self.tuning.batch_bytes, 64 << 10))
        budget = max(0, min(self._room(), room))
        total = 0
        sources = self.sources
        if len(sources) > 1:  # take turns: the first source cannot starve the others
            self._turn = (self._turn + 1) % len(sources)
            sources = sources[self._turn :] + sources[: self._turn]
        for source in sources:
            before = source.tailer.bytes_read
            for chunk in source.tailer.poll(budget, final=final):
                self._take(source, chunk, now)
                total += len(chunk.data)
            read = source.tailer.bytes_read - before
            budget = max(0, budget - read)
            if read:
                self.meters.bytes.inc(source.name, amount=read)
        self._flush_parsers(now, force=final)
        return total

    def _take(self, source: Source, chunk: tailing.Chunk, now: float) -> None:
        f = chunk.file
        key = (f.dev, f.inode, chunk.generation)
        wall = time.time_ns()
        if source.raw and not self.events_wanted:
            group = records.Group(f.path, f.key, [], wall, chunk.data, first=chunk.first)
            if self.lines_wanted:
                group.raw_lines = parts = chunk.data.split(b"\n")
                parts.pop()
                if chunk.lines < 0:
                    source.tailer.counted(chunk, len(parts))
            elif chunk.lines < 0:
                source.tailer.counted(chunk, chunk.data.count(b"\n"))
            self.meters.read.inc(source.name, amount=chunk.lines)
            self._add(group, chunk.lines, len(chunk.data))
            self._marks.append(
                (source, f.identity, chunk.generation, chunk.end, chunk.first + chunk.lines)
            )
            return
        parser = source.parsers.get(key)
        if parser is None:
            parser = source.parsers[key] = source.make_parser()
        text = chunk.data.decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        lines.pop()
        if chunk.lines < 0:
            source.tailer.counted(chunk, len(lines))
        self.meters.read.inc(source.name, amount=chunk.lines)
        events = parser.feed(lines, chunk.first, now)
        if events and source.stages is not None:
            events = source.stages(events, wall)
        if events:
            group = records.Group(f.path, f.key, events, wall, chunk.data if source.raw else None)
            self._add(group, len(events), len(chunk.data))
        else:
            self._size += len(chunk.data)
        held_lines = parser.held_lines
        self._marks.append(
            (
                source,
                f.identity,
                chunk.generation,
                chunk.end - parser.held_bytes,
                chunk.first + chunk.lines - held_lines,
            )
        )

    def _flush_parsers(self, now: float, *, force: bool) -> None:
        for source in self.sources:
            for key, parser in list(source.parsers.items()):
                if not parser.held_bytes and not force:
                    continue
                events = parser.flush(now, force=force)
                flushed = bool(events)
                if events and source.stages is not None:
                    events = source.stages(events, time.time_ns())
                f = source.tailer.files.get((key[0], key[1]))
                if f is None or f.generation != key[2]:
                    if events:
                        log.debug("flushing records of a file that is gone")
                    if not parser.held_bytes:
                        del source.parsers[key]
                    if not events:
                        continue
                    path, file_key = "?", f"{key[0]:x}:{key[1]:x}:gone:{key[2]}"
                else:
                    path, file_key = f.path, f.key
                if events:
                    self._add(records.Group(path, file_key, events, time.time_ns()), len(events), 0)
                elif not flushed:
                    continue
                if f is not None and f.generation == key[2]:
                    held_lines = parser.held_lines
                    self._marks.append(
                        (
                            source,
                            f.identity,
                            key[2],
                            f.position - parser.held_bytes,
                            f.line - held_lines,
                        )
                    )

    def _add(self, group: records.Group, events: int, size: int) -> None:
        if self._since is None:
            self._since = time.monotonic()
        self._groups.append(group)
        self._sizes.append(size)
        self._events += events
        self._size += size

    # --- batching and delivery ----------------------------------------------------------------

    def _room(self) -> int:
        """Bytes that may still be read before ``max_inflight`` or ``max_lead`` is reached."""
        tuning = self.tuning
        lead = max(tuning.max_lead, tuning.max_inflight)
        return min(tuning.max_inflight - self.inflight, lead - self.lead) - self._size

    def due(self, now: float) -> bool:
        if not self._marks and not self._groups:
            return False
        if self._size >= min(self.tuning.batch_bytes, self._room() + self._size):
            return True  # full, or as full as the in-flight bounds let it get
        return self._since is None or now - self._since >= self.tuning.batch_wait

    def seal(self) -> None:
        """Send the open batch's records to their sinks (a batch none of them takes, or with no
        records, just commits its marks)."""
        if not self._marks and not self._groups:
            return
        self.seq += 1
        batch = records.Batch(self._groups, self.labels, self._events, self._size, self.seq)
        pending = lanes.Pending(self._marks, self._size, time.monotonic())
        if self._groups:
            if self.router.everything:
                for lane in self.lanes:
                    self._send(lane, pending, batch)
            else:
                self._route(pending, batch)
        self._groups, self._marks, self._sizes = [], [], []
        self._size, self._events, self._since = 0, 0, None
        self.pending.append(pending)
        self.lead += pending.size
        if not pending.routes:
            pending.done = True
            self._advance()
            return
        pending.held = max(pending.routes.values())
        self.inflight += pending.held
        for lane in self.lanes:
            lane.pending_bytes += pending.routes.get(lane.index, 0)

    def _route(self, pending: lanes.Pending, batch: records.Batch) -> None:
        routes, unrouted = self.router.split(batch.groups, self._sizes, batch.events, batch.size)
        if unrouted:
            self.meters.unrouted.inc(amount=unrouted)
        for lane, route in zip(self.lanes, routes, strict=True):
            if route is None:
                continue
            part = batch
            if route.groups is not batch.groups:
                part = records.Batch(
                    route.groups, batch.labels, route.events, route.size, batch.seq
                )
            self._send(lane, pending, part)

    def _send(self, lane: lanes.Lane, pending: lanes.Pending, part: records.Batch) -> None:
        spool = lane.spool
        if spool is not None and spool.takes(lane) and spool.write(part) is not None:
            return  # taken by the spool: ``lane`` sends it from there, after the older ones
        pending.routes[lane.index] = part.size
        lane.queue.put_nowait((pending, part))

    def confirmed(self, lane: lanes.Lane, pending: lanes.Pending) -> None:
        """``lane``'s sink is done with its part of ``pending``: free what no other sink holds."""
        lane.pending_bytes -= pending.routes.pop(lane.index)
        held = max(pending.routes.values(), default=0)
        self.inflight -= pending.held - held
        pending.held = held
        if not pending.routes:
            pending.done = True
            self._advance()
        else:
            self.meters.inflight.set(self.inflight + self._size)
            self.progress.set()

    def _advance(self) -> None:
        """Commit the offsets of every batch at the front that all sinks are done with."""
        while self.pending and self.pending[0].done:
            pending = self.pending.popleft()
            self.lead -= pending.size
            for source, identity, generation, offset, line in pending.marks:
                source.tailer.commit(identity, generation, offset, line)
            self._dirty = True
        self.checkpoint()
        self.meters.inflight.set(self.inflight + self._size)
        self.progress.set()

    def checkpoint(self, *, force: bool = False) -> None:
        """Save committed offsets after every confirmed batch (so a killed agent replays at
        most the batch in flight), synced to disk every ``checkpoint_interval`` and on exit."""
        if self.store is None:
            return
        now = time.monotonic()
        sync = force or now - self._saved_at >= self.tuning.checkpoint_interval
        changes = sum(s.tailer.changes for s in self.sources)
        grown = sum(s.tailer.grown for s in self.sources)
        if changes != self._changes or (sync and grown != self._grown):
            self._dirty = True
        if not self._dirty and not (sync and self._unsynced) and not force:
            return
        if not sync and now - self._written_at < 10 * self._write_cost:
            return  # many files make a save dear: at most a tenth of the time goes to saving
        try:
            if self.store.wants_full:
                self.store.save({s.name: s.tailer.snapshot() for s in self.sources}, sync=sync)
            else:
                self.store.append({s.name: s.tailer.delta() for s in self.sources}, sync=sync)
        except OSError as exc:
            log.error("cannot save offsets to %s: %s", self.store.path, exc)
            return
        self._written_at = time.monotonic()
        self._write_cost = self._written_at - now
        if sync:
            self._saved_at = now
        self._changes, self._grown = changes, grown
        self._unsynced = not sync
        self._dirty = False

    def restore(self) -> None:
        if self.store is None:
            return
        saved = self.store.load()
        for source in self.sources:
            source.tailer.restore(saved.get(source.name, []), self.store.saved_at)

    def start(self) -> None:
        for lane in self.lanes:
            lane.task = asyncio.create_task(lanes.run(self, lane), name=f"sink {lane.sink.name}")

    # --- the loop -----------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event, done: Callable[[], bool] | None = None) -> None:
        """Ship until ``stopping`` is set (or ``done()`` says the app is gone)."""
        watcher = self.watcher
        loop = asyncio.get_running_loop()
        if watcher is not None and watcher.fd is not None:
            loop.add_reader(watcher.fd, self._woken)
        try:
            await self._run(stopping, done)
        finally:
            if watcher is not None and watcher.fd is not None:
                loop.remove_reader(watcher.fd)

    def _woken(self) -> None:
        if self.watcher is not None and self.watcher.take():
            for source in self.sources:
                source.tailer.look_now = True
            self.wake.set()

    async def _run(self, stopping: asyncio.Event, done: Callable[[], bool] | None) -> None:
        tuning = self.tuning
        while not stopping.is_set():
            self.wake.clear()
            read = self.read()
            now = time.monotonic()
            if self.due(now) or (not read and self.local):
                self.seal()
            self.checkpoint()
            if done is not None and done():
                log.info("every app container is done; shipping the rest and exiting")
                break
            room = self._room() > 0
            if not room and self.spools is not None and spooling.spill(self, now):
                room = self._room() > 0
            if read and room:
                await asyncio.sleep(0)
                continue
            self.progress.clear()
            wait = tuning.poll
            if self._since is not None:
                wait = max(0.0, min(wait, self._since + tuning.batch_wait - now))
            waiters: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(stopping.wait()),
                asyncio.ensure_future(self.progress.wait()),
            ]
            if room:  # a file changed: read it now rather than at the next poll
                waiters.append(asyncio.ensure_future(self.wake.wait()))
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if self.wake.is_set():
                await asyncio.sleep(watching.COALESCE)

    async def drain(self, deadline: float) -> bool:
        """Read to the end of what was written, ship it, and wait for the sinks until
        ``deadline`` (monotonic); True when everything read was confirmed (spools included)."""
        while time.monotonic() < deadline:
            read = self.read(final=True)
            self.seal()
            if not read and not self.pending and not self._spooled():
                break
            if self._room() <= 0 or not read:
                self.progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.progress.wait(), max(0.0, deadline - time.monotonic())
                    )
        self.checkpoint(force=True)
        return not self.pending and not self._spooled()

    def _spooled(self) -> bool:
        return self.spools is not None and any(s.files for s in self.spools.by_name.values())

    async def close(self) -> None:
        every = [*self.lanes, *self.retired]
        for lane in every:
            if lane.task is not None:
                lane.task.cancel()
        for lane in every:
            if lane.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            await lane.sink.close()
        if self.store is not None:
            self.store.close()
        if self.watcher is not None:
            self.watcher.close()
        for source in self.sources:
            source.tailer.close()

    def sink_lag(self) -> dict[str, tuple[int, float]]:
        """Per sink: bytes routed to it and not yet confirmed, and the age in seconds of the
        oldest batch it has not confirmed (0 when it is idle)."""
        now = time.monotonic()
        return {
            lane.sink.name: (
                lane.pending_bytes + (lane.spool.bytes if lane.spool is not None else 0),
                now - lane.current.sealed_at if lane.current is not None else 0.0,
            )
            for lane in self.lanes
        }

    def lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for source in self.sources:
            out.update(source.tailer.lag())
        return out
