"""Prometheus text lines the quick path of ``promtext.PrometheusTextParser.feed`` leaves:
comments and metadata of every shape, samples with blanks, quoted names, escapes, timestamps,
and every error. Read token by token here, with every rule of the format checked and every
error explained (the line, the column, what was expected); the parser inherits these methods.
"""

from __future__ import annotations

from typing import Final

from sidecarkit.agents.metrics import exposition, lexing
from sidecarkit.agents.metrics.exposition import ParseError

__all__ = ["BLANKS", "PARTS", "TYPES", "FullPath"]

TYPES: Final = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "summary": "summary",
    "untyped": "untyped",
    "gauge_histogram": "gaugehistogram",
    "gaugehistogram": "gaugehistogram",
}
BLANKS: Final = " \t"
#: The suffixes of a summary's or histogram's parts.
PARTS: Final = ("_bucket", "_sum", "_count")


class FullPath:
    """The full path of the text parser: what it reads, and the state it shares with it."""

    families: dict[str, exposition.Family]
    _line: int
    _typed: set[str]
    _stems: set[str]
    _routes: dict[str, tuple[list[exposition.Sample], int, bool] | tuple[()]]

    def _general(self, raw: str) -> None:
        line = raw.lstrip(BLANKS)
        if not line:
            return
        if line[0] == "#":
            self._comment(line)
        else:
            self._sample(line)

    def _comment(self, line: str) -> None:
        if line.startswith(("# HELP ", "# TYPE ")):
            # The usual shape: one blank on each side of a bare name.
            name, blank, text = line[7:].partition(" ")
            if blank and name.isascii() and name.replace(":", "_").isidentifier():  # a bare name
                if line[2] == "H":
                    self._help(name, text.lstrip(BLANKS))
                else:
                    self._type(name, text.lstrip(BLANKS))
                return
        parts = line[1:].lstrip(BLANKS).split(None, 1)
        if not parts or parts[0] not in ("HELP", "TYPE"):
            return  # an ordinary comment
        keyword = parts[0]
        if len(parts) < 2:
            return  # a bare "# HELP" is a comment, as expfmt reads it
        rest = parts[1]
        if rest.startswith('"'):
            name, end = exposition.read_quoted(rest, 0, line=self._line)
        else:
            end = len(rest)
            for blank in BLANKS:
                found = rest.find(blank, 0, end)
                if found >= 0:
                    end = found
            name = rest[:end]
            if exposition.METRIC_NAME.fullmatch(name) is None:
                raise ParseError(f"invalid metric name {name!r}", self._line)
        text = rest[end:]
        if keyword == "HELP" and not text:
            return  # "# HELP name" with nothing after the name is a comment to expfmt too
        if text and text[0] not in BLANKS:
            raise ParseError(f"expected a blank after the name in {keyword}", self._line)
        if keyword == "HELP":
            self._help(name, text.lstrip(BLANKS))
        else:
            self._type(name, text.lstrip(BLANKS))

    def _help(self, name: str, text: str) -> None:
        family = self.families.get(name)
        if family is None:
            self.families[name] = exposition.Family(
                name, "untyped", lexing.unescape_prometheus_help(text)
            )
        elif family.help is not None:  # only HELP sets it
            raise ParseError(f"second HELP for {name}", self._line)
        else:
            family.help = lexing.unescape_prometheus_help(text)

    def _type(self, name: str, text: str) -> None:
        family = self.families.get(name)
        kind = TYPES.get(text) or TYPES.get(text.rstrip(BLANKS).lower())
        if kind is None:
            raise ParseError(
                f"unknown type {text.strip()!r}; expected one of {', '.join(TYPES)}", self._line
            )
        if name in self._typed:
            raise ParseError(f"second TYPE for {name}", self._line)
        if family is not None and family.samples:
            raise ParseError(f"TYPE for {name} after its samples", self._line)
        self._typed.add(name)
        # The sample names whose family or checked label depend on this family's type.
        if name in self._stems:
            routes = self._routes
            routes.pop(name, None)
            routes.pop(name + "_bucket", None)
            routes.pop(name + "_sum", None)
            routes.pop(name + "_count", None)
        if family is None:
            self.families[name] = exposition.Family(name, kind)
        else:
            family.type = kind

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
            try:
                if not digits.isdigit() or not digits.isascii():
                    raise ValueError(text)
                timestamp = int(text) / 1000.0  # too many digits: ValueError or OverflowError
            except (ValueError, OverflowError):
                raise ParseError(
                    f"invalid timestamp {text!r}: milliseconds as an integer", number
                ) from None
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
        family, label = self._route(name)
        if label is not None:
            lexing.require_number_label(labels, label, number)
        return family

    def _route(self, name: str) -> tuple[exposition.Family, str | None]:
        """The family a sample name belongs to and the label that must be a number."""
        if name.endswith(PARTS):
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
    while pos < len(text) and text[pos] in BLANKS:
        pos += 1
    return pos
