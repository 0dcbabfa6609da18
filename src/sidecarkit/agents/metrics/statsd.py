"""StatsD and DogStatsD: parsing packets and aggregating them into Prometheus families. Pure.

Line format: ``name:value|type[|@rate][|#tag:value,tag2:value2]``, several lines per packet
separated by newlines; DogStatsD 1.1 packs values (``name:1:2:3|h``) for every type but sets.

========  ===================================  =============================================
Type      Becomes                              Notes
========  ===================================  =============================================
``c``     counter ``name_total``               value / rate is added
``g``     gauge ``name``                       ``+3`` and ``-3`` change it, ``3`` sets it
``ms``    histogram ``name_seconds``           milliseconds, observed in seconds, 1/rate times
``h``     histogram ``name``                   observed 1/rate times
``d``     histogram ``name``                   a DogStatsD distribution, the same
``s``     gauge ``name``                       how many distinct values were seen
========  ===================================  =============================================

Names and tag keys are made valid Prometheus names (anything else becomes ``_``); tags become
labels; a tag without a value is dropped. A malformed line is counted and skipped, never fatal;
so is a series past the ``max_series`` limit, which keeps memory bounded whatever is sent.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from sidecarkit.agents.metrics import exposition, mapping

__all__ = ["DEFAULT_BUCKETS", "Aggregator", "Line", "parse_packet"]

#: Prometheus's default histogram buckets, in seconds.
DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TYPES: Final = frozenset({"c", "g", "ms", "h", "d", "s"})
MAX_SET_VALUES: Final = 10_000


@dataclass(frozen=True, slots=True)
class Line:
    """One parsed StatsD line (one value of it, for packed DogStatsD lines)."""

    name: str
    value: str
    kind: str
    rate: float = 1.0
    tags: tuple[tuple[str, str], ...] = ()


def _sanitize(name: str) -> str:
    out = [c if (c.isascii() and (c.isalnum() or c in "_:")) else "_" for c in name]
    if out and out[0].isdigit():
        out.insert(0, "_")
    return "".join(out)


def _parse_line(text: str, mapper: mapping.Mapper | None = None) -> list[Line] | None:
    name, colon, rest = text.partition(":")
    if not colon or not name:
        return None
    fields = rest.split("|")
    if len(fields) < 2:
        return None
    values, kind = fields[0], fields[1]
    if kind not in _TYPES or not values:
        return None
    rate = 1.0
    tags: list[tuple[str, str]] = []
    for extra in fields[2:]:
        if extra.startswith("@"):
            try:
                rate = float(extra[1:])
            except ValueError:
                return None
            if not 0 < rate <= 1 or math.isnan(rate):
                return None
        elif extra.startswith("#"):
            for tag in extra[1:].split(","):
                key, sep, value = tag.partition(":")
                if sep and key:
                    tags.append((_sanitize(key), value))
        elif extra.startswith(("c:", "T", "e:")):
            continue  # DogStatsD container id, timestamp, external data: not ours to use
        else:
            return None
    if mapper is not None:
        mapped = mapper.map(name)
        if mapped is not None:
            name, labels = mapped
            tags = [*labels, *(t for t in tags if t[0] not in dict(labels))]
    pieces = [values] if kind == "s" else values.split(":")
    lines = []
    for piece in pieces:
        if kind != "s":
            try:
                number = float(piece)
            except ValueError:
                return None
            if math.isnan(number) or math.isinf(number):
                return None
        lines.append(Line(_sanitize(name), piece, kind, rate, tuple(tags)))
    return lines


def parse_packet(data: bytes, mapper: mapping.Mapper | None = None) -> tuple[list[Line], int]:
    """The lines of one packet, names mapped by ``mapper`` if given, and how many were
    malformed."""
    lines: list[Line] = []
    bad = 0
    for chunk in data.split(b"\n"):
        try:
            raw = chunk.decode("utf-8").strip("\r ")
        except UnicodeDecodeError:
            bad += 1
            continue
        if not raw:
            continue
        parsed = _parse_line(raw, mapper)
        if parsed is None:
            bad += 1
        else:
            lines.extend(parsed)
    return lines, bad


@dataclass(slots=True)
class _Histogram:
    counts: list[float]
    total: float = 0.0
    count: float = 0.0


@dataclass(slots=True)
class Aggregator:
    """Running totals of everything received, ready to render as families."""

    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    max_series: int = 10_000
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    histograms: dict[tuple[str, tuple[tuple[str, str], ...]], _Histogram] = field(
        default_factory=dict
    )
    sets: dict[tuple[str, tuple[tuple[str, str], ...]], set[str]] = field(default_factory=dict)
    ttl: float = 0.0
    """Seconds a series may go without a line before it is forgotten (0: never), as
    statsd_exporter's ``ttl``: an app that stopped sending a series no longer exposes it."""
    clock: Callable[[], float] = time.monotonic
    mapper: mapping.Mapper | None = None
    """statsd_exporter-style name mapping (see ``mapping``)."""
    malformed: int = 0
    dropped: int = 0
    """Lines not kept because the series limit was reached."""
    set_values_dropped: int = 0
    """Set members not counted because the set already held ``MAX_SET_VALUES``."""
    expired: int = 0
    """Series forgotten after ``ttl`` without a line."""
    newly_capped: list[str] = field(default_factory=list)
    """Names of sets that reached their cap since the caller last emptied this list."""
    _kinds: dict[str, str] = field(default_factory=dict)
    _touched: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _capped: set[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=set)

    def add_packet(self, data: bytes) -> None:
        lines, bad = parse_packet(data, self.mapper)
        self.malformed += bad
        for line in lines:
            self.add(line)

    def _series_count(self) -> int:
        return len(self.counters) + len(self.gauges) + len(self.histograms) + len(self.sets)

    def add(self, line: Line) -> None:
        kind = {"c": "counter", "g": "gauge", "s": "set"}.get(line.kind, "histogram")
        name = line.name
        if line.kind == "ms":
            name += "_seconds"
        known = self._kinds.setdefault(name, kind)
        if known != kind:
            self.malformed += 1  # one name, two types: keep the first
            return
        key = (name, tuple(sorted(line.tags)))
        table: dict[tuple[str, tuple[tuple[str, str], ...]], object] = {
            "counter": self.counters,
            "gauge": self.gauges,
            "histogram": self.histograms,
            "set": self.sets,
        }[kind]  # type: ignore[assignment]
        if key not in table and self._series_count() >= self.max_series:
            self.expire()
            if self._series_count() >= self.max_series:
                self.dropped += 1
                return
        if self.ttl:
            self._touched[key] = self.clock()
        if kind == "counter":
            self.counters[key] = self.counters.get(key, 0.0) + float(line.value) / line.rate
        elif kind == "gauge":
            value = float(line.value)
            if line.value[:1] in "+-":
                self.gauges[key] = self.gauges.get(key, 0.0) + value
            else:
                self.gauges[key] = value
        elif kind == "set":
            seen = self.sets.setdefault(key, set())
            if len(seen) < MAX_SET_VALUES:
                seen.add(line.value)
            elif line.value not in seen:
                self.set_values_dropped += 1
                if key not in self._capped:
                    self._capped.add(key)
                    self.newly_capped.append(name)
        else:
            value = float(line.value) / (1000.0 if line.kind == "ms" else 1.0)
            histogram = self.histograms.get(key)
            if histogram is None:
                histogram = self.histograms[key] = _Histogram([0.0] * (len(self.buckets) + 1))
            weight = 1.0 / line.rate
            histogram.counts[bisect.bisect_left(self.buckets, value)] += weight
            histogram.total += value * weight
            histogram.count += weight

    def expire(self) -> None:
        """Forget the series idle for longer than ``ttl``."""
        if not self.ttl or not self._touched:
            return
        cutoff = self.clock() - self.ttl
        idle = [key for key, at in self._touched.items() if at < cutoff]
        for key in idle:
            del self._touched[key]
            self._capped.discard(key)
            self.counters.pop(key, None)
            self.gauges.pop(key, None)
            self.histograms.pop(key, None)
            self.sets.pop(key, None)
        self.expired += len(idle)

    def families(self) -> list[exposition.Family]:
        """Everything so far, as families sorted by name (idle series expired first)."""
        self.expire()
        by_name: dict[str, exposition.Family] = {}

        def family(name: str, kind: str) -> exposition.Family:
            found = by_name.get(name)
            if found is None:
                found = by_name[name] = exposition.Family(name, kind, "Received over StatsD.")
            return found

        for (name, labels), value in self.counters.items():
            base = name[: -len("_total")] if name.endswith("_total") else name
            family(base, "counter").samples.append(
                exposition.Sample(base + "_total", labels, value)
            )
        for (name, labels), value in self.gauges.items():
            family(name, "gauge").samples.append(exposition.Sample(name, labels, value))
        for (name, labels), seen in self.sets.items():
            family(name, "gauge").samples.append(exposition.Sample(name, labels, len(seen)))
        for (name, labels), h in self.histograms.items():
            f = family(name, "histogram")
            running = 0.0
            for bound, count in zip([*self.buckets, math.inf], h.counts, strict=True):
                running += count
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                f.samples.append(
                    exposition.Sample(name + "_bucket", (*labels, ("le", le)), running)
                )
            f.samples.append(exposition.Sample(name + "_count", labels, h.count))
            f.samples.append(exposition.Sample(name + "_sum", labels, h.total))
        return [by_name[n] for n in sorted(by_name)]


def parse_buckets(text: str | Iterable[float]) -> tuple[float, ...]:
    """Buckets from ``0.1,0.5,1`` (or numbers), checked increasing and finite."""
    values = (
        [float(v) for v in text.split(",") if v.strip()] if isinstance(text, str) else list(text)
    )
    if not values or any(math.isnan(v) or math.isinf(v) for v in values):
        raise ValueError("buckets are finite numbers, e.g. 0.005,0.01,0.1,1")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError("buckets must increase, e.g. 0.005,0.01,0.1,1")
    return tuple(values)
