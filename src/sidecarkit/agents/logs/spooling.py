"""A bounded on-disk spool per sink, so that one stalled sink does not stop the others.

Without it, a sink that stops answering lets the others lead by ``max_inflight``/``max_lead``;
then reading pauses for every sink (the lines wait in the files). With ``offsets_dir`` set,
a sink whose oldest batch has held reading back for ``spool_after`` seconds while another sink
sat idle has its batches written to ``<offsets_dir>/spool/<sink>/``, one file per batch: the
batch it is retrying, those queued for it, and every later batch routed to it while its spool
is not empty. A batch in the spool counts as confirmed by that sink, so the offsets advance,
reading goes on and the healthy sinks keep receiving. The stalled sink's lane keeps retrying
and, once its receiver is back, sends the spool's batches oldest first, then returns to
batches in memory: every line reaches it once and in order.

The spool is bounded by ``spool_max`` bytes (of batch files): once full, later batches wait in
memory for that sink as without a spool, and reading pauses for all again (back-pressure,
nothing dropped). Files are written whole and renamed into place, so a crash leaves complete
batches only; a batch is deleted once its sink took it, so a restart resends at most the batch
that was being sent, plus what any restart replays (at most ``max_lead`` bytes past the
committed offsets, to every sink).

Batches are stored with ``marshal``: events are tuples of builtin types, and the spool
directory is the agent's own state, like the offsets file.
"""

from __future__ import annotations

import logging
import marshal
import os
import re
import time
import zlib
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecarkit.agents.logs import records

if TYPE_CHECKING:
    from sidecarkit.agents.logs import lanes, shipping

__all__ = ["Spool", "Spools", "spill"]

log = logging.getLogger("sidecarkit.agent.logs")

_MAGIC = b"SKSPOOL1"
_SUFFIX = ".batch"


