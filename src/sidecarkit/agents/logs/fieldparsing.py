"""The ``parse`` stage's formats: the text of one field becomes fields. Pure: no I/O.

Each function takes the text and returns ``(message, fields, time_ns)`` or ``None`` when the
text is not in the format (the record then passes unchanged, and is counted as unparsed):

- ``json``: an object; its message key (``message``, ``msg`` or ``log``) becomes the message,
  its time key (``time``, ``ts``, ``timestamp``, ``@timestamp``) the record's time, its level key
  (``level``, ``severity``, ``lvl``) the field ``level``, as the source parser ``json`` does.
- ``logfmt``: ``key=value key2="quoted value" flag`` pairs, with the same keys taken out.
- ``regex``: named groups; ``message`` (or ``log``), ``time`` and ``level`` as the source
  parser ``regex`` takes them.
- ``cri``: ``<time> <stream> <P|F> <content>`` (the kubelet's log files): the content is the
  message, ``stream`` a field; a partial line (``P``) gets ``partial: true``. Joining partial
  lines needs the source parser ``cri``, which sees the lines in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from sidecarkit.agents.logs import parsing, timestamps

__all__ = ["Parsed", "parser"]

Parsed = tuple[str | None, dict[str, Any], int | None]
"""Message (None: the text had none), fields, time in ns (None: none found)."""

_MESSAGE_KEYS: Final = ("message", "msg", "log")
_TIME_KEYS: Final = ("time", "ts", "timestamp", "@timestamp")
_LEVEL_KEYS: Final = ("level", "severity", "lvl")
_LOGFMT: Final = re.compile(r'([^\s=]+)(?:=("(?:[^"\\]|\\.)*"|\S*))?')


def _lift(obj: dict[str, Any]) -> Parsed:
    """Take the message, time and level out of ``obj`` (changed in place)."""
    message = None
    for key in _MESSAGE_KEYS:
        if key in obj:
            value = obj.pop(key)
            message = value if isinstance(value, str) else orjson.dumps(value).decode()
            break
    time_ns = None
    for key in _TIME_KEYS:
        if key in obj:
            value = obj[key]
            time_ns = timestamps.time_ns(value)
            if time_ns is not None:
                del obj[key]
            break
    for key in _LEVEL_KEYS:
        if key in obj:
            obj["level"] = obj.pop(key)
            break
    return message, obj, time_ns


def _json(text: str) -> Parsed | None:
    value = parsing.json_object(text)
    return _lift(value) if value is not None else None


def _logfmt(text: str) -> Parsed | None:
    if "=" not in text:
        return None
    obj: dict[str, Any] = {}
    for key, found in _LOGFMT.findall(text):
        value: Any = found
        if found.startswith('"') and len(found) >= 2:
            try:
                value = json.loads(found)
            except ValueError:
                value = found[1:-1]
        obj[key] = value
    return _lift(obj)


def _cri(text: str) -> Parsed | None:
    parts = text.split(" ", 3)
    if len(parts) == 3:
        parts.append("")
    if len(parts) != 4 or parts[1] not in ("stdout", "stderr") or parts[2] not in ("P", "F"):
        return None
    time_ns = timestamps.rfc3339_ns(parts[0])
    if time_ns is None:
        return None
    fields: dict[str, Any] = {"stream": parts[1]}
    if parts[2] == "P":
        fields["partial"] = True
    return parts[3], fields, time_ns


def parser(kind: str, pattern: re.Pattern[str] | None = None) -> Callable[[str], Parsed | None]:
    """The function parsing one text in format ``kind`` (``pattern`` for ``regex``)."""
    if kind == "json":
        return _json
    if kind == "logfmt":
        return _logfmt
    if kind == "cri":
        return _cri
    assert pattern is not None
    search = pattern.search

    def by_regex(text: str) -> Parsed | None:
        found = search(text)
        if found is None:
            return None
        fields = {k: v for k, v in found.groupdict().items() if v is not None}
        message = fields.pop("message", None)
        if message is None:
            message = fields.pop("log", None)
        time_ns = None
        if "time" in fields:
            time_ns = timestamps.time_ns(fields["time"])
            if time_ns is not None:
                del fields["time"]
        return message, fields, time_ns

    return by_regex
