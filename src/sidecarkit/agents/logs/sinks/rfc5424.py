"""Syslog messages as RFC 5424 describes them, framed by octet counting (RFC 6587), without I/O.

Every event becomes one frame, ``MSG-LEN SP SYSLOG-MSG``::

    211 <14>1 2026-11-29T17:26:24.123456Z web-1 app - - [sidecarkit@32473 pod="web-1"] text

- PRI is ``facility * 8 + severity``; the severity comes from the event's ``level`` field
  (``error`` -> 3, ``warn`` -> 4 ...) or the ``severity`` option.
- TIMESTAMP is the event's own time, else the group's read time plus the event's index (in
  ns), in UTC with microseconds.
- HOSTNAME and APP-NAME default to the ``pod`` and ``container`` labels; PROCID and MSGID are
  ``-``.
- STRUCTURED-DATA is the batch's labels as one element whose SD-ID is ``sidecarkit@32473``
  (32473 is the private enterprise number RFC 5612 sets aside for documentation), or ``-``.
- MSG is the message as UTF-8; undecodable input bytes arrive as U+FFFD.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final

from sidecarkit.agents.logs import records

__all__ = [
    "FACILITIES",
    "SD_ID",
    "SEVERITIES",
    "Encoder",
    "Options",
    "printable",
    "structured_data",
]

SD_ID: Final = "sidecarkit@32473"
"""SD-ID of the element that carries the batch's labels."""

FACILITIES: Final = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    **{f"local{n}": 16 + n for n in range(8)},
}
"""Facility names (as syslog.conf spells them) -> codes."""

SEVERITIES: Final = {
    "emerg": 0,
    "panic": 0,
    "alert": 1,
    "crit": 2,
    "critical": 2,
    "fatal": 2,
    "err": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "informational": 6,
    "debug": 7,
    "trace": 7,
}
"""Severity and log-level names -> syslog severities."""

# Numeric levels in events: syslog's own 0-7, and the 10-60 steps of pino/bunyan.
_LEVELS: Final[dict[object, int]] = {}
for _name, _number in SEVERITIES.items():
    _LEVELS.update({_name: _number, _name.upper(): _number, _name.title(): _number})
_LEVELS.update({n: n for n in range(8)})
_LEVELS.update({10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2})

_MESSAGE = operator.itemgetter(1)
_FIELDS = operator.itemgetter(2)
_TIME = operator.itemgetter(3)

_LENGTHS: list[bytes] = [b"%d " % n for n in range(8192)]
"""``b"N "`` for every frame length seen so far; grown on demand up to ``_MAX_TABLE``."""
_MAX_TABLE: Final = 1 << 16


@dataclass(frozen=True, slots=True)
class Options:
    """What shapes the messages; see the module docstring."""

    facility: int = 1
    """Syslog facility code; ``user`` (1) unless told."""
    severity: int = 6
    """Severity of events without a known ``level`` field: ``info`` (6)."""
    hostname: str | None = None
    """HOSTNAME; ``None`` takes the batch's ``pod`` label, else ``-``."""
    app_name: str | None = None
    """APP-NAME; ``None`` takes the ``container`` label, else ``sidecarkit``."""


def printable(text: str, limit: int) -> str:
    """``text`` as a header field: printable US-ASCII, at most ``limit`` characters, or ``-``."""
    out = "".join(c if "!" <= c <= "~" else "_" for c in text)[:limit]
    return out or "-"


def _sd_name(text: str) -> str:
    """A label name as an SD-NAME: printable US-ASCII except ``= ] "`` and space, 32 at most."""
    out = "".join(c if "!" <= c <= "~" and c not in '=]"' else "_" for c in text)[:32]
    return out or "_"


def _sd_value(text: str) -> str:
    escaped = records.clean(text).replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("]", "\\]")


def structured_data(labels: Mapping[str, str]) -> str:
    """The labels as one SD-ELEMENT, or ``-`` (NILVALUE) when there are none."""
    if not labels:
        return "-"
    params = "".join(f' {_sd_name(k)}="{_sd_value(v)}"' for k, v in labels.items())
    return f"[{SD_ID}{params}]"