class Spool:
    """The spool of one sink: batch files named by a counter, oldest first."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.files: deque[tuple[Path, int]] = deque()
        self.bytes = 0
        self.next = 0
        if path.is_dir():
            for entry in sorted(path.glob("*" + _SUFFIX)):
                size = entry.stat().st_size
                self.files.append((entry, size))
                self.bytes += size
                self.next = max(self.next, int(entry.stem) + 1)
            for entry in path.glob("*.tmp"):
                entry.unlink(missing_ok=True)  # a write a crash cut short
        if self.files:
            log.info("sink spool %s: %d batches to send from the last run", path, len(self.files))

    def takes(self, lane: lanes.Lane) -> bool:
        """Whether a new batch for ``lane`` goes to the spool: the spool is not empty (later
        batches must follow the spooled ones), it has room, and nothing waits in memory (which
        would be older)."""
        return bool(self.files) and self.bytes < self.limit and lane.queue.empty()

    def write(self, batch: records.Batch) -> Path | None:
        """Store ``batch`` as the newest file; None when it cannot be (full, or a value that
        ``marshal`` does not take, or the disk refused): the batch then stays in memory."""
        if self.bytes >= self.limit:
            return None
        payload = (
            batch.seq,
            batch.events,
            batch.size,
            batch.labels,
            time.time(),
            [(g.source, g.key, g.events, g.time_ns, g.raw, g.first) for g in batch.groups],
        )
        try:
            data = marshal.dumps(payload)
        except ValueError as exc:
            log.warning("sink spool %s: cannot store a batch (%s); kept in memory", self.path, exc)
            return None
        path = self.path / f"{self.next:016d}{_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                f.write(_MAGIC + zlib.crc32(data).to_bytes(4, "big") + data)
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(path)
        except OSError as exc:
            log.error("sink spool %s: cannot write (%s); the batch stays in memory", self.path, exc)
            tmp.unlink(missing_ok=True)
            return None
        self.next += 1
        size = len(data) + len(_MAGIC) + 4
        self.files.append((path, size))
        self.bytes += size
        return path

    def oldest(self) -> tuple[Path, records.Batch, float] | None:
        """The oldest stored batch with its path and the wall time it was stored; a file that
        does not read back whole is logged, counted nowhere else, and skipped."""
        while self.files:
            path, _ = self.files[0]
            try:
                data = path.read_bytes()
                body = data[len(_MAGIC) + 4 :]
                if not data.startswith(_MAGIC) or zlib.crc32(body) != int.from_bytes(
                    data[len(_MAGIC) : len(_MAGIC) + 4], "big"
                ):
                    raise ValueError("bad checksum")
                seq, events, size, labels, stored, groups = marshal.loads(body)
            except (OSError, ValueError, EOFError, TypeError) as exc:
                log.error("sink spool: %s cannot be read back (%s); skipped", path, exc)
                self.remove(path)
                continue
            made = [_group(*group) for group in groups]
            return path, records.Batch(made, labels, events, size, seq), float(stored)
        return None

    def remove(self, path: Path) -> None:
        """The batch of ``path`` was taken by its sink (or given up): forget it."""
        for n, (stored, size) in enumerate(self.files):
            if stored == path:
                del self.files[n]
                self.bytes -= size
                break
        path.unlink(missing_ok=True)


def _group(source: str, key: str, events: Any, time_ns: int, raw: Any, first: int) -> records.Group:
    group = records.Group(source, key, events, time_ns, raw, first=first)
    if raw is not None and not events:
        group.raw_lines = lines = raw.split(b"\n")
        lines.pop()
    return group


class Spools:
    """One spool per sink name, under ``<offsets_dir>/spool``; a lane that replaces another
    (a reload) takes the same one, so what was spooled goes to the new endpoint."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.by_name: dict[str, Spool] = {}

    def warn_unknown(self, names: set[str]) -> None:
        """Log the spools left by sinks the config no longer has: kept, not sent."""
        known = {re.sub(r"[^A-Za-z0-9._-]", "_", name) or "sink" for name in names}
        if self.path.is_dir():
            for entry in sorted(self.path.iterdir()):
                if entry.name not in known and any(entry.glob("*" + _SUFFIX)):
                    log.warning(
                        "sink spool %s belongs to no configured sink: its batches are kept "
                        "and not sent (add the sink back, or delete the directory)",
                        entry,
                    )

    def resize(self, limit: int) -> None:
        """A reload's ``spool_max`` (0 takes no new batches; the stored ones are still sent)."""
        self.limit = limit
        for spool in self.by_name.values():
            spool.limit = limit

    def get(self, name: str) -> Spool:
        spool = self.by_name.get(name)
        if spool is None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "sink"
            spool = self.by_name[name] = Spool(self.path / safe, self.limit)
        return spool


def spill(shipper: shipping.Shipper, now: float) -> bool:
    """Reading is held back: if the oldest unconfirmed batch has waited ``spool_after`` seconds
    on a sink while another sink has nothing to send, spool what that sink holds; True if it
    freed room. A slow sink that everything waits for is left alone (nothing to gain)."""
    if not shipper.pending:
        return False
    front = shipper.pending[0]
    if now - front.sealed_at < shipper.tuning.spool_after:
        return False
    idle = [lane for lane in shipper.lanes if lane.current is None and lane.queue.empty()]
    if not idle:
        return False
    freed = False
    for lane in shipper.lanes:
        spool = lane.spool
        if (
            spool is None
            or lane.index not in front.routes
            or lane.current is None
            or lane.batch is None
            or lane.spooled is not None
            or lane.carry
            or lane.after is not None
            or lane.index not in lane.current.routes
        ):
            continue
        path = spool.write(lane.batch)
        if path is None:
            continue
        if not freed:
            log.warning(
                "sink %s has held the others back for %.0f s: spooling its batches to %s "
                "(at most spool_max bytes) while the others go on",
                lane.sink.name,
                now - front.sealed_at,
                spool.path,
            )
        freed = True
        lane.spooled = path
        shipper.confirmed(lane, lane.current)
        while not lane.queue.empty():
            item = lane.queue.get_nowait()
            assert item is not None  # only a retired lane is told to stop
            pending, batch = item
            if spool.write(batch) is None:
                lane.queue.put_nowait(item)  # full: the rest stays in memory, in order
                tail = [lane.queue.get_nowait() for _ in range(lane.queue.qsize() - 1)]
                for rest in tail:
                    lane.queue.put_nowait(rest)
                break
            shipper.confirmed(lane, pending)
    return freed
