"""What flows through the logs agent: events, the groups and batches they travel in, sink answers.

An **event** is one log record after parsing. It is a plain tuple, because the hot path creates
one per line and a tuple is the cheapest object Python has:

``(line, message, fields, time_ns)``

- ``line``: number of the record's first line in its file, counted from 0. With the file's
  ``key`` it names the record the same way on every replay, which is what deterministic ids
  (Elasticsearch ``_id``) are made from.
- ``message``: the text. Lines are decoded as UTF-8 with ``surrogateescape``, so bytes that are
  not UTF-8 survive as lone surrogates; ``clean`` turns them into U+FFFD for encoders that refuse
  them.
- ``fields``: what the parser found besides the message (``stream``, ``level``, JSON fields ...),
  or ``None``.
- ``time_ns``: the record's own time when the parser found one, else ``None``; sinks then use
  ``Group.time_ns`` plus the event's index, unique per line and stable across retries.

A **group** is consecutive events of one file; a **batch** is what one request carries. A
sink's ``send`` answers with an **Outcome**: everything accepted, some events rejected for good
(counted, never silently), or a smaller batch to retry after a pause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Batch", "Event", "Group", "Outcome", "Sink", "clean", "sample"]

Event = tuple[int, str, dict[str, Any] | None, int | None]


@dataclass(slots=True)
class Group:
    source: str
    """Path of the file the events came from (``-`` for stdin)."""
    key: str
    """Stable identity of the file: device, inode and a fingerprint of its first bytes."""
    events: list[Event]
    time_ns: int
    """When the group was read, in ns since the epoch."""
    raw: bytes | None = None
    """The group's bytes exactly as read (complete lines), when the parser kept them as they are:
    sinks that write raw lines use this and skip per-event work."""
    raw_lines: list[bytes] | None = None
    """``raw`` already split into lines (without newlines), when a sink asked for that."""
    first: int = 0
    """Line number of the first line of ``raw`` in its file: with ``key``, what names each of
    its lines when there are no events (a line's ``line`` is ``first`` plus its index)."""

    def count(self) -> int:
        """Events in the group: its events, or the lines of ``raw`` when it travels as bytes."""
        if self.events or self.raw is None:
            return len(self.events)
        return self.raw.count(b"\n")

    def materialized(self) -> list[Event]:
        """The group's events; for a group of bytes alone, one per line, as the ``raw`` parser
        makes them, each with the time it has in the group (``time_ns`` plus its index)."""
        if self.events or self.raw is None:
            return self.events
        text = self.raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
        lines = text.split("\n")
        lines.pop()
        start, first = self.time_ns, self.first
        return [(first + n, line, None, start + n) for n, line in enumerate(lines)]


@dataclass(slots=True)
class Batch:
    groups: list[Group]
    labels: dict[str, str]
    """The pod's identity and static labels, added to every event."""
    events: int = 0
    """Number of events in all groups."""
    size: int = 0
    """Bytes of input the events came from."""
    seq: int = 0
    """Position of the batch in the agent's stream, for logs and ordering."""

    def subset(self, keep: list[list[bool]]) -> Batch:
        """The batch with only the events marked ``True`` (one list of flags per group).

        Each kept event keeps the time it had in the whole group, so that a resent event carries
        the same timestamp as the first time."""
        groups = []
        for group, flags in zip(self.groups, keep, strict=True):
            every, start = group.materialized(), group.time_ns
            events = [
                event if event[3] is not None else (event[0], event[1], event[2], start + n)
                for n, (event, flag) in enumerate(zip(every, flags, strict=True))
                if flag
            ]
            if events:
                groups.append(Group(group.source, group.key, events, group.time_ns))
        count = sum(len(g.events) for g in groups)
        return Batch(groups, self.labels, count, 0, self.seq)


@dataclass(slots=True)
class Outcome:
    rejected: int = 0
    """Events the receiver refused for good (bad data): counted and logged, not retried."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Why, as short reason -> number of events."""
    retry: Batch | None = None
    """What still has to be sent again (all or part of the batch), after a pause."""
    retry_after: float | None = None
    """Seconds the receiver asked to wait (``Retry-After``), if it did."""
    detail: str = field(default="", compare=False)
    """What the receiver said about the refused events, for the log (not compared)."""
    sample: str = field(default="", compare=False)
    """One refused event, for the log: ``sample(group, index)`` (not compared)."""


class Sink(Protocol):
    name: str
    """Short name for metrics and logs: ``loki``, ``elasticsearch``, ``syslog`` ..."""

    async def send(self, batch: Batch) -> Outcome:
        """Deliver ``batch``; return once the receiver confirmed or refused every event.

        Transient failures of the whole request (connection refused, 5xx, 429, timeouts) either
        raise ``OSError``/``aiohttp.ClientError``/``TimeoutError`` or return ``Outcome(retry=
        batch)``; the caller backs off and sends again.
        """
        ...

    async def close(self) -> None: ...


def sample(group: Group, index: int = 0, *, limit: int = 200) -> str:
    """Event ``index`` of ``group`` as ``file:line: text`` (cut to ``limit`` characters), for a
    log that says which record a receiver refused."""
    if group.events:
        event = group.events[index]
    else:
        events = group.materialized()
        if not events:
            return ""
        event = events[min(index, len(events) - 1)]
    text = clean(event[1])
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{group.source}:{event[0] + 1}: {text!r}"


def clean(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes) replaced by U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
