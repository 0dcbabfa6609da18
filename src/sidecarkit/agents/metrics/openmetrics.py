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

from sidecarkit.agents.metrics import exposition, histograms, lexing, reading
from sidecarkit.agents.metrics.exposition import ParseError

__all__ = ["CONTENT_TYPE", "OpenMetricsParser", "parse"]

CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"


#: What the quick path checks for a sample name of the open family, by type and suffix:
#: nothing, a value that is neither negative nor NaN, a whole non-negative count, a bucket
#: (with a valid ``le``), a summary quantile (with a valid ``quantile``).
_PLAIN: Final = 1
_TOTAL: Final = 2
_COUNT: Final = 3
_BUCKET: Final = 4
_QUANTILE: Final = 5
_QUICK: Final[dict[str, dict[str, int]]] = {
    "counter": {"_total": _TOTAL, "_created": _PLAIN},
    "summary": {"": _QUANTILE, "_sum": _TOTAL, "_count": _COUNT, "_created": _PLAIN},
    "histogram": {"_count": _COUNT, "_sum": _TOTAL, "_bucket": _BUCKET, "_created": _PLAIN},
    "gauge": {"": _PLAIN},
    "unknown": {"": _PLAIN},
}
#: Per type, each suffix with its sample names' route (check, suffix), made once. A family
#: not yet typed keeps its name alone, as plain; types not here take the full path.
_ROUTES: Final = {
    kind: tuple((suffix, (code, suffix)) for suffix, code in checks.items())
    for kind, checks in {**_QUICK, "": {"": _PLAIN}}.items()
}
#: The sample names of a family of each type that no later family may use, as suffixes.
_CLAIMED: Final = {
    kind: tuple(sorted({*suffixes, ""})) for kind, suffixes in exposition.FAMILY_SUFFIXES.items()
}

#: A label set read once per parser: (labels, their pairs as a set, the pairs without ``le``
#: when ``le`` is a valid bucket bound, that bound, the pairs without ``quantile`` when it is a
#: valid quantile). The sets are the series groups the grouping rules compare.
_LabelSet = tuple[
    tuple[tuple[str, str], ...],
    frozenset[tuple[str, str]],
    frozenset[tuple[str, str]] | None,
    float,
    frozenset[tuple[str, str]] | None,
]
_NO_LABELS: Final[_LabelSet] = ((), frozenset(), None, 0.0, None)
#: Label sets whose first label is the one that varies down a run.
_FIRST_VARIES: Final = ('le="', 'quantile="')
#: Entries per cache: label sets repeat, and hostile input cannot grow the caches further.
_CACHED: Final = 16384
#: Most label sets a cache kept across scrapes holds (``label_sets``): a large target's.
LABEL_SETS: Final = 1 << 20


class _Open:
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
    #: since every group starts one (here in ``feed`` or in ``_group``) before it is read.
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
        for suffix, route in _ROUTES.get(kind, ()):
            quick[name + suffix] = route
        self.quick = quick
        self.buckets = histograms.Buckets(name) if kind in ("histogram", "gaugehistogram") else None

    def set_type(self, kind: str) -> None:
        """Type the family opened without one."""
        name = self.family.name
        self.family.type = kind
        quick = {}
        for suffix, route in _ROUTES.get(kind, ()):
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


