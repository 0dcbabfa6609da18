"""Parsers of the logs agent: the complete lines of one file become events. Pure: no I/O.

A ``ParserSpec`` is validated and compiled once (``compile``); the factory it returns makes one
stateful ``Parser`` per file. ``feed`` takes lines as the tailer hands them out (complete,
without their ``\\n``, decoded as UTF-8 with ``surrogateescape``) and returns the events that are
complete; ``flush`` emits what waited too long. A trailing ``\\r`` (CRLF line ends) is removed
from every line before parsing.

Theory of operation, per line, in three stages:

1. **Format.** ``raw`` keeps the line. ``json`` maps an object's message, time and level keys.
   ``regex`` takes named groups. ``cri`` (``<time> <stream> <P|F> <content>``) and ``docker``
   (json-file ``{"log": ..., "stream": ..., "time": ...}``) yield a *piece* of a stream;
   ``container`` tries docker, then CRI, on each line. A line the format does not understand
   passes through as raw text; in the container formats it first flushes everything held, since
   it means the stream lost its framing.
2. **Partials** (container formats). CRI ``P`` pieces, and docker ``log`` values without a
   final ``\\n``, are held per stream and joined (with nothing between) up to the piece that
   completes them.
3. **Multiline** (when configured). Messages of one stream are joined with ``\\n`` by the
   state machine in ``multiline`` (start, continuation and tentative lines), one joiner per
   stream.

Held records leave when the next record starts, when they reach ``max_lines``, on ``flush``
after ``flush_timeout`` seconds without a new line, and on ``flush(force=True)``. Events come out
in the order they complete, so with interleaved streams their ``line`` numbers need not rise.

``held_bytes`` is the number of bytes, from the first line of the oldest held record to the end
of what was fed: committing the file offset at ``fed - held_bytes`` never skips a held line. A
line between that was already emitted (another stream's) is emitted again after a crash: at
least once, never lost. Raw parsing without multiline never holds anything.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from sidecarkit.agents.logs import multiline, records, timestamps

__all__ = ["FORMATS", "PRESETS", "Parser", "ParserSpec", "compile", "json_object"]

FORMATS: Final = ("raw", "json", "cri", "docker", "container", "regex")
PRESETS: Final = ("java", "python", "go", "ruby", "backslash")

_STREAMS: Final = frozenset({"stdout", "stderr"})
_TAGS: Final = frozenset({"F", "P"})
_MESSAGE_KEYS: Final = ("message", "msg", "log")
_TIME_KEYS: Final = ("time", "ts", "timestamp", "@timestamp")
_LEVEL_KEYS: Final = ("level", "severity", "lvl")


@dataclass(frozen=True, slots=True)
class ParserSpec:
    """How the lines of a file become events."""

    format: str = "raw"
    """``raw``, ``json``, ``cri``, ``docker``, ``container`` (docker or CRI, per line) or
    ``regex``. Default ``raw``: the fastest, and right for apps that write plain lines."""
    regex: str | None = None
    """For ``regex``: a pattern with named groups, searched in each line. Group ``message`` (or
    ``log``) is the message (the whole line without one), ``time`` the time, ``level`` goes to
    the field ``level``, other groups become fields. ``(?<name>...)`` is read as ``(?P<name>...)``
    so Fluent Bit patterns work unchanged."""
    message_key: str | None = None
    """For ``json``: key of the message. Default: the first present of message, msg, log."""
    time_key: str | None = None
    """For ``json``: key of the time. Default: the first present of time, ts, timestamp,
    @timestamp. RFC 3339 strings and numeric epoch seconds or milliseconds are understood."""
    level_key: str | None = None
    """For ``json``: key of the level, stored as the field ``level``. Default: the first present
    of level, severity, lvl."""
    multiline: str | None = None
    """Preset joining stack traces: ``java``, ``python``, ``go``, ``ruby`` or ``backslash`` (a
    line ending in ``\\`` continues on the next). Default None: every message stands alone."""
    multiline_start: str | None = None
    """Custom multiline: regex the first line of a record matches. Without
    ``multiline_continue``, every line that does not match it continues the record."""
    multiline_continue: str | None = None
    """Custom multiline: regex a continuation line matches. Without ``multiline_start``, any line
    may begin a record."""
    flush_timeout: float = 4.0
    """Seconds a held record waits for another line before ``flush`` emits it. 4 s like Fluent
    Bit: long enough for a trace written in several writes, short enough to look live."""
    max_lines: int = 1000
    """A held record is emitted once it has this many lines (and the rest continues as a new
    record): bounds the memory one runaway record can take."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and how to fix it."""
        if self.format not in FORMATS:
            raise ValueError(
                f"format {self.format!r} is not known: use one of {', '.join(FORMATS)}"
            )
        if self.format == "regex":
            if not self.regex:
                raise ValueError(
                    "regex is required with format 'regex': give a pattern with named groups, "
                    "e.g. '^(?P<time>\\S+) (?P<level>\\w+) (?P<message>.*)$'"
                )
            _regex("regex", self.regex)
        elif self.regex is not None:
            raise ValueError(
                f"regex is only used with format 'regex' (format is {self.format!r}): "
                "set format to 'regex' or remove regex"
            )
        if self.format != "json":
            for name in ("message_key", "time_key", "level_key"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} is only used with format 'json' (format is {self.format!r}): "
                        f"set format to 'json' or remove {name}"
                    )
        if self.multiline is not None:
            if self.multiline not in PRESETS:
                raise ValueError(
                    f"multiline {self.multiline!r} is not a preset: use one of "
                    f"{', '.join(PRESETS)}, or multiline_start/multiline_continue for your own"
                )
            if self.multiline_start is not None or self.multiline_continue is not None:
                raise ValueError(
                    "multiline and multiline_start/multiline_continue exclude each other: "
                    "keep the preset or the custom regexes, not both"
                )
        for name in ("multiline_start", "multiline_continue"):
            pattern = getattr(self, name)
            if pattern is not None:
                _regex(name, pattern)
        if not self.flush_timeout > 0:
            raise ValueError(
                f"flush_timeout must be a positive number of seconds, not {self.flush_timeout!r}"
            )
        if self.max_lines < 1:
            raise ValueError(f"max_lines must be at least 1, not {self.max_lines!r}")