class Encoder:
    """Batches to framed bytes, without I/O.

    The part of the header from HOSTNAME to STRUCTURED-DATA is built once per distinct set of
    labels, PRI and TIMESTAMP once per distinct (severity, microsecond) in a batch. Runs of
    events that share a header are framed by C-level ``map``, slice assignment and one
    ``join``, so a short line costs little more than encoding its text.
    """

    __slots__ = ("_labels", "_prefixes", "_tail", "options")

    def __init__(self, options: Options) -> None:
        self.options = options
        self._labels: dict[str, str] | None = None
        self._tail = b""
        self._prefixes: dict[int, bytes] = {}

    def encode(self, batch: records.Batch) -> bytes:
        """Every event of ``batch`` as one octet-counted frame, in order."""
        if batch.labels != self._labels:
            self._labels = dict(batch.labels)
            self._tail = self._make_tail(batch.labels)
        heads: dict[int, bytes] = {}
        out: list[bytes] = []
        for group in batch.groups:
            if group.events:
                self._encode_group(group, heads, out)
            elif group.raw:
                self._encode_raw(group.raw, group.time_ns, heads, out, group.raw_lines)
        if len(self._prefixes) > 4096:
            self._prefixes.clear()
        return b"".join(out)

    def _make_tail(self, labels: Mapping[str, str]) -> bytes:
        host = self.options.hostname or printable(labels.get("pod", ""), 255)
        app = self.options.app_name or printable(labels.get("container", "sidecarkit"), 48)
        return f" {host} {app} - - {structured_data(labels)} ".encode()

    def _prefix(self, second: int) -> bytes:
        """``<PRI>1 YYYY-MM-DDTHH:MM:SS.`` for ``second = seconds * 8 + severity``.

        Times whose year is outside 1000-9999 have no RFC 3339 form: their prefix ends in
        NILVALUE (``-``) instead of the dot that the fraction follows.
        """
        seconds, severity = divmod(second, 8)
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        except (OverflowError, OSError, ValueError):
            stamp = ""
        pri = self.options.facility * 8 + severity
        prefix = f"<{pri}>1 {stamp}.".encode() if len(stamp) == 19 else f"<{pri}>1 -".encode()
        self._prefixes[second] = prefix
        return prefix

    def _head(self, key: int, heads: dict[int, bytes]) -> bytes:
        """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - - SD `` for ``key = micros * 8 + severity``."""
        micros, severity = divmod(key, 8)
        seconds, fraction = divmod(micros, 1_000_000)
        second = seconds * 8 + severity
        prefix = self._prefixes.get(second) or self._prefix(second)
        if prefix[-1] == 0x2E:  # "."
            head = prefix + b"%06dZ" % fraction + self._tail
        else:
            head = prefix + self._tail
        heads[key] = head
        return head

    def _encode_raw(
        self,
        raw: bytes,
        base: int,
        heads: dict[int, bytes],
        out: list[bytes],
        split: list[bytes] | None = None,
    ) -> None:
        """A group that travels as its bytes (complete lines, one event each): framed from
        ``bytes.split`` (done already by the shipper when ``split`` is given), with no ``str``
        in between, as the raw parser would see the lines."""
        if split is not None and raw.isascii() and b"\r" not in raw:
            parts: list[bytes] = [b""] * (3 * len(split))
            parts[2::3] = split
            self._frame_runs(base, split, None, heads, parts)
            out += parts
            return
        if b"\r" in raw:
            raw = raw.replace(b"\r\n", b"\n")
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "surrogateescape")
                raw = records.clean(text).encode()
        bodies = raw.split(b"\n")
        if raw.endswith(b"\n"):
            bodies.pop()
        parts = [b""] * (3 * len(bodies))
        parts[2::3] = bodies
        self._frame_runs(base, bodies, None, heads, parts)
        out += parts

    def _encode_group(
        self, group: records.Group, heads: dict[int, bytes], out: list[bytes]
    ) -> None:
        events = group.events
        count = len(events)
        messages = list(map(_MESSAGE, events))
        try:
            bodies = list(map(str.encode, messages))
        except UnicodeEncodeError:
            bodies = [records.clean(m).encode() for m in messages]
        fields = list(map(_FIELDS, events))
        times = list(map(_TIME, events))
        base = group.time_ns
        default = self.options.severity
        parts: list[bytes] = [b""] * (3 * count)
        parts[2::3] = bodies
        if times.count(None) == count:
            severities = None if fields.count(None) == count else _severities(fields, default)
            self._frame_runs(base, bodies, severities, heads, parts)
            out += parts
            return
        severities = _severities(fields, default)
        stamps = (
            times
            if None not in times
            else [base + i if t is None else t for i, t in enumerate(times)]
        )
        micros = list(map(operator.floordiv, stamps, repeat(1000)))
        if len(set(micros)) * 4 < count:
            # Mostly shared timestamps: whole headers, each built once.
            keys = list(map(operator.add, map(operator.mul, micros, repeat(8)), severities))
            for key in set(keys).difference(heads):
                self._head(key, heads)
            known = list(map(heads.__getitem__, keys))
            parts[0::3] = _lengths(list(map(operator.add, map(len, known), map(len, bodies))))
            parts[1::3] = known
            out += parts
            return
        # Mostly distinct timestamps: the header in pieces, per second and per fraction.
        seconds = map(operator.floordiv, micros, repeat(1_000_000))
        keys = list(map(operator.add, map(operator.mul, seconds, repeat(8)), severities))
        prefixes = self._prefixes
        for key in set(keys).difference(prefixes):
            self._prefix(key)
        found = list(map(prefixes.__getitem__, keys))
        if b"-"[0] in map(operator.itemgetter(-1), found):  # a time without RFC 3339 form
            for index, prefix in enumerate(found):
                if prefix.endswith(b"-"):
                    found[index] = prefix[:-1]
            fractions = [
                b"-" if p.endswith(b" ") else b"%06dZ" % (m % 1_000_000)
                for p, m in zip(found, micros, strict=True)
            ]
        else:
            fractions = list(map(b"%06dZ".__mod__, map(operator.mod, micros, repeat(1_000_000))))
        tail = self._tail
        rest = len(tail)
        wide = list(map(operator.add, map(len, found), map(len, fractions)))
        sizes = list(map(operator.add, wide, map(rest.__add__, map(len, bodies))))
        framed: list[bytes] = [tail] * (5 * count)
        framed[0::5] = _lengths(sizes)
        framed[1::5] = found
        framed[2::5] = fractions
        framed[4::5] = bodies
        out += framed

    def _frame_runs(
        self,
        base: int,
        bodies: list[bytes],
        severities: list[int] | None,
        heads: dict[int, bytes],
        parts: list[bytes],
    ) -> None:
        """Lengths and headers into ``parts`` for events timed by their group.

        ``base + index`` enters the next microsecond every 1000 events, so the events fall
        into runs that share a timestamp, and within a run the header depends only on the
        severity: one header for the whole run in the common case of no ``level`` fields.
        """
        count = len(bodies)
        default = self.options.severity
        start = 0
        while start < count:
            micros = (base + start) // 1000
            end = min(count, (micros + 1) * 1000 - base)
            run = bodies[start:end] if start or end < count else bodies
            if severities is None:
                key = micros * 8 + default
                head = heads.get(key) or self._head(key, heads)
                parts[3 * start : 3 * end : 3] = _prefixed_lengths(len(head), run)
                parts[3 * start + 1 : 3 * end : 3] = [head] * len(run)
                start = end
                continue
            levels = severities[start:end]
            table = [b""] * 8
            for severity in set(levels):
                key = micros * 8 + severity
                table[severity] = heads.get(key) or self._head(key, heads)
            run_heads = list(map(table.__getitem__, levels))
            sizes = list(map(operator.add, map(len, run_heads), map(len, run)))
            parts[3 * start : 3 * end : 3] = _lengths(sizes)
            parts[3 * start + 1 : 3 * end : 3] = run_heads
            start = end


