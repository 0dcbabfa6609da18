"""Our own metrics, exposed in the Prometheus text format 0.0.4.

Small on purpose: counters, gauges and histograms with fixed label names, updated from one
event loop, rendered on scrape. Label values are escaped as the format requires.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Final, TypeVar

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "Registry"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def lines(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, k)} {_number(v)}"
            for k, v in sorted(self.values.items())
        ]


class Gauge(Counter):
    """A value that can go up and down."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], labels: Sequence[str] = ()
    ) -> None:
        super().__init__(name, documentation, labels)
        self.bounds = sorted(buckets)
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = series
        counts[bisect.bisect_left(self.bounds, value)] += 1
        total[0] += value

    def lines(self) -> list[str]:
        out = []
        for key, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip([*self.bounds, math.inf], counts, strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total[0])}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {running}")
        return out


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """The metrics of one process, rendered together."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: _M) -> _M:
        self.metrics.append(metric)
        return metric

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.header()
            lines += metric.lines()
        return ("\n".join(lines) + "\n").encode()
