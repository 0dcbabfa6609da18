"""The lexing the two text formats each do their own way: sample values, timestamps and
exemplars, numeric labels, HELP text. The label-set lexer both formats share is in ``exposition``.

OpenMetrics (``read_openmetrics_sample``, a whole sample line): after the name and labels
``value``, then optionally `` timestamp`` (seconds, a finite float) and `` # {labels} value
[timestamp]`` (an exemplar, its labels at most 128 characters), single spaces throughout;
HELP escapes ``\\\\``, ``\\n`` and ``\\"``.

Prometheus text: ``prometheus_value_and_timestamp`` reads the usual ``value`` or ``value
timestamp`` (unsigned milliseconds) for the parser's quick path and leaves every other shape to
its full path; ``le`` and ``quantile`` labels must be numbers; HELP escapes only ``\\\\`` and
``\\n``.
"""

from __future__ import annotations

import math
from typing import Final

from sidecarkit.agents.metrics import exposition
from sidecarkit.agents.metrics.exposition import ParseError

_MAX_EXEMPLAR_CHARS: Final = 128

# -- OpenMetrics ------------------------------------------------------------------------------


def unescape_openmetrics_help(text: str) -> str:
    """OpenMetrics HELP text: ``\\\\``, ``\\n`` and ``\\"`` are escapes."""
    if "\\" not in text:
        return text
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace('\\"', '"').replace("\0", "\\")


#: Metric names already seen valid (bounded): names repeat on every line of a family.
_KNOWN_NAMES: set[str] = set()


def read_openmetrics_sample(line: str, number: int) -> exposition.Sample:
    """One OpenMetrics sample line: the name, its labels, the value, and an optional
    timestamp and exemplar, with single spaces between them; ParseError says what and where.
    """
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
    timestamp = _openmetrics_timestamp(parts[1], number) if len(parts) == 2 else None
    return exposition.Sample(name, tuple(labels), value, timestamp, exemplar)


def _openmetrics_timestamp(text: str, number: int) -> float:
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
    timestamp = _openmetrics_timestamp(parts[1], number) if len(parts) == 2 else None
    return exposition.Exemplar(tuple(labels), value, timestamp)


# -- Prometheus text --------------------------------------------------------------------------


def is_float(text: str) -> bool:
    """Whether ``exposition.parse_float`` takes ``text``."""
    if not text or "_" in text or text != text.strip():
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def has_number_label(labels: list[tuple[str, str]], key: str) -> bool:
    """Whether the label ``key`` is there and reads as a sample value does."""
    for label, value in labels:
        if label == key:
            try:
                exposition.parse_float(value)
            except ValueError:
                return False
            return True
    return False


def prometheus_value_and_timestamp(rest: str) -> tuple[float, float | None] | None:
    """``value`` or ``value timestamp`` (an unsigned one) after a name or label set; None for
    anything else, which the full path then reads (or explains)."""
    if "_" in rest:
        return None  # float() takes 1_000, Go does not
    try:
        return float(rest), None  # float() skips the blanks around the value
    except ValueError:
        pass
    fields = rest.split()
    if len(fields) != 2 or not (fields[1].isdigit() and fields[1].isascii()):
        return None
    if len(fields[1]) > 18:
        return None  # the full path says whether a float holds it
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return value, int(fields[1]) / 1000.0


def require_number_label(labels: list[tuple[str, str]], key: str, number: int) -> None:
    """Raise ParseError at line ``number`` unless the label ``key`` is there and a number."""
    for label, value in labels:
        if label == key:
            try:
                exposition.parse_float(value)
            except ValueError:
                raise ParseError(f"{key} label {value!r} is not a number", number) from None
            return
    raise ParseError(f"missing {key} label", number)


def unescape_prometheus_help(text: str) -> str:
    """Only ``\\\\`` and ``\\n`` are escapes in HELP; anything else stays as written."""
    if "\\" not in text:
        return text
    return exposition.unescape(text, line=0, column=0, strict=False, quote=False)
