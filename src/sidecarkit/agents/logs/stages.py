"""Processing stages of the logs agent: what the ``stages:`` list of its YAML config declares.

Stages run in order on every record between parsing and shipping (``staging`` compiles them)::

    stages:
      - type: multiline               # only first: joins lines in each source's parser
        preset: java
      - type: parse                   # parse a field: json, logfmt, regex, cri
        format: logfmt
      - type: grep                    # keep or drop records by regex on a field or the message
        field: level
        drop: ^(debug|trace)$
      - type: modify                  # rename, remove, add (if absent), set, copy pod metadata
        rename: {msg: message}
        remove: [password]
        add: {env: prod}
        set: {team: payments}
        copy: {k8s_pod: pod, app: labels.app}
      - type: redact                  # mask what matches: built-in patterns or your own
        patterns: [email, card, bearer, {regex: 'sessionid=\\w+', replacement: sessionid=***}]
      - type: throttle                # at most `rate` records per key in each `per` interval
        key: level
        rate: 100
        per: 1s
      - type: sample                  # keep one record in `rate`; by `key`, whole traces
        rate: 10
        key: trace_id

This module holds the specs (frozen dataclasses) and reads them from the YAML data, with errors
that name the stage, the key, the value and the fix. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from sidecarkit import durations
from sidecarkit.agents.logs import parsing, redaction

__all__ = [
    "KINDS",
    "Grep",
    "Modify",
    "Multiline",
    "Parse",
    "Redact",
    "Sample",
    "Stage",
    "Throttle",
    "describe",
    "from_config",
    "regex",
]

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Grep:
    """Keep the records whose ``field`` matches one of ``keep`` (when given), then drop those
    that match one of ``drop``. A record without the field matches nothing."""

    name: str
    field: str = "message"
    """``message`` (the record's text) or the name of a field, such as ``level``."""
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Modify:
    """Change fields, in this order: rename, remove, add (only where absent), set, copy."""

    name: str
    rename: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    add: tuple[tuple[str, Scalar], ...] = ()
    set: tuple[tuple[str, Scalar], ...] = ()
    copy: tuple[tuple[str, str], ...] = ()
    """Field <- pod metadata: ``pod``, ``namespace``, ``node``, ``container``, any static label,
    or ``labels.NAME`` (a pod label from the Downward API volume)."""


@dataclass(frozen=True, slots=True)
class Redact:
    """Replace what the patterns match in the named fields."""

    name: str
    fields: tuple[str, ...] = ("message",)
    patterns: tuple[redaction.Pattern, ...] = ()


@dataclass(frozen=True, slots=True)
class Parse:
    """Parse the text of ``field`` and merge what it holds into the record."""

    name: str
    format: str = "json"
    field: str = "message"
    regex: str | None = None
    """For ``regex``: named groups become fields (``message``, ``time``, ``level`` as in the
    source parsers)."""


@dataclass(frozen=True, slots=True)
class Throttle:
    """At most ``rate`` records per value of ``key`` in each ``per`` seconds of record time."""

    name: str
    rate: int = 1000
    per: float = 1.0
    key: str | None = None
    """Field whose value names the bucket (e.g. ``level``); None: one bucket for all records."""


@dataclass(frozen=True, slots=True)
class Sample:
    """Keep one record in ``rate``. With ``key``, a record with that field is kept when the
    hash of its value says so, so every record of a value (a trace) is kept or dropped together,
    the same way on every run and by every agent; the others are counted, one in ``rate`` kept."""

    name: str
    rate: int = 10
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Multiline:
    """Join stack traces: applied by each source's parser, before any other stage."""

    name: str
    preset: str | None = None
    start: str | None = None
    more: str | None = None
    flush_timeout: float = 4.0
    max_lines: int = 1000


Stage = Grep | Modify | Redact | Parse | Throttle | Sample | Multiline

KINDS: Final[dict[str, type[Stage]]] = {
    "grep": Grep,
    "modify": Modify,
    "redact": Redact,
    "parse": Parse,
    "throttle": Throttle,
    "sample": Sample,
    "multiline": Multiline,
}
PARSE_FORMATS: Final = ("json", "logfmt", "regex", "cri")
_KEYS: Final = {
    "grep": ("field", "keep", "drop"),
    "modify": ("rename", "remove", "add", "set", "copy"),
    "redact": ("fields", "patterns"),
    "parse": ("format", "field", "regex"),
    "throttle": ("rate", "per", "key"),
    "sample": ("rate", "key"),
    "multiline": ("preset", "start", "continue", "flush_timeout", "max_lines"),
}


_NAMED_GROUP: Final = re.compile(r"(?<!\\)((?:\\\\)*)\(\?<([A-Za-z_]\w*)>")


def regex(where: str, pattern: Any) -> re.Pattern[str]:
    """``pattern`` compiled (Onigmo's ``(?<name>`` accepted); a ValueError naming ``where``."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: expected a regular expression (a string), not {pattern!r}")
    try:
        return re.compile(_NAMED_GROUP.sub(r"\1(?P<\2>", pattern))
    except re.error as exc:
        raise ValueError(
            f"{where}: {pattern!r} is not a valid regular expression: {exc}; fix the pattern "
            "(Python re syntax)"
        ) from exc


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a field name (a non-empty string), not {value!r}")
    return value.strip()


def _names(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a list of field names, e.g. [password, token]")
    return tuple(_name(f"{where}[{i}]", v) for i, v in enumerate(value))


def _patterns(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a regular expression or a list of them")
    for index, item in enumerate(value):
        regex(f"{where}[{index}]", item)
    return tuple(value)


def _pairs(where: str, value: Any, *, scalars: bool) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, Mapping) or not value:
        example = "{env: prod}" if scalars else "{old_name: new_name}"
        raise ValueError(f"{where}: expected a mapping such as {example}, not {value!r}")
    out: list[tuple[str, Any]] = []
    for key, item in value.items():
        name = _name(f"{where}.{key}", key)
        if not scalars:
            out.append((name, _name(f"{where}.{key}", item)))
            continue
        if item is not None and not isinstance(item, str | int | float | bool):
            raise ValueError(
                f"{where}.{key}: expected a string, number or boolean, not {item!r}; "
                "quote it to keep it as text"
            )
        out.append((name, item))
    return tuple(out)


def _count(where: str, value: Any) -> int:
    try:
        number = int(str(value).replace("_", ""))
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{where}: expected a whole number of at least 1, not {value!r}")
    return number


def _grep(where: str, data: Mapping[str, Any], name: str) -> Grep:
    keep = _patterns(f"{where}.keep", data["keep"]) if "keep" in data else ()
    drop = _patterns(f"{where}.drop", data["drop"]) if "drop" in data else ()
    if not keep and not drop:
        raise ValueError(
            f"{where}: a grep stage needs keep or drop (or both): a regex the records to keep "
            "(or to drop) match, e.g. drop: 'GET /healthz'"
        )
    field = _name(f"{where}.field", data["field"]) if "field" in data else "message"
    return Grep(name, field, keep, drop)


def _modify(where: str, data: Mapping[str, Any], name: str) -> Modify:
    values: dict[str, Any] = {}
    for key in ("add", "set"):
        if key in data:
            values[key] = _pairs(f"{where}.{key}", data[key], scalars=True)
    for key in ("rename", "copy"):
        if key in data:
            values[key] = _pairs(f"{where}.{key}", data[key], scalars=False)
    if "remove" in data:
        values["remove"] = _names(f"{where}.remove", data["remove"])
    if not values:
        raise ValueError(
            f"{where}: a modify stage needs at least one of {', '.join(_KEYS['modify'])}"
        )
    return Modify(name, **values)


def _redact(where: str, data: Mapping[str, Any], name: str) -> Redact:
    if "patterns" not in data:
        raise ValueError(
            f"{where}: a redact stage needs patterns: built-in names "
            f"({', '.join(redaction.BUILTIN)}) or {{regex: ..., replacement: ...}}"
        )
    patterns = redaction.patterns(f"{where}.patterns", data["patterns"])
    names = _names(f"{where}.fields", data["fields"]) if "fields" in data else ("message",)
    return Redact(name, names, patterns)


def _parse(where: str, data: Mapping[str, Any], name: str) -> Parse:
    kind = data.get("format")
    if kind not in PARSE_FORMATS:
        raise ValueError(
            f"{where}.format: {kind!r} is not a format a parse stage knows; use one of "
            f"{', '.join(PARSE_FORMATS)}"
        )
    pattern = data.get("regex")
    if kind == "regex":
        compiled = regex(f"{where}.regex", pattern)
        if not compiled.groupindex:
            raise ValueError(
                f"{where}.regex: {pattern!r} has no named group; name what it captures, "
                "e.g. '^(?P<level>\\w+) (?P<message>.*)$'"
            )
    elif pattern is not None:
        raise ValueError(f"{where}.regex: only used with format: regex; remove it or set format")
    field = _name(f"{where}.field", data["field"]) if "field" in data else "message"
    return Parse(name, kind, field, pattern)


def _throttle(where: str, data: Mapping[str, Any], name: str) -> Throttle:
    if "rate" not in data:
        raise ValueError(f"{where}: a throttle stage needs rate: records allowed per interval")
    rate = _count(f"{where}.rate", data["rate"])
    per = durations.setting(data["per"], f"{where}.per") if "per" in data else 1.0
    if not per > 0:
        raise ValueError(f"{where}.per: expected a positive duration such as 1s, not {per!r}")
    key = _name(f"{where}.key", data["key"]) if data.get("key") is not None else None
    return Throttle(name, rate, per, key)


def _sample(where: str, data: Mapping[str, Any], name: str) -> Sample:
    if "rate" not in data:
        raise ValueError(f"{where}: a sample stage needs rate: keep one record in rate (e.g. 10)")
    rate = _count(f"{where}.rate", data["rate"])
    key = _name(f"{where}.key", data["key"]) if data.get("key") is not None else None
    return Sample(name, rate, key)


def _multiline(where: str, data: Mapping[str, Any], name: str) -> Multiline:
    timing: dict[str, Any] = {}
    if "flush_timeout" in data:
        timing["flush_timeout"] = durations.setting(data["flush_timeout"], f"{where}.flush_timeout")
    if "max_lines" in data:
        timing["max_lines"] = _count(f"{where}.max_lines", data["max_lines"])
    spec = parsing.ParserSpec(
        multiline=data.get("preset"),
        multiline_start=data.get("start"),
        multiline_continue=data.get("continue"),
        **timing,
    )
    if spec.multiline is None and spec.multiline_start is None and spec.multiline_continue is None:
        raise ValueError(
            f"{where}: a multiline stage needs preset ({', '.join(parsing.PRESETS)}) or "
            "start/continue regexes"
        )
    try:
        spec.validate()
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return Multiline(
        name,
        spec.multiline,
        spec.multiline_start,
        spec.multiline_continue,
        spec.flush_timeout,
        spec.max_lines,
    )


_READERS: Final[dict[str, Callable[[str, Mapping[str, Any], str], Stage]]] = {
    "grep": _grep,
    "modify": _modify,
    "redact": _redact,
    "parse": _parse,
    "throttle": _throttle,
    "sample": _sample,
    "multiline": _multiline,
}


def from_config(data: Any, where: str) -> tuple[Stage, ...]:
    """The ``stages:`` list read and checked; ValueError names the stage, key, value and fix."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ValueError(
            f"{where}: stages is a list of mappings, each with a type "
            f"({', '.join(KINDS)}), run in order"
        )
    out: list[Stage] = []
    names: set[str] = set()
    kinds = [item.get("type") if isinstance(item, Mapping) else None for item in data]
    for index, item in enumerate(data):
        here = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{here}: a stage is a mapping with a type, e.g. {{type: grep, ...}}")
        kind = item.get("type")
        if kind not in KINDS:
            raise ValueError(f"{here}.type: {kind!r} is not a stage; use one of {', '.join(KINDS)}")
        unknown = sorted(set(item) - {"type", "name", *_KEYS[kind]})
        if unknown:
            raise ValueError(
                f"{here}: unknown key {unknown[0]!r} for a {kind} stage; accepted: "
                f"{', '.join(('name', *_KEYS[kind]))}"
            )
        if kind == "multiline" and index > 0:
            raise ValueError(
                f"{here}: multiline joins the lines of each file before any other stage runs; "
                "move it to the top of stages"
            )
        if item.get("name") is not None:
            name = _name(f"{here}.name", item["name"])
        elif kinds.count(kind) > 1:
            name = f"{kind}-{kinds[: index + 1].count(kind)}"
        else:
            name = str(kind)
        if name in names:
            raise ValueError(f"{here}.name: {name!r} names two stages; give each its own name")
        names.add(name)
        out.append(_READERS[kind](here, item, name))
    return tuple(out)


def describe(stage: Stage) -> str:
    """One line saying what ``stage`` does, for ``--check-config``."""
    kind = next(k for k, v in KINDS.items() if isinstance(stage, v))
    parts = []
    for f in fields(stage):
        if f.name == "name":
            continue
        value = getattr(stage, f.name)
        if value in ((), None) or (
            kind == "multiline" and f.name in ("flush_timeout", "max_lines")
        ):
            continue
        if isinstance(value, tuple) and value and isinstance(value[0], tuple):
            value = "{" + ", ".join(f"{k}: {v!r}" for k, v in value) + "}"
        elif isinstance(value, tuple):
            value = "[" + ", ".join(str(v) for v in value) + "]"
        elif isinstance(value, str):
            value = repr(value)
        parts.append(f"{f.name}={value}")
    return f"{stage.name} ({kind}): {' '.join(parts)}"
