"""Raw groups as JSON pieces in bulk: the HTTP sinks' fast path, with no per-line Python calls.

A group of a ``raw`` source can travel as its bytes alone (``Group.raw``, no events: see
``records``). The Elasticsearch and Loki sinks encode such a group without making one object per
line first: the text is decoded and split once, one ``orjson.dumps`` call escapes every line, and
the output is cut back into lines; the numbers that differ from line to line (line numbers,
nanoseconds) are built from a table of three-digit endings. A request body is then one
``bytes.join`` of a list filled by slice assignments, which runs in C from start to end.

The escaped lines are cut at ``","``: in orjson's compact output a quote inside a string is
always written ``\\"``, so ``","`` only occurs between two elements.
"""

from __future__ import annotations

from typing import Final

import orjson

from sidecarkit.agents.logs import records

__all__ = ["json_strings", "numbers"]

_PADDED: Final = [b"%03d" % n for n in range(1000)]
_PLAIN: Final = [b"%d" % n for n in range(1000)]
_ENDINGS: dict[tuple[bool, bytes], list[bytes]] = {}
"""Tables of the three-digit endings with a suffix, by (padded, suffix); a suffix that holds a
second's timestamp changes once a second, so the cache is emptied when it grows."""


def json_strings(raw: bytes) -> list[bytes]:
    """The lines of ``raw`` (complete lines, each ending in ``\\n``) as the insides of JSON
    strings: escaped, without the quotes.

    Lines are what the ``raw`` parser makes of them: a ``\\r`` before the newline is dropped;
    bytes that are not UTF-8 become U+FFFD. JSON leaves DEL (``\\x7f``) unescaped, so when the
    text holds none, its newlines become DELs, the whole text is escaped as one string and cut
    at the DELs; otherwise each line is escaped as an element of a list, which is cut at ``","``.
    """
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    if b"\x7f" not in raw:
        joined = raw.replace(b"\n", b"\x7f").decode("utf-8", "surrogateescape")
        try:
            encoded = orjson.dumps(joined)
        except orjson.JSONEncodeError:  # lone surrogates: bytes that were not UTF-8
            encoded = orjson.dumps(records.clean(joined))
        del joined
        # Split with the quotes on, then drop them from the ends: a slice of the whole string
        # first would copy it once more.
        out = encoded.split(b"\x7f")
        out.pop()  # the closing quote, after the last line's newline
        if out:
            out[0] = out[0][1:]
        return out
    text = raw.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    lines.pop()
    if not lines:
        return []
    try:
        encoded = orjson.dumps(lines)
    except orjson.JSONEncodeError:
        encoded = orjson.dumps([records.clean(line) for line in lines])
    return encoded[2:-2].split(b'","')


def numbers(
    start: int, count: int, *, width: int = 0, before: bytes = b"", after: bytes = b""
) -> tuple[list[bytes], list[bytes]]:
    """``start`` .. ``start + count - 1`` in decimal, each cut in two and wrapped:
    ``highs[i] + lows[i] == before + digits(start + i) + after``.

    ``width`` pads with zeros to that many digits (at least 4). The lows come from a table of
    the 1,000 three-digit endings (with ``after``) and the highs repeat for 1,000 numbers in a
    row, so no number is formatted one by one.
    """
    highs: list[bytes] = []
    lows: list[bytes] = []
    value, end = start, start + count
    while value < end:
        high, low = divmod(value, 1000)
        run = min(1000 - low, end - value)
        padded = high > 0 or width > 0
        text = b"%0*d" % (width - 3, high) if width else (b"%d" % high if high else b"")
        highs += [before + text] * run
        lows += _endings(padded, after)[low : low + run]
        value += run
    return highs, lows


def _endings(padded: bool, after: bytes) -> list[bytes]:
    table = _ENDINGS.get((padded, after))
    if table is None:
        if len(_ENDINGS) > 32:
            _ENDINGS.clear()
        base = _PADDED if padded else _PLAIN
        table = _ENDINGS[(padded, after)] = [n + after for n in base] if after else base
    return table
