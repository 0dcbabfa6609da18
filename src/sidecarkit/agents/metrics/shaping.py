"""Giving any families a shape that is valid OpenMetrics 1.0, for the merged endpoint.

Families parsed from the Prometheus text format, or merged from several targets, need not be
valid OpenMetrics as they are: a Go program exposes a counter ``go_memstats_alloc_bytes_total``
beside a gauge ``go_memstats_alloc_bytes``, and OpenMetrics names that counter
``go_memstats_alloc_bytes`` too; text allows fractional bucket counts, a ``_count`` that
differs from the ``+Inf`` bucket, series of a histogram interleaved, a negative counter.

Each family keeps its type when the result is valid: every name its type reserves
(``x``, ``x_total``, ``x_created`` for a counter ``x``) is claimed by no other family, and its
samples pass the checks of its type (the reference parser's, also ours in ``openmetrics``).
Otherwise its samples go out under type ``unknown``, one family per sample name, which keeps
every sample and its name, and loses only the type. Samples of a family are reordered so that
each group (the labels without ``le`` or ``quantile``) is contiguous, as OpenMetrics requires.
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sidecarkit.agents.metrics import exposition, histograms

__all__ = ["Shaped", "shape"]

_INTEGER: Final = ("_bucket", "_count", "_gcount")


@dataclass(frozen=True, slots=True)
class Shaped:
    """A family as it is written in OpenMetrics."""

    name: str
    type: str
    help: str | None
    unit: str | None
    samples: Sequence[exposition.Sample]
    exemplars: bool
    """Whether this family's samples may carry exemplars (counter totals and buckets)."""


def _proper(family: exposition.Family) -> tuple[str, str]:
    """The OpenMetrics name and type a family would have if nothing clashed."""
    name, kind = family.name, family.type
    if kind == "untyped":
        return name, "unknown"
    if kind == "counter" and name.endswith("_total"):
        return name[: -len("_total")], kind
    return name, kind


def shape(families: Iterable[exposition.Family]) -> list[Shaped]:
    """``families`` as valid OpenMetrics families, in order; no sample is lost."""
    families = list(families)
    proper = [_proper(f) for f in families]
    # The names each family claims: its samples' names, and its name as written in the text
    # format (not the shorter OpenMetrics name of a counter, which is the one that yields).
    claims: dict[str, int] = {}
    claimed: list[set[str]] = []
    for family in families:
        names = {s.name for s in family.samples}
        names.add(family.name)
        claimed.append(names)
        for n in names:
            claims[n] = claims.get(n, 0) + 1
    out: list[Shaped] = []
    demoted: dict[str, list[exposition.Sample]] = {}
    taken: set[str] = set()  # names reserved by the families kept with their type
    for family, (name, kind), own in zip(families, proper, claimed, strict=True):
        reserved = {name, *(name + s for s in exposition.FAMILY_SUFFIXES.get(kind, ("",)))}
        free = taken.isdisjoint(reserved) and all(
            claims.get(n, 0) <= (1 if n in own else 0) for n in reserved
        )
        samples = _grouped(family.samples, name, kind) if free else None
        if samples is not None and _valid(samples, name, kind):
            taken |= reserved
            unit = family.unit
            if unit and (kind in ("info", "stateset") or not name.endswith("_" + unit)):
                unit = None
            exemplars = kind in ("counter", "histogram", "gaugehistogram")
            out.append(Shaped(name, kind, family.help, unit, samples, exemplars))
            continue
        for s in family.samples:
            bucket = demoted.get(s.name)
            if bucket is None:
                bucket = demoted[s.name] = []
                out.append(Shaped(s.name, "unknown", family.help, None, bucket, False))
            bucket.append(s)
    for shaped in out:
        if shaped.type == "unknown" and shaped.samples is demoted.get(shaped.name):
            demoted[shaped.name] = _series_once(demoted[shaped.name])
    return [
        Shaped(s.name, s.type, s.help, s.unit, demoted[s.name], False)
        if s.type == "unknown" and s.name in demoted
        else s
        for s in out
    ]


