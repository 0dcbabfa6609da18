"""Metric families and samples, and the lexing both text formats share.

Sans-I/O and allocation-light: a sample is a small slotted object, labels a tuple of pairs.
Lexing works on one line (a ``str``) at a time with ``str.find`` and precompiled token
patterns anchored at a position, never a regular expression over a whole line. Label sets
without backslashes take a quicker way: split on quotes, their values drop out, and what is
left (the skeleton, ``{a="",b=""}``) is checked by the lexer once and remembered.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "COUNTER_LIKE",
    "FAMILY_SUFFIXES",
    "NON_NEGATIVE",
    "Exemplar",
    "Family",
    "ParseError",
    "Sample",
    "complete_lines",
    "label_names",
    "parse_float",
    "read_labels",
    "read_quoted",
]

LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SPACE: Final = " \t"

FAMILY_SUFFIXES: Final[dict[str, tuple[str, ...]]] = {
    "counter": ("_total", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "histogram": ("_count", "_sum", "_bucket", "_created"),
    "gaugehistogram": ("_gcount", "_gsum", "_bucket"),
    "info": ("_info",),
    "gauge": ("",),
    "unknown": ("",),
    "stateset": ("",),
}
"""The sample names an OpenMetrics family of each type may hold, as suffixes of its name."""
COUNTER_LIKE: Final = frozenset({"_total", "_sum", "_count", "_bucket", "_gcount", "_gsum"})
"""Suffixes whose values OpenMetrics forbids to be NaN."""
NON_NEGATIVE: Final = frozenset({"_total", "_sum", "_count", "_bucket", "_gcount"})
"""Suffixes whose values OpenMetrics forbids to be negative."""


class ParseError(ValueError):
    """Input that is not valid exposition text, with the line and column (both 1-based)."""

    def __init__(self, message: str, line: int, column: int = 0) -> None:
        where = f"line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {message}")
        self.message = message
        self.line = line
        self.column = column


@dataclass(slots=True)
class Exemplar:
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp: float | None = None


@dataclass(slots=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp: float | None = None
    """Seconds since the epoch, in both formats (Prometheus text gives milliseconds)."""
    exemplar: Exemplar | None = None


@dataclass(slots=True)
class Family:
    name: str
    type: str
    help: str | None = None
    unit: str | None = None
    samples: list[Sample] = field(default_factory=list)


def label_shape(names: tuple[str, ...]) -> tuple[tuple[str, ...], int, int]:
    """``names`` with the positions of ``le`` and ``quantile`` among them (-1 when absent)."""
    return (
        names,
        names.index("le") if "le" in names else -1,
        names.index("quantile") if "quantile" in names else -1,
    )


class LabelPairs:
    """The ``(name, value)`` pairs a parser has made, so a pair seen before is reused.

    The series of an exposition share most of their pairs (namespace, node, container, a
    bucket bound...): each pair not made is one tracked object fewer for the cyclic garbage
    collector to count and walk, which otherwise costs about a third of parsing a large
    exposition of first-seen label sets. Bounded per name and in skeletons like the parsers'
    other caches.
    """

    __slots__ = ("_by_name", "_by_skeleton")

    def __init__(self) -> None:
        self._by_name: dict[str, dict[str, tuple[str, str]]] = {}
        self._by_skeleton: dict[str, tuple[dict[str, tuple[str, str]], ...]] = {}

    def of(
        self, skeleton: str, names: tuple[str, ...], values: list[str]
    ) -> tuple[tuple[str, str], ...]:
        """The labels ``names`` = ``values`` of a label set of this ``skeleton``."""
        maps = self._by_skeleton.get(skeleton)
        if maps is None:
            maps = tuple(self._by_name.setdefault(name, {}) for name in names)
            if len(self._by_skeleton) < _PAIRS:
                self._by_skeleton[skeleton] = maps
        made = []
        for name, value, known in zip(names, values, maps):  # noqa: B905 (one map per name)
            pair = known.get(value)
            if pair is None:
                pair = (name, value)
                if len(known) < _PAIRS:
                    known[value] = pair
            made.append(pair)
        return tuple(made)


#: Most pairs kept per label name, and most skeletons, by ``LabelPairs``.
_PAIRS: Final = 16384
#: Label sets a parser reads (or knows from earlier scrapes) before it reuses pairs: below
#: that the collector has little to walk, and a lookup per pair costs more than it saves.
PAIRS_AFTER: Final = 1024


def parse_float(text: str) -> float:
    """A sample value: decimal, exponent, ``NaN``, ``+Inf``, ``-Inf`` (as Go and Prometheus read
    them); no underscores or blanks, which Python's ``float`` would otherwise let through (it
    refuses hex on its own)."""
    if not text or "_" in text or text != text.strip():
        raise ValueError(text)  # float() takes "1_000" and blanks; Go and Prometheus do not
    return float(text)


def unescape(raw: str, *, line: int, column: int, strict: bool, quote: bool = True) -> str:
    """Undo ``\\\\``, ``\\"`` and ``\\n``. Another escape is an error in Prometheus text
    (``strict``) and kept as written in OpenMetrics, as their reference parsers do."""
    out: list[str] = []
    i = 0
    while True:
        j = raw.find("\\", i)
        if j < 0:
            out.append(raw[i:])
            return "".join(out)
        out.append(raw[i:j])
        escaped = raw[j + 1 : j + 2]
        if escaped == "\\":
            out.append("\\")
        elif escaped == '"' and quote:
            out.append('"')
        elif escaped == "n":
            out.append("\n")
        elif not strict:
            out.append("\\" + escaped)
        else:
            raise ParseError(f"invalid escape sequence \\{escaped}", line, column + j)
        i = j + 2


def read_quoted(text: str, pos: int, *, line: int, strict: bool = True) -> tuple[str, int]:
    """The string starting at the quote at ``pos``, unescaped, and the position after it."""
    end = text.find('"', pos + 1)
    if end < 0:
        raise ParseError("unterminated quoted string", line, pos + 1)
    raw = text[pos + 1 : end]
    if "\\" not in raw:
        return raw, end + 1
    # A quote preceded by an odd number of backslashes is part of the string.
    while True:
        backslashes = 0
        k = end - 1
        while k > pos and text[k] == "\\":
            backslashes += 1
            k -= 1
        if backslashes % 2 == 0:
            break
        end = text.find('"', end + 1)
        if end < 0:
            raise ParseError("unterminated quoted string", line, pos + 1)
    return unescape(text[pos + 1 : end], line=line, column=pos + 2, strict=strict), end + 1


def _skip(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _SPACE:
        pos += 1
    return pos


def read_labels(
    text: str, pos: int, *, line: int, strict: bool
) -> tuple[list[tuple[str, str]], int, str | None]:
    """Labels from the ``{`` at ``pos``: (pairs, position after ``}``, quoted metric name).

    ``strict`` is Prometheus text: blanks between tokens, a trailing comma, quoted names
    (``{"metric.name", "label.name"="v"}``, the UTF-8 extension) and only the three escapes.
    Otherwise OpenMetrics: none of the first three, and other escapes kept as written.
    """
    end = text.find("}", pos)
    if end >= 0:
        segment = text[pos : end + 1]
        if "\\" not in segment:
            parts = segment.split('"')
            if len(parts) % 2:  # else that "}" is inside a value
                names = label_names('""'.join(parts[0::2]), strict=strict)
                if names is not None:
                    return list(zip(names, parts[1::2], strict=True)), end + 1, None
    return _scan_labels(text, pos, line=line, strict=strict)


def _scan_labels(
    text: str, pos: int, *, line: int, strict: bool
) -> tuple[list[tuple[str, str]], int, str | None]:
    """``read_labels`` token by token: every shape, and the error messages."""
    spaces = quoted_names = trailing_comma = strict
    labels: list[tuple[str, str]] = []
    metric: str | None = None
    pos += 1
    n = len(text)
    expect_name = True
    while True:
        if spaces:
            pos = _skip(text, pos)
        if pos >= n:
            raise ParseError("unterminated label set", line, pos)
        char = text[pos]
        if char == "}":
            return labels, pos + 1, metric
        if not expect_name:
            raise ParseError(f"expected ',' or '}}' in label set, got {char!r}", line, pos + 1)
        if char == '"' and quoted_names:
            name, pos = read_quoted(text, pos, line=line)
            if spaces:
                pos = _skip(text, pos)
            if pos < n and text[pos] in ",}":
                if metric is not None:
                    raise ParseError("two quoted metric names in one label set", line, pos)
                metric = name
                if text[pos] == ",":
                    pos += 1
                continue
        else:
            match = LABEL_NAME.match(text, pos)
            if match is None:
                raise ParseError(f"invalid label name at {text[pos : pos + 12]!r}", line, pos + 1)
            name = match.group()
            pos = match.end()
        if spaces:
            pos = _skip(text, pos)
        if pos >= n or text[pos] != "=":
            raise ParseError(f"expected '=' after label name {name!r}", line, pos + 1)
        pos += 1
        if spaces:
            pos = _skip(text, pos)
        if pos >= n or text[pos] != '"':
            raise ParseError(f"expected a quoted value for label {name!r}", line, pos + 1)
        value, pos = read_quoted(text, pos, line=line, strict=strict)
        labels.append((name, value))
        if spaces:
            pos = _skip(text, pos)
        if pos < n and text[pos] == ",":
            pos += 1
            expect_name = True
            if not trailing_comma and text[pos : pos + 1] == "}":
                raise ParseError("a comma before '}'", line, pos)
        else:
            expect_name = False


#: Label-set skeletons already read, per strictness, and their names: the same few shapes
#: come back on almost every line. Bounded, so hostile input cannot grow them without end.
_SHAPES: Final[dict[bool, dict[str, tuple[str, ...]]]] = {True: {}, False: {}}


def label_names(skeleton: str, *, strict: bool) -> tuple[str, ...] | None:
    """The label names of ``skeleton``, a whole label set with every value emptied
    (``{a="",b=""}``), if it is valid with plain (unquoted) names; None otherwise.

    Without backslashes every quote in a label set delimits a value, so splitting it on quotes
    gives the skeleton's pieces and the values in turn, and the label set is valid exactly when
    its skeleton is. Each skeleton is read once by the full lexer.
    """
    shapes = _SHAPES[strict]
    names = shapes.get(skeleton)
    if names is None:
        try:
            labels, end, metric = _scan_labels(skeleton, 0, line=0, strict=strict)
        except ParseError:
            return None
        if metric is not None or end != len(skeleton) or skeleton.count('"') != 2 * len(labels):
            return None
        names = tuple(name for name, _ in labels)
        if len(shapes) < 4096:
            shapes[skeleton] = names
    return names


def complete_lines(data: bytes, *, first_line: int) -> tuple[list[str], bytes]:
    """The whole lines of ``data``, decoded as UTF-8, and the incomplete rest.

    ``first_line`` is the number of the first line, for the error when the bytes are not UTF-8.
    """
    cut = data.rfind(b"\n") + 1
    if not cut:
        return [], data
    try:
        text = data[:cut].decode("utf-8")
    except UnicodeDecodeError as exc:
        number = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ParseError("not UTF-8", number, column) from exc
    return text.split("\n")[:-1], data[cut:]


def is_integer(value: float) -> bool:
    return not math.isinf(value) and not math.isnan(value) and value == int(value)