class Parser(Protocol):
    """Turns the lines of one file into events; keeps what is not complete yet."""

    held_bytes: int
    """Bytes (UTF-8, plus one newline per line) from the first line of the oldest held record to
    the end of what was fed; 0 when nothing is held."""

    @property
    def held_lines(self) -> int:
        """Number of lines those ``held_bytes`` are (the commit point's line number is the
        number of lines fed minus this)."""
        ...

    def feed(self, lines: list[str], first: int, now: float) -> list[records.Event]:
        """Events completed by ``lines`` (line ``first`` onwards, at monotonic time ``now``)."""
        ...

    def flush(self, now: float, *, force: bool = False) -> list[records.Event]:
        """Held records older than ``flush_timeout`` (all of them with ``force``)."""
        ...


def compile(spec: ParserSpec) -> Callable[[], Parser]:
    """Validate ``spec`` once; return a factory making one ``Parser`` per file."""
    spec.validate()
    rules = _rules(spec)
    if spec.format == "raw" and rules is None:
        return _RawParser
    config = _Config(
        spec.format,
        _regex("regex", spec.regex) if spec.regex else None,
        spec.message_key,
        spec.time_key,
        spec.level_key,
        rules,
        spec.flush_timeout,
        spec.max_lines,
    )
    return functools.partial(_Pipeline, config)


# --- compiled configuration ---------------------------------------------------------------------