def _group_of(sample: exposition.Sample, name: str, kind: str) -> tuple[tuple[str, str], ...]:
    """The labels that make a sample's group, as the reference parser reads them."""
    labels = sample.labels
    if kind == "summary" and sample.name == name:
        return tuple(sorted((k, v) for k, v in labels if k != "quantile"))
    if kind in ("histogram", "gaugehistogram") and sample.name == name + "_bucket":
        return tuple(sorted((k, v) for k, v in labels if k != "le"))
    if kind == "stateset":
        return tuple(sorted((k, v) for k, v in labels if k != name))
    if kind == "info":
        return ()
    return tuple(sorted(labels))


def _grouped(
    samples: Sequence[exposition.Sample], name: str, kind: str
) -> Sequence[exposition.Sample] | None:
    """``samples`` with each group contiguous (stable), or None when a group mixes samples
    with and without timestamps or its timestamps go backwards."""
    # The usual case, and the largest families: each series is its own group, so only a
    # series given twice can break the grouping. Checked with one set, not per sample.
    if (
        kind in ("gauge", "unknown", "counter")
        and len({s.name for s in samples}) <= 1
        and len({s.labels for s in samples}) == len(samples)
    ):
        return samples
    groups: dict[tuple[tuple[str, str], ...], list[exposition.Sample]] = {}
    order_kept = True
    last = None
    for s in samples:
        key = _group_of(s, name, kind)
        members = groups.get(key)
        if members is None:
            groups[key] = [s]
        else:
            if key != last:
                order_kept = False
            previous = members[-1].timestamp
            if (previous is None) != (s.timestamp is None):
                return None
            backwards = previous is not None and s.timestamp is not None and s.timestamp < previous
            if backwards and kind != "info":
                return None
            members.append(s)
        last = key
    if order_kept:
        return samples
    return [s for members in groups.values() for s in members]


def _valid(samples: Sequence[exposition.Sample], name: str, kind: str) -> bool:
    """Whether ``samples`` pass the value checks of an OpenMetrics family ``kind``."""
    allowed = {name + s: s for s in exposition.FAMILY_SUFFIXES.get(kind, ("",))}
    if not {s.name for s in samples} <= allowed.keys():
        return False
    if kind in ("gauge", "unknown"):
        return True
    if kind == "counter":
        return all(s.value >= 0 for s in samples if s.name != name + "_created")
    buckets = histograms.Buckets(name) if kind in ("histogram", "gaugehistogram") else None
    for s in samples:
        suffix = allowed.get(s.name)
        if suffix is None:
            return False
        value = s.value
        if suffix in exposition.COUNTER_LIKE:
            if math.isnan(value) or (value < 0 and suffix in exposition.NON_NEGATIVE):
                return False
            if suffix in _INTEGER and value != int(value):
                return False
        labels = dict(s.labels)
        if kind == "summary" and suffix == "":
            quantile = labels.get("quantile")
            if quantile is None or not _number_in(quantile, 0.0, 1.0) or value < 0:
                return False
        elif kind == "stateset":
            if name not in labels or value not in (0.0, 1.0):
                return False
        elif kind == "info" and value != 1:
            return False
        if buckets is not None:
            bound = 0.0
            if suffix == "_bucket":
                le = labels.get("le")
                if le is None:
                    return False
                try:
                    bound = exposition.parse_float(le)
                except ValueError:
                    return False
                if math.isnan(bound):
                    return False
            buckets.add(suffix, frozenset(_group_of(s, name, kind)), s.timestamp, value, bound)
    if buckets is not None:
        try:
            buckets.finish(0)
        except exposition.ParseError:
            return False
    return True


def _number_in(text: str, low: float, high: float) -> bool:
    try:
        value = exposition.parse_float(text)
    except ValueError:
        return False
    return low <= value <= high


def _series_once(samples: list[exposition.Sample]) -> list[exposition.Sample]:
    """Samples of an ``unknown`` family with each series once, or several times in timestamp
    order when every one has a timestamp (a series is its own group there)."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[exposition.Sample]] = {}
    repeated = False
    for s in samples:
        key = (s.name, tuple(sorted(s.labels)))
        known = series.get(key)
        if known is None:
            series[key] = [s]
        else:
            repeated = True
            known.append(s)
    if not repeated:
        return samples
    out: list[exposition.Sample] = []
    for members in series.values():
        if len(members) > 1 and all(m.timestamp is not None for m in members):
            out.extend(sorted(members, key=lambda m: m.timestamp or 0.0))
        else:
            out.append(members[0])
    return out
