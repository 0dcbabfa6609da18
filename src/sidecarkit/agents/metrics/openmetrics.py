"""OpenMetrics 1.0 text, parsed strictly: what the conformance suite accepts, and nothing more.

Feed bytes as they arrive (``feed``), then ``close`` for the families; or call ``parse``.
Complete lines are parsed as soon as they are in, so memory holds one partial line plus the
result. Errors carry the line and column.

Rules checked, beyond the grammar: the stream ends with ``# EOF`` and nothing follows; no blank
lines; metadata (``TYPE``, ``HELP``, ``UNIT``, each at most once) comes before a family's
samples; families do not interleave and names do not clash with another family's sample names;
a unit is the name's suffix and not on info or stateset; counter-like values are neither NaN nor
negative; buckets have a canonical ``le``, integer counts, increasing bounds and cumulative
values ending at ``+Inf``, and ``_count`` equals it; ``_sum``/``_count`` come together;
summary quantiles are in [0, 1] with non-negative values; stateset values are 0 or 1 and info
values 1; exemplars only on buckets and counter totals, with at most 128 characters of labels;
within a series timestamps never go backwards and are either always or never given.
"""

from __future__ import annotations

import math
from typing import Final

from sidecarkit.agents.metrics import exposition
from sidecarkit.agents.metrics.exposition import ParseError

__all__ = ["CONTENT_TYPE", "OpenMetricsParser", "parse"]

CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_SUFFIXES: Final[dict[str, tuple[str, ...]]] = {
    "counter": ("_total", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "histogram": ("_count", "_sum", "_bucket", "_created"),
    "gaugehistogram": ("_gcount", "_gsum", "_bucket"),
    "info": ("_info",),
    "gauge": ("",),
    "unknown": ("",),
    "stateset": ("",),
}
_COUNTER_LIKE: Final = frozenset({"_total", "_sum", "_count", "_bucket", "_gcount", "_gsum"})
_NON_NEGATIVE: Final = frozenset({"_total", "_sum", "_count", "_bucket", "_gcount"})
_MAX_EXEMPLAR_CHARS: Final = 128


class _Open:
    """The family being read, and what its samples so far imply."""

    __slots__ = (
        "allowed",
        "family",
        "group",
        "group_series",
        "group_timestamp",
        "seen_groups",
        "started",
    )

    def __init__(self, family: exposition.Family) -> None:
        self.family = family
        self.allowed: tuple[str, ...] = (family.name,)
        self.started = False
        self.group: frozenset[tuple[str, str]] | None = None
        self.group_timestamp: float | None = None
        self.group_series: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        self.seen_groups: set[frozenset[tuple[str, str]]] = set()


class OpenMetricsParser:
    """Incremental parser: ``feed`` chunks, then ``close``."""

    def __init__(self) -> None:
        self.families: list[exposition.Family] = []
        self._buffer = b""
        self._line = 0
        self._eof = False
        self._open: _Open | None = None
        self._seen_names: set[str] = set()

    def feed(self, data: bytes) -> None:
        lines, self._buffer = exposition.complete_lines(
            self._buffer + data, first_line=self._line + 1
        )
        for line in lines:
            self._line += 1
            self._text_line(line)

    def close(self) -> list[exposition.Family]:
        if self._buffer:
            # Only "# EOF" may end without a newline.
            self._line_bytes(self._buffer)
            self._buffer = b""
        if not self._eof:
            raise ParseError("missing '# EOF' at the end", self._line + 1)
        self._finish()
        return self.families

    # -- lines ----------------------------------------------------------------------------

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
        match = exposition.METRIC_NAME.fullmatch(name)
        if match is None:
            raise ParseError(f"invalid metric name {name!r}", self._line, 3 + len(kind))
        current = self._open
        if current is not None and current.family.name == name:
            if current.started:
                raise ParseError(f"metadata for {name} after its samples", self._line)
        else:
            self._finish()
            current = self._open = _Open(exposition.Family(name, "unknown"))
            current.family.type = ""
        family = current.family
        if kind == "HELP":
            if family.help is not None:
                raise ParseError(f"second HELP for {name}", self._line)
            family.help = _unescape_help(text)
        elif kind == "TYPE":
            if family.type:
                raise ParseError(f"second TYPE for {name}", self._line)
            if text not in _SUFFIXES:
                raise ParseError(
                    f"unknown type {text!r}; expected one of {', '.join(_SUFFIXES)}", self._line
                )
            family.type = text
            current.allowed = tuple(name + s for s in _SUFFIXES[text])
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
        for suffix in {*_SUFFIXES[family.type], ""}:
            full = family.name + suffix
            if full in self._seen_names:
                raise ParseError(f"{full} clashes with an earlier family", self._line)
            self._seen_names.add(full)
        if family.unit:
            if not family.name.endswith("_" + family.unit):
                raise ParseError(
                    f"unit {family.unit!r} is not the suffix of {family.name}", self._line
                )
            if family.type in ("info", "stateset"):
                raise ParseError(f"{family.type} metrics have no unit", self._line)
        if family.type in ("histogram", "gaugehistogram"):
            _check_histogram(family, self._line)
        self.families.append(family)

    def _sample(self, line: str) -> None:
        sample = _read_sample(line, self._line)
        current = self._open
        if current is None or sample.name not in current.allowed:
            self._finish()
            current = self._open = _Open(exposition.Family(sample.name, "unknown"))
            current.allowed = (sample.name,)
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
        if suffix in _COUNTER_LIKE and math.isnan(value):
            raise ParseError(f"{sample.name} is counter-like and cannot be NaN", self._line)
        if suffix in _NON_NEGATIVE and value < 0:
            raise ParseError(f"{sample.name} is counter-like and cannot be negative", self._line)
        if sample.exemplar is not None and not (
            (kind in ("histogram", "gaugehistogram") and suffix == "_bucket")
            or (kind == "counter" and suffix == "_total")
        ):
            raise ParseError("exemplars go only on buckets and counter totals", self._line)
        self._group(current, sample, labels, kind, suffix)

    def _group(
        self,
        current: _Open,
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
        current.group_series.add(series)
        current.group = group
        current.group_timestamp = sample.timestamp
        current.seen_groups.add(group)


def _unescape_help(text: str) -> str:
    if "\\" not in text:
        return text
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace('\\"', '"').replace("\0", "\\")


#: Metric names already seen valid (bounded): names repeat on every line of a family.
_KNOWN_NAMES: set[str] = set()


def _read_sample(line: str, number: int) -> exposition.Sample:
    end = line.find(" ")
    brace = line.find("{", 0, end if end >= 0 else len(line))
    pos = brace if brace >= 0 else end
    name = line[:pos] if pos > 0 else ""
    if name not in _KNOWN_NAMES:
        match = exposition.METRIC_NAME.match(line)
        if match is None:
            raise ParseError(f"invalid metric name at {line[:20]!r}", number, 1)
        name = match.group()
        pos = match.end()
        if len(_KNOWN_NAMES) < 4096:
            _KNOWN_NAMES.add(name)
    labels: list[tuple[str, str]] = []
    if pos < len(line) and line[pos] == "{":
        labels, pos, _ = exposition.read_labels(line, pos, line=number, strict=False)
    rest = line[pos:]
    if not rest.startswith(" "):
        raise ParseError("expected a space and a value after the name and labels", number, pos + 1)
    body = rest[1:]
    exemplar = None
    cut = body.find(" # ")
    if cut >= 0:
        exemplar = _read_exemplar(body[cut + 3 :], number, pos + cut + 5)
        body = body[:cut]
    parts = body.split(" ")
    if len(parts) > 2 or "" in parts:
        raise ParseError(
            "expected 'value' or 'value timestamp' separated by one space", number, pos + 2
        )
    try:
        value = exposition.parse_float(parts[0])
    except ValueError:
        raise ParseError(f"invalid value {parts[0]!r}", number, pos + 2) from None
    timestamp = _timestamp(parts[1], number) if len(parts) == 2 else None
    return exposition.Sample(name, tuple(labels), value, timestamp, exemplar)


def _timestamp(text: str, number: int) -> float:
    try:
        value = exposition.parse_float(text)
    except ValueError:
        raise ParseError(f"invalid timestamp {text!r}", number) from None
    if math.isnan(value) or math.isinf(value):
        raise ParseError(f"invalid timestamp {text!r}", number)
    return value


def _read_exemplar(text: str, number: int, column: int) -> exposition.Exemplar:
    if not text.startswith("{"):
        raise ParseError("an exemplar starts with '{'", number, column)
    labels, pos, _ = exposition.read_labels(text, 0, line=number, strict=False)
    if sum(len(k) + len(v) for k, v in labels) > _MAX_EXEMPLAR_CHARS:
        raise ParseError("exemplar labels longer than 128 characters", number, column)
    rest = text[pos:]
    if not rest.startswith(" "):
        raise ParseError("expected a space and a value after exemplar labels", number, column + pos)
    parts = rest[1:].split(" ")
    if len(parts) > 2 or "" in parts:
        raise ParseError("expected exemplar 'value' or 'value timestamp'", number, column + pos)
    try:
        value = exposition.parse_float(parts[0])
    except ValueError:
        raise ParseError(f"invalid exemplar value {parts[0]!r}", number, column + pos) from None
    timestamp = _timestamp(parts[1], number) if len(parts) == 2 else None
    return exposition.Exemplar(tuple(labels), value, timestamp)


def _check_histogram(family: exposition.Family, number: int) -> None:
    """Per group of a (gauge)histogram: buckets ordered and cumulative, +Inf last, counts and
    sums consistent."""
    name = family.name
    state: dict[str, object] = {}
    group: tuple[tuple[str, str], ...] | None = None
    timestamp: float | None = None

    def check() -> None:
        if state["bucket"] != math.inf:
            raise ParseError(f"{name}: the +Inf bucket is missing", number)
        count = state["count"]
        if count is not None and state["value"] != count:
            raise ParseError(f"{name}: _count differs from the +Inf bucket", number)
        if state["sum"] and count is None:
            raise ParseError(f"{name}: _sum without _count", number)
        if state["gsum"] and count is None:
            raise ParseError(f"{name}: _gsum without _gcount", number)
        if not (state["sum"] or state["gsum"]) and count is not None:
            raise ParseError(f"{name}: _count without _sum", number)
        if state["negative"] and state["sum"]:
            raise ParseError(f"{name}: _sum with negative buckets", number)
        if not state["negative"] and state["negative_gsum"]:
            raise ParseError(f"{name}: negative _gsum without negative buckets", number)

    for sample in family.samples:
        suffix = sample.name[len(name) :]
        if not suffix:
            continue
        g = tuple(sorted((k, v) for k, v in sample.labels if k != "le" or suffix != "_bucket"))
        if g != group or sample.timestamp != timestamp:
            if group is not None:
                check()
            state = {
                "count": None,
                "bucket": None,
                "negative": False,
                "sum": False,
                "gsum": False,
                "negative_gsum": False,
                "value": 0.0,
            }
        group, timestamp = g, sample.timestamp
        if suffix == "_bucket":
            bound = exposition.parse_float(dict(sample.labels)["le"])
            if bound < 0:
                state["negative"] = True
            previous = state["bucket"]
            if isinstance(previous, float) and bound <= previous:
                raise ParseError(f"{name}: buckets out of order", number)
            if sample.value < float(state["value"]):  # type: ignore[arg-type]
                raise ParseError(f"{name}: bucket values not cumulative", number)
            state["bucket"] = bound
            state["value"] = sample.value
        elif suffix in ("_count", "_gcount"):
            state["count"] = sample.value
        elif suffix == "_sum":
            state["sum"] = True
        elif suffix == "_gsum":
            state["gsum"] = True
            if sample.value < 0:
                state["negative_gsum"] = True
    if group is not None:
        check()


def parse(data: bytes) -> list[exposition.Family]:
    """Every family of an OpenMetrics exposition; ParseError says what and where."""
    parser = OpenMetricsParser()
    parser.feed(data)
    return parser.close()