_NAMED_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\(\?<([A-Za-z_]\w*)>")


def _regex(field: str, pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, Onigmo's ``(?<name>`` accepted; a ValueError naming ``field``."""
    try:
        return re.compile(_NAMED_GROUP.sub(r"\1(?P<\2>", pattern))
    except re.error as exc:
        raise ValueError(
            f"{field} {pattern!r} is not a valid regular expression: {exc}; fix the pattern "
            "(Python re syntax)"
        ) from exc


def _rules(spec: ParserSpec) -> multiline.Rules | None:
    if spec.multiline is not None:
        return multiline.preset(spec.multiline)
    start = _regex("multiline_start", spec.multiline_start).search if spec.multiline_start else None
    more = (
        _regex("multiline_continue", spec.multiline_continue).search
        if spec.multiline_continue
        else None
    )
    return multiline.custom(start, more)


@dataclass(frozen=True, slots=True)
class _Config:
    format: str
    regex: re.Pattern[str] | None
    message_key: str | None
    time_key: str | None
    level_key: str | None
    rules: multiline.Rules | None
    flush_timeout: float
    max_lines: int


# --- parsers ------------------------------------------------------------------------------------


def _strip_cr(lines: list[str]) -> list[str]:
    """``lines`` without a trailing ``\\r``; the same list when no line has one (checked fast)."""
    if "\r" not in "".join(lines):
        return lines
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _size(line: str) -> int:
    if line.isascii():
        return len(line) + 1
    return len(line.encode("utf-8", "surrogateescape")) + 1


class _RawParser:
    """``raw`` without multiline: one event per line, nothing held, no per-line regex."""

    __slots__ = ("held_bytes",)

    def __init__(self) -> None:
        self.held_bytes = 0

    @property
    def held_lines(self) -> int:
        return 0

    def feed(self, lines: list[str], first: int, now: float) -> list[records.Event]:
        if "\r" in "".join(lines):
            lines = _strip_cr(lines)
        return [(n, line, None, None) for n, line in enumerate(lines, first)]

    def flush(self, now: float, *, force: bool = False) -> list[records.Event]:
        return []


@dataclass(slots=True)
class _Pieces:
    """Partial pieces of one stream waiting for the piece that completes them."""

    first: int
    texts: list[str]
    fields: dict[str, Any] | None
    time_ns: int | None
    last: float


class _Pipeline:
    """Every format but plain raw: format, partials, multiline (see the module docstring)."""

    __slots__ = (
        "_config",
        "_end",
        "_joiners",
        "_partials",
        "_sizes",
        "_sizes_from",
        "held_bytes",
    )

    def __init__(self, config: _Config) -> None:
        self._config = config
        self._partials: dict[tuple[str, Any], _Pieces] = {}
        self._joiners: dict[Any, multiline.Joiner] | None = {} if config.rules is not None else None
        self._sizes: list[int] = []
        """Byte sizes of the lines from ``_sizes_from`` to the end of what was fed."""
        self._sizes_from = 0
        self._end = 0
        self.held_bytes = 0

    @property
    def held_lines(self) -> int:
        return len(self._sizes) if self.held_bytes else 0

    def feed(self, lines: list[str], first: int, now: float) -> list[records.Event]:
        out: list[records.Event] = []
        parsed = _strip_cr(lines)
        kind = self._config.format
        if kind == "cri":
            self._cri(parsed, first, now, out)
        elif kind == "docker":
            self._docker(parsed, first, now, out, cri=False)
        elif kind == "container":
            self._container(parsed, first, now, out)
        elif kind == "json":
            for n, line in enumerate(parsed, first):
                self._message(None, self._json(n, line), now, out)
        elif kind == "regex":
            for n, line in enumerate(parsed, first):
                self._message(None, self._regex(n, line), now, out)
        else:
            for event in enumerate(parsed, first):
                self._message(None, (*event, None, None), now, out)
        self._account(lines, first)
        return out

    def flush(self, now: float, *, force: bool = False) -> list[records.Event]:
        out: list[records.Event] = []
        timeout = self._config.flush_timeout
        for key, pieces in sorted(self._partials.items(), key=lambda item: item[1].first):
            if force or now - pieces.last >= timeout:
                del self._partials[key]
                self._message(key[1], _joined(pieces), pieces.last, out)
        if self._joiners:
            for joiner in sorted(self._joiners.values(), key=_held_order):
                joiner.flush(now, timeout, out, force=force)
        self._account([], self._end)
        return out

    # formats

    def _cri(self, lines: list[str], first: int, now: float, out: list[records.Event]) -> None:
        partials = self._partials
        plain = self._joiners is None
        append = out.append
        seconds = timestamps.SECONDS
        for n, line in enumerate(lines, first):
            parts = line.split(" ", 3)
            if len(parts) == 3:
                parts.append("")
            if len(parts) != 4 or parts[1] not in _STREAMS or parts[2] not in _TAGS:
                self._unframed(n, line, now, out)
                continue
            stamp = parts[0]
            # containerd's own form, 2024-01-02T03:04:05.123456789Z, without a call.
            base = seconds.get(stamp[:19])
            fraction = stamp[20:29]
            if base is not None and len(stamp) == 30 and stamp[29] == "Z" and stamp[19] == ".":
                time_ns = base + int(fraction) if fraction.isdecimal() else None
            else:
                time_ns = timestamps.rfc3339_ns(stamp)
            if time_ns is None:
                self._unframed(n, line, now, out)
            elif plain and not partials and parts[2] == "F":
                append((n, parts[3], {"stream": parts[1]}, time_ns))
            else:
                piece = (n, parts[3], {"stream": parts[1]}, time_ns)
                self._piece(("cri", parts[1]), piece, parts[2] == "F", now, out)

    def _container(
        self, lines: list[str], first: int, now: float, out: list[records.Event]
    ) -> None:
        """Runs of lines that look like docker's JSON go to ``_docker``, the others to ``_cri``."""
        start, docker = 0, False
        for index, line in enumerate(lines):
            if (line[:1] == "{") is not docker:
                if index > start:
                    run = lines[start:index]
                    if docker:
                        self._docker(run, first + start, now, out, cri=True)
                    else:
                        self._cri(run, first + start, now, out)
                start, docker = index, not docker
        if docker:
            self._docker(lines[start:], first + start, now, out, cri=True)
        elif start < len(lines):
            self._cri(lines[start:], first + start, now, out)

    def _docker(
        self, lines: list[str], first: int, now: float, out: list[records.Event], *, cri: bool
    ) -> None:
        partials = self._partials
        plain = self._joiners is None
        for n, line in enumerate(lines, first):
            obj = json_object(line)
            text = obj.pop("log", None) if obj is not None else None
            if obj is None or not isinstance(text, str):
                if cri:
                    self._cri([line], n, now, out)
                else:
                    self._unframed(n, line, now, out)
                continue
            final = text.endswith("\n")
            if final:
                text = text[:-2] if text.endswith("\r\n") else text[:-1]
            stamp = obj.get("time")
            time_ns = (
                timestamps.rfc3339_ns(stamp)
                if isinstance(stamp, str)
                else timestamps.time_ns(stamp)
            )
            if time_ns is not None:
                del obj["time"]
            if final and plain and not partials:
                out.append((n, text, obj or None, time_ns))
                continue
            stream = obj.get("stream")
            piece = (n, text, obj or None, time_ns)
            key = ("docker", stream if isinstance(stream, str) else None)
            self._piece(key, piece, final, now, out)

    def _json(self, n: int, line: str) -> records.Event:
        obj = json_object(line)
        if obj is None:
            return (n, line, None, None)
        config = self._config
        message = line
        key = _present(obj, config.message_key, _MESSAGE_KEYS)
        if key is not None:
            value = obj.pop(key)
            message = value if isinstance(value, str) else orjson.dumps(value).decode()
        time_ns = None
        key = _present(obj, config.time_key, _TIME_KEYS)
        if key is not None:
            value = obj[key]
            time_ns = timestamps.rfc3339_ns(value) if isinstance(value, str) else None
            if time_ns is None:
                time_ns = timestamps.time_ns(value)
            if time_ns is not None:
                del obj[key]
        key = _present(obj, config.level_key, _LEVEL_KEYS)
        if key is not None:
            obj["level"] = obj.pop(key)
        return (n, message, obj or None, time_ns)

    def _regex(self, n: int, line: str) -> records.Event:
        assert self._config.regex is not None
        found = self._config.regex.search(line)
        if found is None:
            return (n, line, None, None)
        fields = {k: v for k, v in found.groupdict().items() if v is not None}
        message = fields.pop("message", None)
        if message is None:
            message = fields.pop("log", line)
        time_ns = None
        if "time" in fields:
            time_ns = timestamps.time_ns(fields["time"])
            if time_ns is not None:
                del fields["time"]
        return (n, message, fields or None, time_ns)

    # joining

    def _piece(
        self,
        key: tuple[str, Any],
        piece: records.Event,
        final: bool,
        now: float,
        out: list[records.Event],
    ) -> None:
        held = self._partials.get(key)
        if held is None:
            if final:
                self._message(key[1], piece, now, out)
                return
            held = self._partials[key] = _Pieces(piece[0], [], piece[2], piece[3], now)
        held.texts.append(piece[1])
        held.last = now
        if final or len(held.texts) >= self._config.max_lines:
            del self._partials[key]
            self._message(key[1], _joined(held), now, out)

    def _message(
        self, stream: Any, event: records.Event, now: float, out: list[records.Event]
    ) -> None:
        joiners = self._joiners
        if joiners is None:
            out.append(event)
            return
        joiner = joiners.get(stream)
        if joiner is None:
            assert self._config.rules is not None
            joiner = joiners[stream] = multiline.Joiner(self._config.rules, self._config.max_lines)
        joiner.push(event, now, out)

    def _unframed(self, n: int, line: str, now: float, out: list[records.Event]) -> None:
        """A line the container format does not understand: end all held records, pass it on."""
        for key, pieces in sorted(self._partials.items(), key=lambda item: item[1].first):
            self._message(key[1], _joined(pieces), now, out)
        self._partials.clear()
        if self._joiners:
            for joiner in sorted(self._joiners.values(), key=_held_order):
                joiner.flush(now, 0.0, out, force=True)
        self._message(None, (n, line, None, None), now, out)

    # accounting

    def _account(self, lines: list[str], first: int) -> None:
        """Keep ``held_bytes`` equal to the bytes from the oldest held line to the end."""
        end = first + len(lines)
        self._end = end
        oldest = min(
            (pieces.first for pieces in self._partials.values()),
            default=None,
        )
        if self._joiners:
            for joiner in self._joiners.values():
                held = joiner.held_from()
                if held is not None and (oldest is None or held < oldest):
                    oldest = held
        sizes = self._sizes
        if oldest is None:
            sizes.clear()
            self.held_bytes = 0
            return
        if sizes and oldest < first:
            drop = oldest - self._sizes_from
            if drop:
                self.held_bytes -= sum(sizes[:drop])
                del sizes[:drop]
            added = [_size(line) for line in lines]
        else:
            sizes.clear()
            self.held_bytes = 0
            added = [_size(line) for line in lines[oldest - first :]]
        sizes.extend(added)
        self.held_bytes += sum(added)
        self._sizes_from = oldest


def _present(obj: dict[str, Any], chosen: str | None, defaults: tuple[str, ...]) -> str | None:
    """The key of ``obj`` to use: ``chosen`` if set and present, else the first default present."""
    if chosen is not None:
        return chosen if chosen in obj else None
    for key in defaults:
        if key in obj:
            return key
    return None


def _joined(pieces: _Pieces) -> records.Event:
    return (pieces.first, "".join(pieces.texts), pieces.fields, pieces.time_ns)


def _held_order(joiner: multiline.Joiner) -> int:
    held = joiner.held_from()
    return -1 if held is None else held


def json_object(line: str) -> dict[str, Any] | None:
    """``line`` as a JSON object, or None. Raw control characters inside strings are accepted
    (docker writes them as they came), and so are undecodable bytes."""
    if not line.lstrip().startswith("{"):
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(line, strict=False)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None