def _severities(fields: list[dict[str, Any] | None], default: int) -> list[int]:
    """Each event's severity: from its ``level`` field when known, else ``default``."""
    if fields.count(None) == len(fields):
        return [default] * len(fields)
    levels = [None if f is None else f.get("level") for f in fields]
    table: dict[object, int] = {**_LEVELS, None: default}
    try:
        found = list(map(table.get, levels, repeat(-1)))
    except TypeError:  # an unhashable level (a list or an object in JSON)
        levels = [v if isinstance(v, str | int) else None for v in levels]
        found = list(map(table.get, levels, repeat(-1)))
    if -1 in found:  # levels spelled otherwise ("Warn ", "wArN") or unknown ("I", 35)
        for level in {v for v, n in zip(levels, found, strict=True) if n == -1}:
            table[level] = (
                _LEVELS.get(level.strip().lower(), default) if isinstance(level, str) else default
            )
        found = list(map(table.__getitem__, levels))
    return found


_SHIFTED: dict[int, list[bytes]] = {}
"""Header length -> ``b"N "`` for N = header length + 0, 1, 2 ...: a run of bodies that
share a header gets its length prefixes from one ``map``."""


def _prefixed_lengths(head: int, bodies: list[bytes]) -> list[bytes]:
    """``b"N "`` for each body after a header of ``head`` bytes."""
    table = _SHIFTED.get(head)
    if table is None:
        if len(_SHIFTED) >= 64:
            _SHIFTED.clear()
        table = _SHIFTED[head] = [b"%d " % (head + n) for n in range(4096)]
    try:
        return list(map(table.__getitem__, map(len, bodies)))
    except IndexError:
        top = max(map(len, bodies))
        if top >= _MAX_TABLE:
            return [b"%d " % (head + len(body)) for body in bodies]
        table.extend(b"%d " % (head + n) for n in range(len(table), top + 1024))
        return list(map(table.__getitem__, map(len, bodies)))


def _lengths(sizes: list[int]) -> list[bytes]:
    """``b"N "`` for each size, from the shared table where it reaches."""
    top = max(sizes)
    if top >= len(_LENGTHS):
        if top >= _MAX_TABLE:
            return [b"%d " % n for n in sizes]
        _LENGTHS.extend(b"%d " % n for n in range(len(_LENGTHS), top + 1024))
    return list(map(_LENGTHS.__getitem__, sizes))
