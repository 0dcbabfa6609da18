"""Prometheus text format 0.0.4, parsed as prometheus/common's ``expfmt`` does (UTF-8 names).

Feed bytes as they arrive (``feed``), then ``close`` for the families; or call ``parse``.

The format's rules: tokens separated by any run of blanks; ``#`` lines are comments unless they
are ``# HELP name text`` or ``# TYPE name type``, each at most once per name and ``TYPE`` before
the family's first sample; label values escape only ``\\\\``, ``\\"`` and ``\\n``; values are
floats (``NaN``, ``+Inf``, ``-Inf``), the optional timestamp an integer of milliseconds; ``le``
and ``quantile`` labels are numbers; every line ends with a newline. Names may be quoted, with
the metric name first inside the braces (``{"name.with.dots",label="x"} 1``). Samples named
``x_sum``, ``x_count`` and ``x_bucket`` belong to family ``x`` when it is a summary or histogram.
"""

from __future__ import annotations

from typing import Final

from sidecarkit.agents.metrics import exposition, lexing, reading
from sidecarkit.agents.metrics.exposition import ParseError
from sidecarkit.agents.metrics.promtext_full import BLANKS as _BLANKS
from sidecarkit.agents.metrics.promtext_full import PARTS as _PARTS
from sidecarkit.agents.metrics.promtext_full import TYPES, FullPath

