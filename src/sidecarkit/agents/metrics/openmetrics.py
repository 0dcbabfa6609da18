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

from sidecarkit.agents.metrics import exposition, lexing, reading
from sidecarkit.agents.metrics.exposition import ParseError
from sidecarkit.agents.metrics.openmetrics_full import BUCKET as _BUCKET
from sidecarkit.agents.metrics.openmetrics_full import PLAIN as _PLAIN
from sidecarkit.agents.metrics.openmetrics_full import QUANTILE as _QUANTILE
from sidecarkit.agents.metrics.openmetrics_full import TOTAL as _TOTAL
from sidecarkit.agents.metrics.openmetrics_full import FullPath, OpenFamily

__all__ = ["CONTENT_TYPE", "OpenMetricsParser", "parse"]

CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"


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


class OpenMetricsParser(FullPath):
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
        self._open: OpenFamily | None = None
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
                            current = self._open = OpenFamily(name)
                            current.family.help = unescape_help(text) if "\\" in text else text
                        else:
                            current = self._open = OpenFamily(name, text)
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