class OpenMetricsParser:
    """Incremental parser: ``feed`` chunks, then ``close``.

    Each sample line first tries the quick path: a sample name the open family allows, a label
    set read once per parser, ``name{...} value`` with single spaces, and the checks and
    grouping rules its kind needs. Whatever the quick path does not recognise (metadata,
    timestamps, exemplars, stateset and info families, and every error) goes to the full path,
    which accepts exactly the same lines and explains the rest.
    """

    def __init__(
        self,
        limits: reading.Limits | None = None,
        *,
        label_sets: dict[str, _LabelSet] | None = None,
    ) -> None:
        """``label_sets``: a cache of label sets kept by the caller from one scrape of a
        target to the next (its series repeat), so a known series is neither split nor
        checked again and keeps its labels tuple; bounded by ``LABEL_SETS``."""
        self.reader = reading.Reader(limits)
        self.families: list[exposition.Family] = []
        self._line = 0
        self._eof = False
        self._open: _Open | None = None
        self._seen_names: set[str] = set()
        # Metric names in metadata already found valid: HELP, TYPE and UNIT share them.
        self._names: set[str] = set()
        # The exact text of a label set that reads without errors, inside its braces.
        self._label_sets: dict[str, _LabelSet] = {} if label_sets is None else label_sets
        self._label_bound = _CACHED if label_sets is None else LABEL_SETS
        # Label-set skeletons (a="",b="") with distinct names, with where "le" and
        # "quantile" are (-1 when absent).
        self._shapes: dict[str, tuple[tuple[str, ...], int, int]] = {}
        # Label pairs made, reused by later label sets.
        self._pairs = exposition.LabelPairs()
        # ("le" or "quantile", its value) -> ``_bound`` or ``_quantile`` of the value.
        self._verdicts: dict[tuple[str, str], tuple[bool, float]] = {}
        # A sample's text after its labels that reads as a lone value: values repeat.
        self._values: dict[str, float] = {}
        # The rest of label sets that start with le or quantile, after that first value.
        self._tails: dict[
            str, tuple[str, tuple[tuple[str, str], ...], frozenset[tuple[str, str]]]
        ] = {}

    def feed(self, data: bytes) -> None:
        lines = self.reader.complete_lines(data, first_line=self._line + 1)
        label_sets = self._label_sets
        sample = exposition.Sample
        new = object.__new__
        values = self._values
        number = self._line
        current = self._open
        quick = current.quick if current is not None and not self._eof else {}
        unescape_help = lexing.unescape_openmetrics_help
        suffixes = exposition.FAMILY_SUFFIXES
        group: frozenset[tuple[str, str]] | None
        entry: _LabelSet | None
        for line in lines:
            number += 1
            if line[:1] == "#":  # metadata (or "# EOF"): a family's first lines
                parts = line.split(" ", 3)
                if len(parts) == 4 and parts[0] == "#" and not self._eof:
                    _, meta, name, text = parts
                    if current is not None and name == current.family.name:
                        # The family's next metadata line: its usual cases of ``_metadata``.
                        family = current.family
                        if current.started:
                            pass  # metadata after samples: ``_metadata`` says so
                        elif meta == "HELP" and family.help is None:
                            family.help = unescape_help(text) if "\\" in text else text
                            continue
                        elif meta == "TYPE" and not family.type and text in suffixes:
                            current.set_type(text)
                            quick = current.quick
                            continue
                    elif (
                        ((meta == "TYPE" and text in suffixes) or meta == "HELP")
                        # [a-zA-Z_:][a-zA-Z0-9_:]*, as METRIC_NAME, without a regex.
                        and name.isascii()
                        and name.replace(":", "_").isidentifier()
                    ):
                        # A new family's first metadata line, as ``_metadata`` reads it (a
                        # name comes once here: families do not interleave).
                        self._line = number
                        self._finish()
                        if meta == "HELP":
                            current = self._open = _Open(name)
                            current.family.help = unescape_help(text) if "\\" in text else text
                        else:
                            current = self._open = _Open(name, text)
                        quick = current.quick
                        continue
                self._line = number
                if self._eof or line == "# EOF":
                    self._text_line(line)
                else:
                    self._metadata(line)
                current = self._open
                quick = current.quick if current is not None and not self._eof else {}
                continue
            # Split by partition: str.find and startswith parse their arguments, which costs
            # more than the search. The label set ends at the first "} " the label-set check
            # accepts: a "}" before it is inside a value, or the check fails (full path).
            name, brace, body = line.partition("{")
            if brace:
                route = quick.get(name)
                if route is not None:
                    text, brace, body = body.partition("} ")
                    if brace:
                        entry = label_sets.get(text) or self._label_set(text)
                    else:
                        route = None
            else:
                name, _, body = line.partition(" ")
                route = quick.get(name)
                entry = _NO_LABELS
            # Quick when the value stands alone after one space: no timestamp, no exemplar.
            if route is not None and entry is not None and current is not None:
                value = values.get(body)
                if value is None and "_" not in body and body == body.strip():
                    try:
                        value = float(body)
                    except ValueError:
                        pass  # the full path says why
                    else:
                        if len(values) < _CACHED:
                            values[body] = value
                if value is not None:
                    kind, suffix = route
                    if kind == _PLAIN:
                        group = entry[1]
                    elif kind == _BUCKET:
                        group = entry[2] if value >= 0 and value.is_integer() else None
                    elif kind == _QUANTILE:
                        group = entry[4] if value >= 0 else None
                    elif value >= 0 and (kind == _TOTAL or value.is_integer()):
                        group = entry[1]
                    else:
                        group = None
                    # The grouping rules of ``_group``, for a sample without a timestamp.
                    if group is not None and current.group_timestamp is None:
                        if group is current.group or group == current.group:
                            series = (name, entry[1])
                            if series in current.group_series:
                                continue  # the same sample again: kept once, as in ``_group``
                            current.group_series.add(series)
                        elif group in current.seen_groups:
                            self._line = number  # the full path explains
                            self._text_line(line)
                            current = self._open
                            quick = current.quick if current is not None and not self._eof else {}
                            continue
                        else:
                            # A family's first group comes here: it has started (a group
                            # is only set once it has, here or in ``_group``).
                            current.started = True
                            current.group_series = {(name, entry[1])}
                            current.group = group
                            current.seen_groups.add(group)
                        # Sample(name, labels, value), stored field by field: the
                        # dataclass's __init__, called from C, costs twice as much.
                        made = new(sample)
                        made.name = name
                        made.labels = entry[0]
                        made.value = value
                        made.timestamp = None
                        made.exemplar = None
                        current.family.samples.append(made)
                        if current.buckets is not None:
                            current.buckets.add(suffix, group, None, value, entry[3])
                        continue
            self._line = number
            self._text_line(line)
            current = self._open
            quick = current.quick if current is not None and not self._eof else {}
        self._line = number
        # The family still open holds samples too.
        self.reader.check(
            lines, self.families if current is None else [*self.families, current.family]
        )

    def _label_set(self, text: str) -> _LabelSet | None:
        """The labels of ``{text}`` when they read without errors and their names are
        distinct; None for anything else, which the full path then reads (or explains).

        Without a backslash, splitting on quotes gives the skeleton's pieces and the values in
        turn (see ``exposition.label_names``); the skeleton is checked once per parser.
        """
        if "\\" in text:
            return self._lexed_label_set(text)
        tail_key = ""
        if text[:1] in "lq" and text.startswith(_FIRST_VARIES):
            # A bucket bound or quantile sorted first (as the Python client writes them): the
            # rest of the set repeats down the run and is remembered, with its pairs.
            opened = text.index('"') + 1
            closed = text.find('"', opened)
            if closed > 0:
                tail_key = text[:opened] + text[closed:]
                tail = self._tails.get(tail_key)
                if tail is not None:
                    # ``_label_set_entry`` for this case, with the verdict on the value cached:
                    # bucket bounds and quantiles repeat down every run.
                    name, rest, rest_pairs = tail
                    value = text[opened:closed]
                    first = (name, value)
                    verdict = self._verdicts.get(first)
                    if verdict is None:
                        verdict = _bound(value) if name == "le" else _quantile(value)
                        if len(self._verdicts) < _CACHED:
                            self._verdicts[first] = verdict
                    ok, bound = verdict
                    found: _LabelSet = (
                        (first, *rest),
                        rest_pairs | {first},
                        rest_pairs if ok and name == "le" else None,
                        bound,
                        rest_pairs if ok and name == "quantile" else None,
                    )
                    if len(self._label_sets) < self._label_bound:
                        self._label_sets[text] = found
                    return found
        parts = text.split('"')
        if not len(parts) % 2:  # an odd number of quotes: not a label set
            return None
        skeleton = '""'.join(parts[0::2])
        shape = self._shapes.get(skeleton) or self._shape(skeleton)
        if shape is None:
            return None
        names, le, quantile = shape
        values = parts[1::2]
        label_sets = self._label_sets
        labels = (
            self._pairs.of(skeleton, names, values)
            if len(label_sets) >= exposition.PAIRS_AFTER
            else (*zip(names, values),)  # noqa: B905 (as many values as names, by the skeleton)
        )
        if le < 0 and quantile < 0:  # ``_label_set_entry`` of the usual case, in line
            entry: _LabelSet = (labels, frozenset(labels), None, 0.0, None)
        else:
            entry = _label_set_entry(
                labels,
                values[le] if le >= 0 else None,
                values[quantile] if quantile >= 0 else None,
            )
        if len(label_sets) < self._label_bound:
            label_sets[text] = entry
        if tail_key and (le, quantile) in ((0, -1), (-1, 0)) and len(self._tails) < _CACHED:
            rest = entry[0][1:]
            self._tails[tail_key] = (names[0], rest, frozenset(rest))
        return entry

    def _shape(self, skeleton: str) -> tuple[tuple[str, ...], int, int] | None:
        """The label names of a skeleton inside its braces (``a="",b=""``) with the positions
        of ``le`` and ``quantile`` (-1 when absent), if it is valid and its names distinct."""
        names = exposition.label_names("{" + skeleton + "}", strict=False)
        if names is None or len(set(names)) != len(names):
            return None
        shape = exposition.label_shape(names)
        if len(self._shapes) < _CACHED:
            self._shapes[skeleton] = shape
        return shape

    def _lexed_label_set(self, text: str) -> _LabelSet | None:
        """``_label_set`` for label sets with escapes, by the full lexer."""
        braced = "{" + text + "}"
        try:
            labels, end, _ = exposition.read_labels(braced, 0, line=0, strict=False)
        except ParseError:
            return None
        values = dict(labels)
        if end != len(braced) or len(values) != len(labels):
            return None
        entry = _label_set_entry(tuple(labels), values.get("le"), values.get("quantile"))
        if len(self._label_sets) < self._label_bound:
            self._label_sets[text] = entry
        return entry

    def close(self) -> list[exposition.Family]:
        rest = self.reader.rest()
        if rest:
            # Only "# EOF" may end without a newline.
            self._line_bytes(rest)
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
            current = self._open = _Open(name)
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
        # The sample names the family claims: for the types of ``_ROUTES``, its name and the
        # names its quick routes hold, already made and hashed; else made here.
        quick = current.quick if family.type in _ROUTES else None
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
            current = self._open = _Open(sample.name, "unknown")
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
            current.appended(suffix, group, sample.timestamp, sample.value, sample.labels)
        current.group_series.add(series)
        current.group = group
        current.group_timestamp = sample.timestamp
        current.seen_groups.add(group)


