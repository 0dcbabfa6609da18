"""Durations as people write them in YAML and flags: ``500ms``, ``15s``, ``1m30s``, ``2h``."""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["is_duration", "seconds", "setting"]

# Patterns, compiled on first use (``re`` caches them): compiling is start-up time otherwise.
_DURATION: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART: Final = r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)"
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def is_duration(text: str) -> bool:
    return re.match(_DURATION, text) is not None


def seconds(text: str) -> float:
    """A duration such as ``1m30s`` in seconds; ValueError when it is not one."""
    if re.match(_DURATION, text) is None:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 15s or 1m30s")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(_PART, text))


def setting(value: Any, where: str) -> float:
    """A duration setting from YAML, a flag or env: a number of seconds (``15``, ``0.5``, as
    number or text) or a duration (``500ms``); never negative. ValueError says ``where``."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number or (isinstance(value, str) and value.replace(".", "", 1).isdigit()):
        result = float(value)
    else:
        try:
            result = seconds(str(value))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
    if result < 0:
        raise ValueError(f"{where}: must not be negative")
    return result