__all__ = ["CONTENT_TYPE", "PrometheusTextParser", "parse"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The TYPE keywords, for the quick path: a copy of the full path's, made here (looked up
#: in the dict imported as it is, a node_exporter parse measured 1.3 % more instructions).
_TYPES: Final = dict(TYPES)
#: Types whose samples need no check beyond the name's: no quantile, no bucket, any sign.
_PLAIN_KINDS: Final = frozenset({"counter", "gauge", "untyped"})
#: The suffixes of ``_PARTS`` without their "_", with the family types they belong to.
_PART_KINDS: Final = {
    "bucket": ("histogram", "gaugehistogram"),
    "sum": ("summary", "histogram"),
    "count": ("summary", "histogram"),
}

#: A sample name's route: its family's samples, which entry of a label set must be true for
#: the quick path (one of the three below), and whether a negative value needs the full path.
_Route = tuple[list[exposition.Sample], int, bool]
#: A checked label set: (labels, True, has a numeric "le", has a numeric "quantile").
_LabelSet = tuple[tuple[tuple[str, str], ...], bool, bool, bool]
#: The text of a label set before its last ``="``, read: (the labels before, the last name,
#: whether "le" and "quantile" are there as numbers, or None when the last label is it).
#: Label sets whose first label is the one that varies down a run.
_FIRST_VARIES: Final = ('le="', 'quantile="')
_Head = tuple[tuple[tuple[str, str], ...], str, bool | None, bool | None]
#: What may follow the closing quote of a label set's last value.
_AFTER_LAST: Final = frozenset({"", ","})
_NO_CHECK: Final = 1
_LE: Final = 2
_QUANTILE: Final = 3
_NO_LABELS: Final[_LabelSet] = ((), True, False, False)
#: Entries per cache: routes and label sets repeat, and hostile input cannot grow them further.
_CACHED: Final = 16384
#: Most label sets a cache kept across scrapes holds (``label_sets``): a large target's.
LABEL_SETS: Final = 1 << 20


class PrometheusTextParser(FullPath):
    """Incremental parser: ``feed`` chunks, then ``close``.

    Each line first tries the quick path: a cached route for the sample name, a cached label
    set for the exact ``{...}`` text, and ``float`` over what follows. Whatever the quick path
    does not recognise (comments, blank lines, signed timestamps, anything unusual and every
    error) goes to the full lexer, which accepts exactly the same lines and explains the rest.
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
        self.families: dict[str, exposition.Family] = {}
        self._line = 0
        self._typed: set[str] = set()
        # Bare metric names already found valid ([a-zA-Z_:][a-zA-Z0-9_:]*): a family's name
        # comes in its HELP, its TYPE and its samples.
        self._bare: set[str] = set()
        # Bare sample name -> where its samples go. TYPE forgets the names it reroutes. "#"
        # and "" map to the empty tuple, so comments and blank lines leave the quick path at
        # once.
        self._routes: dict[str, _Route | tuple[()]] = {"#": (), "": ()}
        # The names a TYPE may reroute: every cached sample name, and the family it would
        # belong to as a part (x for x_sum).
        self._stems: set[str] = set()
        # The exact text inside the braces of a label set that passed every check.
        self._label_sets: dict[str, _LabelSet] = {} if label_sets is None else label_sets
        self._label_bound = _CACHED if label_sets is None else LABEL_SETS
        # Label-set skeletons (a="",b="") checked, with where "le" and "quantile" are.
        self._shapes: dict[str, tuple[tuple[str, ...], int, int]] = {}
        # Label pairs made, reused by later label sets.
        self._pairs = exposition.LabelPairs()
        self._numbers: dict[str, bool] = {}
        self._heads: dict[str, _Head] = {}
        self._tails: dict[str, _Head] = {}
        self._last_head = ""
        # What follows a label set (or a name): " 1.5" -> 1.5; sample values repeat.
        self._values: dict[str, float] = {}

    def feed(self, data: bytes) -> None:
        lines = self.reader.complete_lines(data, first_line=self._line + 1)
        routes = self._routes
        label_sets = self._label_sets
        label_bound = self._label_bound
        values = self._values
        heads = self._heads
        numbers = self._numbers
        sample = exposition.Sample
        new = object.__new__
        value_and_timestamp = lexing.prometheus_value_and_timestamp
        families = self.families
        unescape_help = lexing.unescape_prometheus_help
        bare = self._bare
        typed = self._typed
        stems = self._stems
        family_of = exposition.Family
        # The name of the last HELP line read here, found valid, and its family.
        helped: str | None = None
        helped_family: exposition.Family | None = None
        number = self._line
        for line in lines:
            number += 1
            if line[:1] == "#":
                # "# HELP name text" and "# TYPE name type" with a bare name, as in
                # ``_comment``, and with TYPE's usual case of ``_type`` in line: a family's
                # metadata costs about as much as its samples in small expositions. One
                # split finds the keyword, the name and the text (str.find and startswith,
                # which parse their arguments, cost more).
                parts = line.split(" ", 3)
                if len(parts) == 4 and parts[0] == "#":
                    _, keyword, name, text = parts
                    if keyword == "TYPE":
                        if name == helped:  # after its HELP, usually: its family is known
                            family = helped_family
                        elif name in bare:
                            family = families.get(name)
                        elif name.isascii() and name.replace(":", "_").isidentifier():
                            if len(bare) < _CACHED:
                                bare.add(name)
                            family = families.get(name)
                        else:
                            self._line = number
                            self._comment(line)
                            continue
                        kind = _TYPES.get(text)
                        if (
                            kind is not None
                            and name not in typed
                            and name not in stems
                            and (family is None or not family.samples)
                        ):
                            typed.add(name)
                            if family is None:
                                # Family(name, kind), its fields stored here (see Sample).
                                family = new(family_of)
                                family.name = name
                                family.type = kind
                                family.help = family.unit = None
                                family.samples = []
                                families[name] = family
                            else:
                                family.type = kind
                            if len(routes) < _CACHED:
                                if kind in _PLAIN_KINDS:  # ``_typed_routes``, in line
                                    if not name.endswith(_PARTS):
                                        routes[name] = (family.samples, _NO_CHECK, False)
                                        stems.add(name)
                                else:
                                    self._typed_routes(family)
                            continue
                        self._line = number
                        self._type(name, text.lstrip(_BLANKS))
                        continue
                    if (
                        keyword == "HELP"
                        and name.isascii()
                        and name.replace(":", "_").isidentifier()
                    ):
                        text = text.lstrip(_BLANKS)
                        family = helped_family = families.get(name)
                        helped = name
                        if family is None:
                            family = helped_family = new(family_of)
                            family.name = name
                            family.type = "untyped"
                            family.help = unescape_help(text) if "\\" in text else text
                            family.unit = None
                            family.samples = []
                            families[name] = family
                            continue
                        self._line = number
                        self._help(name, text)
                        continue
                self._line = number
                self._comment(line)
                continue
            entry: _LabelSet | None
            head, close, rest = line.rpartition("}")
            if close:
                # From the first "{" to the last "}": the label set of any valid line.
                name, brace, inner = head.partition("{")
                entry = label_sets.get(inner) if brace else None
                route = routes.get(name)
                if route is None:
                    route = self._new_route(name)
                if entry is None and route and brace:
                    # A new label set: its head known, append the last value (``_label_set``).
                    # The head is the text before the last "=\""; the last value runs from
                    # there to the next quote, which ends the set or is followed by the one
                    # trailing comma the format allows. (No head is known in expositions
                    # whose series each differ early in their label sets.)
                    known = None
                    if heads:
                        before, _, after = inner.rpartition('="')
                        known = heads.get(before)
                        if known is not None:
                            last, quote, after = after.partition('"')
                            if not quote or after not in _AFTER_LAST or "\\" in inner:
                                known = None
                    if known is not None:
                        labels, label, le, quantile = known
                        if le is None:
                            le = numbers.get(last)
                            if le is None:
                                le = self._is_number(last)
                        if quantile is None:
                            quantile = numbers.get(last)
                            if quantile is None:
                                quantile = self._is_number(last)
                        entry = ((*labels, (label, last)), True, le, quantile)
                        if len(label_sets) < label_bound:
                            label_sets[inner] = entry
                    else:
                        entry = self._label_set(inner)
            else:
                name, _, rest = line.partition(" ")
                route = routes.get(name)
                if route is None:
                    route = self._new_route(name)
                entry = _NO_LABELS
            if route and entry is not None:
                samples, check, nonnegative = route
                timestamp = None
                value = values.get(rest)
                if value is None:
                    # ``value_and_timestamp`` with its usual case, a lone value, in line.
                    quick = None
                    if "_" not in rest:  # float() takes 1_000, Go does not
                        try:
                            value = float(rest)  # float() skips the blanks around the value
                        except ValueError:
                            quick = value_and_timestamp(rest)
                        else:
                            if len(values) < _CACHED:
                                values[rest] = value
                    if value is None:
                        if quick is None:
                            self._line = number
                            self._general(line)
                            continue
                        value, timestamp = quick
                if entry[check] and (value >= 0 or not nonnegative):
                    # Sample(name, labels, value, timestamp), its fields stored here: the
                    # dataclass's __init__, called from C, costs about twice as much.
                    made = new(sample)
                    made.name = name
                    made.labels = entry[0]
                    made.value = value
                    made.timestamp = timestamp
                    made.exemplar = None
                    samples.append(made)
                    continue
            self._line = number
            self._general(line)
        self._line = number
        self.reader.check(lines, families.values())

    def close(self) -> list[exposition.Family]:
        if self.reader.rest().strip(b" \t"):
            raise ParseError(
                "unexpected end of input: the last line has no newline", self._line + 1
            )
        return list(self.families.values())

    def _new_route(self, name: str) -> _Route | tuple[()]:
        """Where samples named ``name`` go, cached; ``()`` for what is not a bare name."""
        if name not in self._bare:
            if not (name.isascii() and name.replace(":", "_").isidentifier()):
                return ()  # not a bare metric name: [a-zA-Z_:][a-zA-Z0-9_:]*
            if len(self._bare) < _CACHED:
                self._bare.add(name)
        # ``_route``, with the suffix found by one split: the parts have no "_" after theirs.
        stem, _, part = name.rpartition("_")
        kinds = _PART_KINDS.get(part)
        family = None
        if kinds is not None:
            family = self.families.get(stem)
            if family is not None and family.type not in kinds:
                family = None
        if family is not None:
            check = _LE if part == "bucket" else _NO_CHECK
        else:
            family = self.families.get(name)
            if family is None:
                family = self.families[name] = exposition.Family(name, "untyped")
            check = _QUANTILE if family.type == "summary" else _NO_CHECK
        route = (family.samples, check, family.type in ("histogram", "gaugehistogram"))
        if len(self._routes) < _CACHED:
            self._routes[name] = route
            self._stems.add(name)
            if kinds is not None:
                self._stems.add(stem)
        return route

    def _typed_routes(self, family: exposition.Family) -> None:
        """The routes ``_new_route`` would make for the sample names of a family just typed,
        made now: the family's first samples then find them cached.

        Only names whose route cannot depend on another family are made: the family's own
        name unless it ends in a part's suffix (``x_sum`` may belong to a summary ``x``), and
        the names of its parts (``x_bucket`` of a histogram ``x``). No TYPE can change them
        later: a second TYPE for the name is an error.
        """
        name, kind = family.name, family.type
        samples = family.samples
        nonnegative = kind in ("histogram", "gaugehistogram")
        routes, stems = self._routes, self._stems
        if not name.endswith(_PARTS):
            routes[name] = (samples, _QUANTILE if kind == "summary" else _NO_CHECK, nonnegative)
            stems.add(name)
        if kind in ("histogram", "gaugehistogram", "summary"):
            for part, kinds in _PART_KINDS.items():
                if kind in kinds:
                    full = f"{name}_{part}"
                    routes[full] = (samples, _LE if part == "bucket" else _NO_CHECK, nonnegative)
                    stems.add(full)
            stems.add(name)

    def _label_set(self, inner: str) -> _LabelSet | None:
        """The labels of ``{inner}`` when they pass every check a sample's labels get; None
        for anything else, which the full path then reads (or explains).

        Called when the quick path in ``feed`` found neither the label set nor its head (the
        text up to its last value) cached. Label sets in a row often differ in their last
        value only (``le``, ``quantile``, or the one label that varies), so the head is
        remembered here for the next ones, which then only append their value.
        """
        if "\\" in inner:
            return self._lexed_label_set(inner)
        tail_key = ""
        if inner[:1] in "lq" and inner.startswith(_FIRST_VARIES):
            # A bucket bound or quantile sorted first (as the Python client writes them): the
            # rest of the set repeats down the run, so it is remembered as a tail, the mirror
            # of a head.
            opened = inner.index('"') + 1
            closed = inner.find('"', opened)
            if closed > 0:
                tail_key = inner[:opened] + inner[closed:]
                tail = self._tails.get(tail_key)
                if tail is not None:
                    rest, name, le_ok, quantile_ok = tail
                    value = inner[opened:closed]
                    if le_ok is None:
                        le_ok = self._is_number(value)
                    if quantile_ok is None:
                        quantile_ok = self._is_number(value)
                    entry: _LabelSet = (((name, value), *rest), True, le_ok, quantile_ok)
                    if len(self._label_sets) < self._label_bound:
                        self._label_sets[inner] = entry
                    return entry
        # The hot path of every label set seen the first time: split on quotes, the skeleton
        # checked once per parser.
        parts = inner.split('"')
        if not len(parts) % 2:  # an odd number of quotes: not a label set
            return self._lexed_label_set(inner)
        skeleton = '""'.join(parts[0::2])
        shape = self._shapes.get(skeleton) or self._shape(skeleton)
        if shape is None or not shape[0]:
            return self._lexed_label_set(inner)
        names, le_at, quantile_at = shape
        values = parts[1::2]
        labels = (
            self._pairs.of(skeleton, names, values)
            if len(self._label_sets) >= exposition.PAIRS_AFTER
            else (*zip(names, values),)  # noqa: B905 (as many values as names, by the skeleton)
        )
        if le_at < 0 and quantile_at < 0:
            le_ok = quantile_ok = False
        else:
            le_ok = le_at >= 0 and self._is_number(values[le_at])
            quantile_ok = quantile_at >= 0 and self._is_number(values[quantile_at])
        entry = (labels, True, le_ok, quantile_ok)
        label_sets = self._label_sets
        if len(label_sets) < self._label_bound:
            label_sets[inner] = entry
        if tail_key and 0 in (le_at, quantile_at) and len(self._tails) < _CACHED:
            self._tails[tail_key] = (
                labels[1:],
                names[0],
                None if le_at == 0 else le_ok,
                None if quantile_at == 0 else quantile_ok,
            )
        if parts[-1] in _AFTER_LAST:  # the set ends with a value: it has a head
            # The head passes every check whatever the value after it. Kept when the last
            # label is a bucket bound or a quantile (a run of them follows), when it is the
            # only label (its name alone, shared by the family's series), or the second time
            # in a row.
            at = len(labels) - 1
            head_text = inner[: len(inner) - len(values[-1]) - 3 - len(parts[-1])]
            if (at in (le_at, quantile_at, 0) or head_text == self._last_head) and len(
                self._heads
            ) < _CACHED:
                self._heads[head_text] = (
                    labels[:at],
                    names[at],
                    None if le_at == at else le_ok,
                    None if quantile_at == at else quantile_ok,
                )
            self._last_head = head_text
        return entry

    def _is_number(self, text: str) -> bool:
        """Whether a label value reads as a sample value does; bucket bounds and quantiles
        repeat, so the answer is cached."""
        known = self._numbers.get(text)
        if known is None:
            known = lexing.is_float(text)
            if len(self._numbers) < _CACHED:
                self._numbers[text] = known
        return known

    def _shape(self, skeleton: str) -> tuple[tuple[str, ...], int, int] | None:
        """The label names of a skeleton inside its braces (``a="",b=""``) with the positions
        of ``le`` and ``quantile`` (-1 when absent), if it is valid and its names distinct."""
        names = exposition.label_names("{" + skeleton + "}", strict=True)
        if names is None or len(set(names)) != len(names) or "__name__" in names:
            return None
        shape = exposition.label_shape(names)
        if len(self._shapes) < _CACHED:
            self._shapes[skeleton] = shape
        return shape

    def _lexed_label_set(self, inner: str) -> _LabelSet | None:
        """``_label_set`` for the unusual shapes (escapes, blanks, quoted names), by the full
        lexer."""
        text = "{" + inner + "}"
        try:
            labels, end, quoted = exposition.read_labels(text, 0, line=0, strict=True)
        except ParseError:
            return None
        if quoted is not None or end != len(text):
            return None
        names = {label for label, _ in labels}
        if len(names) != len(labels) or "__name__" in names:
            return None
        entry = (
            tuple(labels),
            True,
            lexing.has_number_label(labels, "le"),
            lexing.has_number_label(labels, "quantile"),
        )
        if len(self._label_sets) < self._label_bound:
            self._label_sets[inner] = entry
        return entry


def parse(data: bytes) -> list[exposition.Family]:
    """Every family of a Prometheus text exposition; ParseError says what and where."""
    parser = PrometheusTextParser()
    parser.feed(data)
    return parser.close()
