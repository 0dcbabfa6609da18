"""Running the processing stages: specs compiled once into one function over a list of events.

``compile`` turns the stage specs (``stages``) into a ``Pipeline``: every regex compiled, every
choice (which field, keep or drop, which fast path) made once, so that per record only the
work itself is left. A stage is a function ``(events, time_ns) -> events`` over the events of
one group (consecutive records of one file); list comprehensions do the per-record work.

Dropping a record here is processing it: the shipper commits the offsets of the lines whose
records a stage dropped like those of shipped ones, so a restart does not send them again.

Each stage counts the records it took in, passed on and dropped (``sidecarkit_logs_stage_*``);
``parse`` counts what it could not parse, ``throttle`` what it dropped per key. Pure apart from
a log line now and then about throttled records.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from sidecarkit import metering
from sidecarkit.agents.logs import fieldparsing, records, redaction, stages

__all__ = ["Pipeline", "compile", "metadata_names"]

log = logging.getLogger("sidecarkit.agent.logs")

Events = list[records.Event]
Step = Callable[[Events, int], Events]

_MAX_KEYS: Final = 10_000
"""Throttle buckets kept; past it, the stale ones are forgotten."""
_MAX_KEY_LABELS: Final = 100
"""Distinct keys the throttled counter names; the rest count as ``other``."""
_LOG_EVERY: Final = 10.0


class _Meters:
    def __init__(self, registry: metering.Registry) -> None:
        self.seen = registry.add(
            metering.Counter(
                "sidecarkit_logs_stage_in_total", "Records a processing stage took in.", ("stage",)
            )
        )
        self.passed = registry.add(
            metering.Counter(
                "sidecarkit_logs_stage_out_total",
                "Records a processing stage passed on.",
                ("stage",),
            )
        )
        self.dropped = registry.add(
            metering.Counter(
                "sidecarkit_logs_stage_dropped_total",
                "Records a processing stage dropped (grep, throttle); their lines count as done.",
                ("stage",),
            )
        )
        self.unparsed = registry.add(
            metering.Counter(
                "sidecarkit_logs_stage_unparsed_total",
                "Records a parse stage could not parse (passed on unchanged).",
                ("stage",),
            )
        )
        self.throttled = registry.add(
            metering.Counter(
                "sidecarkit_logs_throttled_total",
                "Records a throttle stage dropped, by the value of its key.",
                ("stage", "key"),
            )
        )


class Pipeline:
    """The compiled stages, run in order on the events of one group."""

    __slots__ = ("_meters", "names", "steps")

    def __init__(self, steps: list[tuple[str, Step]], meters: _Meters) -> None:
        self.steps = steps
        self.names = [name for name, _ in steps]
        self._meters = meters
        for name in self.names:
            for counter in (meters.seen, meters.passed, meters.dropped):
                counter.inc(name, amount=0)

    def __call__(self, events: Events, time_ns: int) -> Events:
        """The events that come out of the last stage; ``time_ns``: when the group was read."""
        meters = self._meters
        for name, step in self.steps:
            if not events:
                break
            before = len(events)
            events = step(events, time_ns)
            meters.seen.inc(name, amount=before)
            meters.passed.inc(name, amount=len(events))
            if len(events) != before:
                meters.dropped.inc(name, amount=before - len(events))
        return events


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _getter(field: str) -> Callable[[records.Event], str | None]:
    if field == "message":
        return lambda event: event[1]

    def get(event: records.Event) -> str | None:
        found = event[2]
        if found is None:
            return None
        value = found.get(field)
        return None if value is None else _text(value)

    return get


def _search(patterns: tuple[str, ...], where: str) -> Callable[[str], Any]:
    compiled = [stages.regex(where, p) for p in patterns]
    if len(compiled) == 1:
        return compiled[0].search
    try:  # one scan instead of several, when the patterns can share one regex
        return re.compile("|".join(f"(?:{c.pattern})" for c in compiled)).search
    except re.error:
        searches = [c.search for c in compiled]
        return lambda text: any(search(text) for search in searches)


def _grep(spec: stages.Grep) -> Step:
    keep = _search(spec.keep, f"{spec.name}.keep") if spec.keep else None
    drop = _search(spec.drop, f"{spec.name}.drop") if spec.drop else None
    if spec.field == "message":
        if keep is not None and drop is None:
            return lambda events, _: [e for e in events if keep(e[1])]
        if drop is not None and keep is None:
            return lambda events, _: [e for e in events if not drop(e[1])]
    get = _getter(spec.field)

    def wanted(event: records.Event) -> bool:
        text = get(event)
        if text is None:
            return keep is None
        return (keep is None or keep(text) is not None) and (drop is None or drop(text) is None)

    return lambda events, _: [e for e in events if wanted(e)]


def metadata_names(metadata: Mapping[str, str]) -> list[str]:
    """What ``copy`` can name, for error messages."""
    return sorted(metadata)


def _modify(spec: stages.Modify, metadata: Mapping[str, str]) -> Step:
    add = dict(spec.add)
    sets: dict[str, Any] = dict(spec.set)
    for field, key in spec.copy:
        value = metadata.get(key)
        if value is None:
            log.warning(
                "stage %s: pod metadata %r is not known here, so %r is not set; known: %s",
                spec.name,
                key,
                field,
                ", ".join(metadata_names(metadata)) or "none",
            )
            continue
        sets[field] = value
    renames, removes = spec.rename, spec.remove
    named = {*add, *sets, *removes, *(n for pair in renames for n in pair)}
    if "message" not in named and not renames and not removes:
        return lambda events, _: [(n, m, {**add, **(f or {}), **sets}, t) for n, m, f, t in events]
    with_message = "message" in named

    def one(event: records.Event) -> records.Event:
        number, message, found, stamp = event
        fields = dict(found) if found else {}
        if with_message:
            fields["message"] = message
        for old, new in renames:
            if old in fields:
                fields[new] = fields.pop(old)
        for name in removes:
            fields.pop(name, None)
        for name, value in add.items():
            fields.setdefault(name, value)
        fields.update(sets)
        if with_message:
            text = fields.pop("message", "")
            message = "" if text is None else _text(text)
        return (number, message, fields or None, stamp)

    return lambda events, _: [one(e) for e in events]


def _redact(spec: stages.Redact) -> Step:
    mask = redaction.compile(spec.patterns)
    others = tuple(f for f in spec.fields if f != "message")
    on_message = "message" in spec.fields
    if not others:
        return lambda events, _: [(n, mask(m), f, t) for n, m, f, t in events]

    def fields_of(found: dict[str, Any] | None) -> dict[str, Any] | None:
        if not found:
            return found
        changed = None
        for name in others:
            value = found.get(name)
            if isinstance(value, str):
                masked = mask(value)
                if masked != value:
                    changed = changed or dict(found)
                    changed[name] = masked
        return found if changed is None else changed

    if on_message:
        return lambda events, _: [(n, mask(m), fields_of(f), t) for n, m, f, t in events]
    return lambda events, _: [(n, m, fields_of(f), t) for n, m, f, t in events]


def _parse(spec: stages.Parse, meters: _Meters) -> Step:
    pattern = stages.regex(f"{spec.name}.regex", spec.regex) if spec.regex else None
    parse = fieldparsing.parser(spec.format, pattern)
    field, name, unparsed = spec.field, spec.name, meters.unparsed

    def one(event: records.Event) -> records.Event | None:
        number, message, found, stamp = event
        text = message if field == "message" else (found or {}).get(field)
        got = parse(text) if isinstance(text, str) else None
        if got is None:
            return None
        new_message, new_fields, new_time = got
        fields = dict(found) if found else {}
        if field != "message":
            del fields[field]
        fields.update(new_fields)
        return (
            number,
            message if new_message is None else new_message,
            fields or None,
            stamp if new_time is None else new_time,
        )

    def step(events: Events, _: int) -> Events:
        out = []
        failed = 0
        for event in events:
            parsed = one(event)
            if parsed is None:
                failed += 1
                out.append(event)
            else:
                out.append(parsed)
        if failed:
            unparsed.inc(name, amount=failed)
        return out

    return step


class _Throttle:
    """Fixed windows of ``per`` seconds of record time, one count per key.

    Record time (the time the parser found, else when the line was read) rather than the
    agent's clock, so that a backlog read fast after an outage is judged by when it was
    written, and the same input is throttled the same way however busy the machine is. A
    record from an older window counts against the current one; one much older (60 windows)
    starts over, so that a single record stamped far in the future silences nothing for long.
    """

    __slots__ = ("_last_log", "get", "name", "per_ns", "rate", "throttled", "windows")

    def __init__(self, spec: stages.Throttle, meters: _Meters) -> None:
        self.name = spec.name
        self.rate = spec.rate
        self.per_ns = max(1, round(spec.per * 1e9))
        self.get = _getter(spec.key) if spec.key is not None else None
        self.windows: dict[str | None, list[int]] = {}
        """key -> [window, passed, dropped]"""
        self.throttled = meters.throttled
        self._last_log = 0.0

    def __call__(self, events: Events, time_ns: int) -> Events:
        out = []
        windows, rate, per_ns, get = self.windows, self.rate, self.per_ns, self.get
        dropped: dict[str | None, int] = {}
        for event in events:
            window = (event[3] if event[3] is not None else time_ns) // per_ns
            key = get(event) if get is not None else None
            state = windows.get(key)
            if state is None:
                if len(windows) >= _MAX_KEYS:
                    self._forget(window)
                state = windows[key] = [window, 0, 0]
            elif window > state[0] or window < state[0] - 60:
                self._roll(key, state, window)
            if state[1] < rate:
                state[1] += 1
                out.append(event)
            else:
                state[2] += 1
                dropped[key] = dropped.get(key, 0) + 1
        for key, count in dropped.items():
            label = "" if key is None else key
            if len(self.throttled.values) >= _MAX_KEY_LABELS and (self.name, label) not in (
                self.throttled.values
            ):
                label = "other"
            self.throttled.inc(self.name, label, amount=count)
        return out

    def _roll(self, key: str | None, state: list[int], window: int) -> None:
        if state[2]:
            now = time.monotonic()
            if now - self._last_log >= _LOG_EVERY:
                self._last_log = now
                log.warning(
                    "stage %s: dropped %d records%s in %g s (at most %d); see "
                    "sidecarkit_logs_throttled_total",
                    self.name,
                    state[2],
                    "" if key is None else f" of key {key!r}",
                    self.per_ns / 1e9,
                    self.rate,
                )
        state[0], state[1], state[2] = window, 0, 0

    def _forget(self, window: int) -> None:
        stale = [k for k, state in self.windows.items() if state[0] < window - 1]
        for key in stale:
            del self.windows[key]
        if len(self.windows) >= _MAX_KEYS:
            self.windows.clear()


class _Sample:
    """One record in ``rate``: by the CRC-32 of the key's value when there is one (stable
    across runs, processes and machines, unlike Python's ``hash``), else by a running count
    that goes on from one group to the next."""

    __slots__ = ("get", "rate", "seen")

    def __init__(self, spec: stages.Sample) -> None:
        self.rate = spec.rate
        self.get = _getter(spec.key) if spec.key is not None else None
        self.seen = 0

    def __call__(self, events: Events, time_ns: int) -> Events:
        rate, seen = self.rate, self.seen
        if self.get is None:
            self.seen = seen + len(events)
            return events[(-seen) % rate :: rate]
        get, out = self.get, []
        for event in events:
            value = get(event)
            if value is None:
                if seen % rate == 0:
                    out.append(event)
                seen += 1
            elif zlib.crc32(value.encode("utf-8", "surrogateescape")) % rate == 0:
                out.append(event)
        self.seen = seen
        return out


def compile(
    chosen: tuple[stages.Stage, ...],
    *,
    metadata: Mapping[str, str] | None = None,
    metrics: metering.Registry | None = None,
) -> Pipeline | None:
    """The pipeline of ``chosen`` (``multiline`` is the parsers' job and left out here); None
    when nothing is left to run, so that an agent without stages does no per-record work."""
    scratch = metering.Registry()
    meters = _Meters(scratch)
    if metrics is not None:  # compiled again on a reload: the counters go on where they were
        known = {metric.name: metric for metric in metrics.metrics}
        for attr, metric in vars(meters).items():
            setattr(meters, attr, known.get(metric.name, metric))
        scratch.metrics = [m for m in scratch.metrics if m.name not in known]
    steps: list[tuple[str, Step]] = []
    for spec in chosen:
        if isinstance(spec, stages.Grep):
            steps.append((spec.name, _grep(spec)))
        elif isinstance(spec, stages.Modify):
            steps.append((spec.name, _modify(spec, metadata or {})))
        elif isinstance(spec, stages.Redact):
            steps.append((spec.name, _redact(spec)))
        elif isinstance(spec, stages.Parse):
            steps.append((spec.name, _parse(spec, meters)))
        elif isinstance(spec, stages.Throttle):
            steps.append((spec.name, _Throttle(spec, meters)))
        elif isinstance(spec, stages.Sample):
            steps.append((spec.name, _Sample(spec)))
    if not steps:
        return None
    if metrics is not None:
        metrics.metrics.extend(scratch.metrics)
    return Pipeline(steps, meters)
