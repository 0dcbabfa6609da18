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

from sidecarkit.agents.metrics import exposition
from sidecarkit.agents.metrics.exposition import ParseError

__all__ = ["CONTENT_TYPE", "PrometheusTextParser", "parse"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_TYPES: Final = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "summary": "summary",
    "untyped": "untyped",
    "gauge_histogram": "gaugehistogram",
    "gaugehistogram": "gaugehistogram",
}
_BLANKS: Final = " \t"


class PrometheusTextParser:
    """Incremental parser: ``feed`` chunks, then ``close``."""

    def __init__(self) -> None:
        self.families: dict[str, exposition.Family] = {}
        self._buffer = b""
        self._line = 0
        self._helped: set[str] = set()
        self._typed: set[str] = set()
        # Sample name -> (family, label to check); forgotten whenever a TYPE changes routing.
        self._routes: dict[str, tuple[exposition.Family, str | None]] = {}
        self._label_sets: dict[str, tuple[str, ...]] = {}

    def feed(self, data: bytes) -> None:
        lines, self._buffer = exposition.complete_lines(
            self._buffer + data, first_line=self._line + 1
        )
        for raw in lines:
            self._line += 1
            line = raw.lstrip(_BLANKS)
            if not line:
                continue
            if line[0] == "#":
                self._comment(line)
            elif not self._fast_sample(line):
                self._sample(line)

    def close(self) -> list[exposition.Family]:
        if self._buffer.strip(b" \t"):
            raise ParseError(
                "unexpected end of input: the last line has no newline", self._line + 1
            )
        return list(self.families.values())

    def _comment(self, line: str) -> None:
        parts = line[1:].lstrip(_BLANKS).split(None, 1)
        if not parts or parts[0] not in ("HELP", "TYPE"):
            return  # an ordinary comment
        keyword = parts[0]
        if len(parts) < 2:
            return  # a bare "# HELP" is a comment, as expfmt reads it
        rest = parts[1]
        if rest.startswith('"'):
            name, end = exposition.read_quoted(rest, 0, line=self._line)
        else:
            end = 0
            while end < len(rest) and rest[end] not in _BLANKS:
                end += 1
            name = rest[:end]
            if exposition.METRIC_NAME.fullmatch(name) is None:
                raise ParseError(f"invalid metric name {name!r}", self._line)
        text = rest[end:]
        if keyword == "HELP" and not text:
            return  # "# HELP name" with nothing after the name is a comment to expfmt too
        if text and text[0] not in _BLANKS:
            raise ParseError(f"expected a blank after the name in {keyword}", self._line)
        text = text.lstrip(_BLANKS)
        family = self.families.get(name)
        if keyword == "HELP":
            if name in self._helped:
                raise ParseError(f"second HELP for {name}", self._line)
            self._helped.add(name)
            if family is None:
                family = self.families[name] = exposition.Family(name, "untyped")
            family.help = _unescape_help(text)
            return
        kind = _TYPES.get(text.rstrip(_BLANKS).lower())
        if kind is None:
            raise ParseError(
                f"unknown type {text.strip()!r}; expected one of {', '.join(_TYPES)}", self._line
            )
        if name in self._typed:
            raise ParseError(f"second TYPE for {name}", self._line)
        if family is not None and family.samples:
            raise ParseError(f"TYPE for {name} after its samples", self._line)
        self._typed.add(name)
        self._routes.clear()
        if family is None:
            family = self.families[name] = exposition.Family(name, kind)
        family.type = kind

    def _fast_sample(self, line: str) -> bool:
        """The usual line (``name{a="b",c="d"} value [timestamp]`` with no blanks, escapes or
        surprises) in as few steps as possible. False means: take the full path, which also
        explains any error."""
        brace = line.find("{")
        if brace > 0:
            name = line[:brace]
            close = line.find("}", brace)
            if close < 0:
                return False
            segment = line[brace + 1 : close]
            if "\\" in segment or " " in segment or "\t" in segment:
                return False
            parts = segment.split('"')
            last = len(parts) - 1
            if last % 2:
                return False
            if last:
                heads = "".join(parts[0:last:2])
                names = self._label_sets.get(heads)
                if names is None:
                    names = self._label_set(heads)
                    if names is None:
                        return False
                labels = tuple(zip(names, parts[1:last:2], strict=True))
            else:
                labels = ()
            if parts[last] not in ("", ","):
                return False
            rest = line[close + 1 :]
        else:
            space = line.find(" ")
            if space <= 0:
                return False
            name = line[:space]
            labels = ()
            rest = line[space:]
        route = self._routes.get(name)
        if route is None:
            return False
        fields = rest.split()
        if len(fields) == 1:
            timestamp = None
        elif len(fields) == 2 and fields[1].isdigit() and fields[1].isascii():
            timestamp = int(fields[1]) / 1000.0
        else:
            return False
        text = fields[0]
        if "_" in text:  # float() takes 1_000 and Go does not; it already refuses hex
            return False
        try:
            value = float(text)
        except ValueError:
            return False
        family, checked = route
        if checked is not None:
            for label, label_value in labels:
                if label == checked:
                    try:
                        exposition.parse_float(label_value)
                    except ValueError:
                        return False
                    break
            else:
                return False
        if value < 0 and family.type in ("histogram", "gaugehistogram"):
            return False
        family.samples.append(exposition.Sample(name, labels, value, timestamp))
        return True

    def _label_set(self, heads: str) -> tuple[str, ...] | None:
        """The label names of a canonical ``a=,b=,c=`` head string, checked once and cached:
        the same label names come back on almost every line of a family."""
        names = tuple(heads[:-1].split("=,"))
        if heads != "=,".join(names) + "=" or len(set(names)) != len(names):
            return None
        for label in names:
            if not (label.isidentifier() and label.isascii()) or label == "__name__":
                return None
        if len(self._label_sets) < 4096:
            self._label_sets[heads] = names
        return names

    def _sample(self, line: str) -> None:
        number = self._line
        match = exposition.METRIC_NAME.match(line)
        name = match.group() if match else None
        pos = match.end() if match else 0
        labels: list[tuple[str, str]] = []
        after_name = pos
        pos = _skip(line, pos)
        if pos < len(line) and line[pos] == "{":
            labels, pos, quoted = exposition.read_labels(line, pos, line=number, strict=True)
            if quoted is not None:
                if name is not None:
                    raise ParseError("a metric name both before and inside the braces", number)
                name = quoted
        elif pos == after_name and pos < len(line):
            raise ParseError(
                f"expected a blank before the value, got {line[pos]!r}", number, pos + 1
            )
        if name is None:
            raise ParseError(f"invalid metric name at {line[:20]!r}", number, 1)
        if labels:
            names = {label for label, _ in labels}
            if len(names) != len(labels):
                raise ParseError("a label is given twice", number)
            if "__name__" in names:
                raise ParseError("__name__ is not a label; put the name before the braces", number)
        parts = line[pos:].split()
        if not parts:
            raise ParseError(f"{name} has no value", number, len(line) + 1)
        if len(parts) > 2:
            raise ParseError(f"unexpected {parts[2]!r} after the timestamp", number)
        try:
            value = exposition.parse_float(parts[0])
        except ValueError:
            raise ParseError(f"invalid value {parts[0]!r}", number) from None
        timestamp = None
        if len(parts) == 2:
            text = parts[1]
            digits = text[1:] if text[:1] in "+-" else text
            if not digits.isdigit() or not digits.isascii():
                raise ParseError(f"invalid timestamp {text!r}: milliseconds as an integer", number)
            timestamp = int(text) / 1000.0
        family = self._family_of(name, labels, number)
        if (
            family.type in ("histogram", "gaugehistogram")
            and value < 0
            and name[len(family.name) :] in ("_bucket", "_count")
        ):
            raise ParseError(f"negative count in histogram {family.name}", number)
        family.samples.append(exposition.Sample(name, tuple(labels), value, timestamp))

    def _family_of(
        self, name: str, labels: list[tuple[str, str]], number: int
    ) -> exposition.Family:
        route = self._routes.get(name)
        if route is not None:
            family, label = route
            if label is not None:
                _number_label(labels, label, number)
            return family
        family, label = self._route(name)
        if family.type in ("summary", "histogram", "gaugehistogram", "counter", "gauge", "untyped"):
            self._routes[name] = (family, label)
        if label is not None:
            _number_label(labels, label, number)
        return family

    def _route(self, name: str) -> tuple[exposition.Family, str | None]:
        """The family a sample name belongs to and the label that must be a number."""
        for suffix, kinds in (
            ("_bucket", ("histogram", "gaugehistogram")),
            ("_sum", ("summary", "histogram")),
            ("_count", ("summary", "histogram")),
        ):
            if name.endswith(suffix):
                base = self.families.get(name[: -len(suffix)])
                if base is not None and base.type in kinds:
                    return base, "le" if suffix == "_bucket" else None
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = exposition.Family(name, "untyped")
        return family, "quantile" if family.type == "summary" else None


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _BLANKS:
        pos += 1
    return pos


def _number_label(labels: list[tuple[str, str]], key: str, number: int) -> None:
    for label, value in labels:
        if label == key:
            try:
                exposition.parse_float(value)
            except ValueError:
                raise ParseError(f"{key} label {value!r} is not a number", number) from None
            return
    raise ParseError(f"missing {key} label", number)


def _unescape_help(text: str) -> str:
    """Only ``\\\\`` and ``\\n`` are escapes in HELP; anything else stays as written."""
    if "\\" not in text:
        return text
    return exposition.unescape(text, line=0, column=0, strict=False, quote=False)


def parse(data: bytes) -> list[exposition.Family]:
    """Every family of a Prometheus text exposition; ParseError says what and where."""
    parser = PrometheusTextParser()
    parser.feed(data)
    return parser.close()
