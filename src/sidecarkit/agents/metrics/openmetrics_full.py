"""OpenMetrics lines the quick path of ``openmetrics.OpenMetricsParser.feed`` leaves:
metadata of every shape, samples with timestamps or exemplars, stateset and info families,
and every error, read token by token here with every rule checked and explained (the parser
inherits these methods); and the family being read (``OpenFamily``), which both paths keep
up to date, with the checks that run when it ends.
"""

from __future__ import annotations

import math
from typing import Final

from sidecarkit.agents.metrics import exposition, histograms, lexing
from sidecarkit.agents.metrics.exposition import ParseError

__all__ = ["BUCKET", "COUNT", "PLAIN", "QUANTILE", "ROUTES", "TOTAL", "FullPath", "OpenFamily"]

#: Metric names kept as checked (``_metadata``): hostile input cannot grow the set further.
_CACHED: Final = 16384

#: What the quick path checks for a sample name of the open family, by type and suffix:
#: nothing, a value that is neither negative nor NaN, a whole non-negative count, a bucket
#: (with a valid ``le``), a summary quantile (with a valid ``quantile``).
PLAIN: Final = 1
TOTAL: Final = 2
COUNT: Final = 3
BUCKET: Final = 4
QUANTILE: Final = 5
_QUICK: Final[dict[str, dict[str, int]]] = {
    "counter": {"_total": TOTAL, "_created": PLAIN},
    "summary": {"": QUANTILE, "_sum": TOTAL, "_count": COUNT, "_created": PLAIN},
    "histogram": {"_count": COUNT, "_sum": TOTAL, "_bucket": BUCKET, "_created": PLAIN},
    "gauge": {"": PLAIN},
    "unknown": {"": PLAIN},
}
#: Per type, each suffix with its sample names' route (check, suffix), made once. A family
#: not yet typed keeps its name alone, as plain; types not here take the full path.
ROUTES: Final = {
    kind: tuple((suffix, (code, suffix)) for suffix, code in checks.items())
    for kind, checks in {**_QUICK, "": {"": PLAIN}}.items()
}
#: The sample names of a family of each type that no later family may use, as suffixes.
_CLAIMED: Final = {
    kind: tuple(sorted({*suffixes, ""})) for kind, suffixes in exposition.FAMILY_SUFFIXES.items()
}


class OpenFamily:
    """The family being read, and what its samples so far imply."""

    __slots__ = (
        "buckets",
        "family",
        "group",
        "group_series",
        "group_timestamp",
        "quick",
        "seen_groups",
        "started",
    )
    #: The (name, labels) of the current group's samples: set with the family's first group,
    #: since every group starts one (in the parser's ``feed`` or in ``_group``) before it is read.
    group_series: set[tuple[str, frozenset[tuple[str, str]]]]

    def __init__(self, name: str, kind: str = "") -> None:
        """A family ``name`` of type ``kind`` ("" until its TYPE)."""
        # Family(name, kind), its fields stored here: a family is opened every few lines
        # of a small exposition, and the dataclass's __init__ costs a call more.
        family = self.family = object.__new__(exposition.Family)
        family.name = name
        family.type = kind
        family.help = family.unit = None
        family.samples = []
        self.started = False
        self.group: frozenset[tuple[str, str]] | None = None
        self.group_timestamp: float | None = None
        self.seen_groups: set[frozenset[tuple[str, str]]] = set()
        # Sample name -> (what the quick path checks, suffix); names not here take the full path.
        quick: dict[str, tuple[int, str]] = {}
        for suffix, route in ROUTES.get(kind, ()):
            quick[name + suffix] = route
        self.quick = quick
        self.buckets = histograms.Buckets(name) if kind in ("histogram", "gaugehistogram") else None

    def set_type(self, kind: str) -> None:
        """Type the family opened without one."""
        name = self.family.name
        self.family.type = kind
        quick = {}
        for suffix, route in ROUTES.get(kind, ()):
            quick[name + suffix] = route
        self.quick = quick
        if kind in ("histogram", "gaugehistogram"):
            self.buckets = histograms.Buckets(name)

    def allows(self, name: str) -> bool:
        """Whether a sample named ``name`` belongs to this family, by its type (its name
        alone while it has none)."""
        family = self.family.name
        return name.startswith(family) and name[len(family) :] in exposition.FAMILY_SUFFIXES.get(
            self.family.type, ("",)
        )

    def appended(
        self,
        suffix: str,
        group: frozenset[tuple[str, str]],
        timestamp: float | None,
        value: float,
        labels: tuple[tuple[str, str], ...],
    ) -> None:
        """Keep the running (gauge)histogram check up to date with a sample just kept."""
        buckets = self.buckets
        if buckets is not None and buckets.error is None and suffix:
            bound = 0.0
            if suffix == "_bucket":
                bound = exposition.parse_float(dict(labels)["le"])
            buckets.add(suffix, group, timestamp, value, bound)