def _label_set_entry(
    labels: tuple[tuple[str, str], ...],
    le: str | None,
    quantile: str | None,
    *,
    rest: frozenset[tuple[str, str]] | None = None,
) -> _LabelSet:
    """What the quick path needs of a label set, with ``le`` and ``quantile`` checked as
    ``_sample`` checks them for buckets and summary quantiles. ``rest``: the pairs but the
    first, when the first is the ``le`` or ``quantile`` given and the rest holds neither."""
    pairs = frozenset(labels) if rest is None else rest | {labels[0]}
    without_le = None
    bound = 0.0
    if le is not None:
        ok, bound = _bound(le)
        if ok:
            without_le = pairs - {("le", le)} if rest is None else rest
    without_quantile = None
    if quantile is not None and _quantile(quantile)[0]:
        without_quantile = pairs - {("quantile", quantile)} if rest is None else rest
    return labels, pairs, without_le, bound, without_quantile


def _bound(le: str) -> tuple[bool, float]:
    """Whether ``le`` is a bucket bound as ``_sample`` checks it (a number, not NaN, +Inf
    written so), and its value (0.0 when it is no number)."""
    if le == "NaN":
        return False, 0.0
    try:
        bound = exposition.parse_float(le)
    except ValueError:
        return False, 0.0
    return not (math.isinf(bound) and bound > 0 and le != "+Inf"), bound


def _quantile(quantile: str) -> tuple[bool, float]:
    """Whether ``quantile`` is a quantile in [0, 1] as ``_sample`` checks it (the float
    is not used)."""
    try:
        q = exposition.parse_float(quantile)
    except ValueError:
        return False, 0.0
    return 0.0 <= q <= 1.0, 0.0


def parse(data: bytes) -> list[exposition.Family]:
    """Every family of an OpenMetrics exposition; ParseError says what and where."""
    parser = OpenMetricsParser()
    parser.feed(data)
    return parser.close()
