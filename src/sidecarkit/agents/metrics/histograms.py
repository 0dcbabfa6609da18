"""The consistency rules of an OpenMetrics histogram or gauge histogram, checked group by group
as its samples are kept, so a family needs no second pass when it ends.

A group is the samples sharing their labels without ``le``, and their timestamp. Within one:
bucket bounds increase and their values are cumulative, the last bucket is ``+Inf``, ``_count``
(``_gcount``) equals it, ``_sum`` and ``_count`` come together (``_gsum`` and ``_gcount``),
``_sum`` is absent when a bound is negative, and a negative ``_gsum`` needs a negative bound.
"""

from __future__ import annotations

import math

from sidecarkit.agents.metrics.exposition import ParseError

__all__ = ["Buckets"]


class Buckets:
    """The per-group checks of a (gauge)histogram, run as its samples are kept: buckets
    ordered and cumulative, +Inf last, counts and sums consistent.

    The first failure is kept and reported when the family ends, as if all its samples were
    checked then (a group is the labels without ``le``, and the timestamp).
    """

    __slots__ = (
        "bucket",
        "count",
        "error",
        "group",
        "gsum",
        "name",
        "negative",
        "negative_gsum",
        "sum",
        "timestamp",
        "value",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.error: str | None = None
        self.group: frozenset[tuple[str, str]] | None = None
        self.timestamp: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.count: float | None = None
        self.bucket: float | None = None
        self.negative = False
        self.sum = False
        self.gsum = False
        self.negative_gsum = False
        self.value = 0.0

    def add(
        self,
        suffix: str,
        group: frozenset[tuple[str, str]],
        timestamp: float | None,
        value: float,
        bound: float,
    ) -> None:
        """One kept sample; ``bound`` is its ``le`` as a number when it is a bucket."""
        if self.error is not None:
            return
        if group != self.group or timestamp != self.timestamp:
            if self.group is not None:
                self.error = self._check()
                if self.error is not None:
                    return
            self._reset()
        self.group, self.timestamp = group, timestamp
        if suffix == "_bucket":
            if bound < 0:
                self.negative = True
            previous = self.bucket
            if previous is not None and bound <= previous:
                self.error = f"{self.name}: buckets out of order"
                return
            if value < self.value:
                self.error = f"{self.name}: bucket values not cumulative"
                return
            self.bucket = bound
            self.value = value
        elif suffix in ("_count", "_gcount"):
            self.count = value
        elif suffix == "_sum":
            self.sum = True
        elif suffix == "_gsum":
            self.gsum = True
            if value < 0:
                self.negative_gsum = True

    def finish(self, number: int) -> None:
        """Raise the first failure, the last group's included, at line ``number``."""
        error = self.error
        if error is None and self.group is not None:
            error = self._check()
        if error is not None:
            raise ParseError(error, number)

    def _check(self) -> str | None:
        name = self.name
        if self.bucket != math.inf:
            return f"{name}: the +Inf bucket is missing"
        count = self.count
        if count is not None and self.value != count:
            return f"{name}: _count differs from the +Inf bucket"
        if self.sum and count is None:
            return f"{name}: _sum without _count"
        if self.gsum and count is None:
            return f"{name}: _gsum without _gcount"
        if not (self.sum or self.gsum) and count is not None:
            return f"{name}: _count without _sum"
        if self.negative and self.sum:
            return f"{name}: _sum with negative buckets"
        if not self.negative and self.negative_gsum:
            return f"{name}: negative _gsum without negative buckets"
        return None
