"""Log timestamps as nanoseconds since the epoch. Pure: no I/O.

Parsers meet two kinds of time: RFC 3339 strings (``rfc3339_ns``; containerd, docker and most
JSON loggers write them) and epoch numbers in seconds, milliseconds, microseconds or nanoseconds
(``time_ns`` takes either, and numbers written as strings). Both answer None for what they do
not understand, so the caller decides what such a value becomes.

The seconds part of a time changes once a second at most, so ``SECONDS`` caches it by its
``YYYY-MM-DDTHH:MM:SS`` prefix; a parser on a hot path may look a prefix up there itself and skip
the call. The caches are cleared, not evicted, once they hold ``4096`` entries.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final

__all__ = ["SECONDS", "rfc3339_ns", "time_ns"]

SECONDS: dict[str, int] = {}
"""Nanoseconds since the epoch of recent ``YYYY-MM-DDTHH:MM:SS`` prefixes: they change once a
second at most, so parsing each only once keeps timestamps off the hot path's cost."""
_ZONES: dict[str, int] = {}
"""Offsets in seconds of the ``±HH:MM`` zones seen."""
_CACHED: Final = 4096


def _epoch_seconds(prefix: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) as seconds since the epoch, or None."""
    if len(prefix) != 19 or prefix[10] not in "Tt " or prefix[4] + prefix[7] != "--":
        return None
    if prefix[13] + prefix[16] != "::":
        return None
    digits = prefix[0:4] + prefix[5:7] + prefix[8:10] + prefix[11:13] + prefix[14:16] + prefix[17:]
    if not digits.isdecimal():
        return None
    try:
        moment = datetime(
            int(digits[0:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]),
            int(digits[12:14]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return int(moment.timestamp())


def _zone(zone: str) -> int | None:
    """``±HH:MM`` as seconds east of UTC, or None."""
    hours, minutes = zone[1:3], zone[4:6]
    if len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":":
        return None
    if not (hours + minutes).isdecimal():
        return None
    offset = int(hours) * 3600 + int(minutes) * 60
    return -offset if zone[0] == "-" else offset


def rfc3339_ns(text: str) -> int | None:
    """An RFC 3339 time (any number of fraction digits, ``Z`` or ``±HH:MM``) in ns, or None."""
    prefix = text[:19]
    seconds = SECONDS.get(prefix)
    if seconds is None:
        seconds = _epoch_seconds(prefix)
        if seconds is None:
            return None
        seconds *= 1_000_000_000
        if len(SECONDS) >= _CACHED:
            SECONDS.clear()
        SECONDS[prefix] = seconds
    rest = text[19:]
    if rest[-1:] in ("Z", "z"):
        fraction = rest[:-1]
    else:
        zone = rest[-6:]
        offset = _ZONES.get(zone)
        if offset is None:
            offset = _zone(zone)
            if offset is None:
                return None
            if len(_ZONES) >= _CACHED:
                _ZONES.clear()
            _ZONES[zone] = offset
        seconds -= offset * 1_000_000_000
        fraction = rest[:-6]
    if not fraction:
        return seconds
    digits = fraction[1:]
    if fraction[0] != "." or not digits.isdecimal():
        return None
    return seconds + int(digits[:9].ljust(9, "0"))


def _epoch_ns(value: float) -> int | None:
    """Epoch seconds, ms, µs or ns (told apart by size) in ns; None for NaN and infinities."""
    if not math.isfinite(value):
        return None
    size = abs(value)
    scale = 10**9 if size < 1e11 else 10**6 if size < 1e14 else 10**3 if size < 1e17 else 1
    if isinstance(value, int):
        return value * scale
    whole = math.floor(value)  # apart, so that the fraction keeps the precision it has
    return whole * scale + round((value - whole) * scale)


def time_ns(value: object) -> int | None:
    """A time field (RFC 3339 string, or epoch number, possibly as a string) in ns, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch_ns(value)
    if isinstance(value, str):
        found = rfc3339_ns(value)
        if found is not None:
            return found
        try:
            number = float(value)
        except ValueError:
            return None
        return _epoch_ns(int(value) if value.isdecimal() else number)
    return None