class FullPath:
    """The full path of the OpenMetrics parser, and the end of a family."""

    families: list[exposition.Family]
    _line: int
    _eof: bool
    _open: OpenFamily | None
    _seen_names: set[str]
    _names: set[str]

    def _line_bytes(self, raw: bytes) -> None:
        self._line += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError("not UTF-8", self._line, exc.start + 1) from exc
        self._text_line(line)

    def _text_line(self, line: str) -> None:
        if self._eof:
            raise ParseError("text after '# EOF'", self._line)
        if not line:
            raise ParseError("blank line", self._line)
        if line == "# EOF":
            self._eof = True
        elif line[0] == "#":
            self._metadata(line)
        else:
            self._sample(line)

    def _metadata(self, line: str) -> None:
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[0] != "#":
            raise ParseError("expected '# TYPE|HELP|UNIT name text'", self._line)
        kind, name, text = parts[1], parts[2], parts[3]
        names = self._names
        if name not in names:
            if exposition.METRIC_NAME.fullmatch(name) is None:
                raise ParseError(f"invalid metric name {name!r}", self._line, 3 + len(kind))
            if len(names) < _CACHED:
                names.add(name)
        current = self._open
        if current is not None and current.family.name == name:
            if current.started:
                raise ParseError(f"metadata for {name} after its samples", self._line)
        else:
            self._finish()
            current = self._open = OpenFamily(name)
        family = current.family
        if kind == "HELP":
            if family.help is not None:
                raise ParseError(f"second HELP for {name}", self._line)
            family.help = lexing.unescape_openmetrics_help(text)
        elif kind == "TYPE":
            if family.type:
                raise ParseError(f"second TYPE for {name}", self._line)
            if text not in exposition.FAMILY_SUFFIXES:
                known = ", ".join(exposition.FAMILY_SUFFIXES)
                raise ParseError(f"unknown type {text!r}; expected one of {known}", self._line)
            current.set_type(text)
        elif kind == "UNIT":
            if family.unit is not None:
                raise ParseError(f"second UNIT for {name}", self._line)
            family.unit = text
        else:
            raise ParseError(f"unknown metadata {kind!r}; expected TYPE, HELP or UNIT", self._line)

    def _finish(self) -> None:
        current = self._open
        if current is None:
            return
        self._open = None
        family = current.family
        if not family.type:
            family.type = "unknown"
        seen = self._seen_names
        name = family.name
        # The sample names the family claims: for the types of ``ROUTES``, its name and the
        # names its quick routes hold, already made and hashed; else made here.
        quick = current.quick if family.type in ROUTES else None
        if quick is not None and name not in seen and seen.isdisjoint(quick):
            seen.add(name)
            seen.update(quick)
        else:
            claimed = [*map(name.__add__, _CLAIMED[family.type])]
            if not seen.isdisjoint(claimed):
                for full in claimed:
                    if full in seen:
                        raise ParseError(f"{full} clashes with an earlier family", self._line)
            seen.update(claimed)
        if family.unit:
            if not family.name.endswith("_" + family.unit):
                raise ParseError(
                    f"unit {family.unit!r} is not the suffix of {family.name}", self._line
                )
            if family.type in ("info", "stateset"):
                raise ParseError(f"{family.type} metrics have no unit", self._line)
        if current.buckets is not None:
            current.buckets.finish(self._line)
        self.families.append(family)

    def _sample(self, line: str) -> None:
        sample = lexing.read_openmetrics_sample(line, self._line)
        current = self._open
        if current is None or not current.allows(sample.name):
            self._finish()
            current = self._open = OpenFamily(sample.name, "unknown")
        current.started = True
        family = current.family
        name, kind = family.name, family.type or "unknown"
        suffix = sample.name[len(name) :]
        labels = dict(sample.labels)
        if len(labels) != len(sample.labels):
            raise ParseError("a label appears twice", self._line)
        value = sample.value
        if kind == "stateset":
            if name not in labels:
                raise ParseError(f"stateset sample without a {name!r} label", self._line)
            if value not in (0.0, 1.0):
                raise ParseError("stateset values are 0 or 1", self._line)
        elif kind == "info" and value != 1.0:
            raise ParseError("info values are 1", self._line)
        if suffix == "_bucket":
            le = labels.get("le")
            if le is None or le == "NaN":
                raise ParseError("a bucket needs an le label that is a number", self._line)
            try:
                bound = exposition.parse_float(le)
            except ValueError:
                raise ParseError(f"le {le!r} is not a number", self._line) from None
            if math.isinf(bound) and bound > 0 and le != "+Inf":
                raise ParseError(f"le {le!r} is not canonical; write +Inf", self._line)
            if not exposition.is_integer(value):
                raise ParseError("bucket values are whole numbers", self._line)
        if suffix in ("_count", "_gcount") and not exposition.is_integer(value):
            raise ParseError("count values are whole numbers", self._line)
        if kind == "summary" and suffix == "":
            quantile = labels.get("quantile")
            try:
                q = exposition.parse_float(quantile) if quantile is not None else -1.0
            except ValueError:
                q = -1.0
            if not 0.0 <= q <= 1.0 or (math.isinf(q) and quantile != "+Inf"):
                raise ParseError("a quantile label in [0, 1] is needed", self._line)
            if value < 0:
                raise ParseError("quantile values are not negative", self._line)
        if suffix in exposition.COUNTER_LIKE and math.isnan(value):
            raise ParseError(f"{sample.name} is counter-like and cannot be NaN", self._line)
        if suffix in exposition.NON_NEGATIVE and value < 0:
            raise ParseError(f"{sample.name} is counter-like and cannot be negative", self._line)
        if sample.exemplar is not None and not (
            (kind in ("histogram", "gaugehistogram") and suffix == "_bucket")
            or (kind == "counter" and suffix == "_total")
        ):
            raise ParseError("exemplars go only on buckets and counter totals", self._line)
        self._group(current, sample, labels, kind, suffix)

    def _group(
        self,
        current: OpenFamily,
        sample: exposition.Sample,
        labels: dict[str, str],
        kind: str,
        suffix: str,
    ) -> None:
        pairs = frozenset(sample.labels)
        if kind == "info":
            group: frozenset[tuple[str, str]] = frozenset()
        elif kind == "summary" and suffix == "":
            group = pairs - {("quantile", labels.get("quantile", ""))}
        elif kind == "stateset":
            name = current.family.name
            group = pairs - {(name, labels.get(name, ""))}
        elif suffix == "_bucket" and kind in ("histogram", "gaugehistogram"):
            group = pairs - {("le", labels.get("le", ""))}
        else:
            group = pairs
        if current.group is not None and group != current.group and group in current.seen_groups:
            raise ParseError("samples of one series group are not together", self._line)
        if current.group is not None and group == current.group:
            if (sample.timestamp is None) != (current.group_timestamp is None):
                raise ParseError("timestamps given for some samples of a group only", self._line)
            if (
                current.group_timestamp is not None
                and sample.timestamp is not None
                and sample.timestamp < current.group_timestamp
                and kind != "info"
            ):
                raise ParseError("timestamps went backwards", self._line)
        else:
            current.group_series = set()
        series = (sample.name, pairs)
        if sample.timestamp != current.group_timestamp or series not in current.group_series:
            current.family.samples.append(sample)
            current.appended(suffix, group, sample.timestamp, sample.value, sample.labels)
        current.group_series.add(series)
        current.group = group
        current.group_timestamp = sample.timestamp
        current.seen_groups.add(group)
