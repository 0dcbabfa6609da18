"""Writing families back out: Prometheus text 0.0.4 or OpenMetrics 1.0, as the scraper asks.

``negotiate`` picks the format from an ``Accept`` header the way Prometheus servers expect:
OpenMetrics when the scraper accepts ``application/openmetrics-text`` (version 1.0.0 or
unversioned) at a quality at least that of text, else text 0.0.4. Numbers are written as Go
writes them (``+Inf``, ``-Inf``, ``NaN``, shortest round-trip form), so what we parse, render
and parse again is the same.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable
from typing import Final

from sidecarkit.agents.metrics import exposition, openmetrics, promtext, shaping

__all__ = ["negotiate", "render", "render_openmetrics", "render_text"]

#: OpenMetrics types as the text format knows them (it has no info, stateset or gaugehistogram).
_TEXT_TYPES: Final = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "summary": "summary",
    "unknown": "untyped",
    "untyped": "untyped",
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
}


def number(value: float) -> str:
    """``value`` as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` would write it, near enough
    that Prometheus reads back the same float."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_value(text: str) -> str:
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


def _escape_help(text: str, *, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


#: Names already known to need no quoting; they repeat on every line (bounded).
_PLAIN_LABELS: set[str] = set()
_PLAIN_METRICS: set[str] = set()


def _plain(name: str, known: set[str], pattern: re.Pattern[str]) -> bool:
    if name in known:
        return True
    if pattern.fullmatch(name) is None:
        return False
    if len(known) < 4096:
        known.add(name)
    return True


def _label_name(name: str) -> str:
    if _plain(name, _PLAIN_LABELS, exposition.LABEL_NAME):
        return name
    return f'"{_escape_value(name)}"'  # the UTF-8 extension: quoted names


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join([f'{_label_name(k)}="{_escape_value(v)}"' for k, v in labels])
    return "{" + inner + "}" if inner else ""


def _series(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """``name{labels}``, or ``{"name",labels}`` for a name only the UTF-8 extension allows."""
    if _plain(name, _PLAIN_METRICS, exposition.METRIC_NAME):
        return name + _labels(labels)
    inner = _labels(labels)[1:-1]
    quoted = f'"{_escape_value(name)}"'
    return "{" + quoted + ("," + inner if inner else "") + "}"


def _metadata_name(name: str) -> str:
    return name if exposition.METRIC_NAME.fullmatch(name) else f'"{_escape_value(name)}"'


def render_text(families: Iterable[exposition.Family]) -> bytes:
    """Prometheus text 0.0.4. Timestamps in milliseconds; exemplars are not part of it."""
    out: list[str] = []
    for family in families:
        name = family.name
        kind = _TEXT_TYPES.get(family.type, "untyped")
        if (
            family.type == "counter"
            and family.samples
            and all(s.name == name + "_total" for s in family.samples)
        ):
            name += "_total"
        elif family.type == "info":
            name += "_info"
        shown = _metadata_name(name)
        if family.help is not None:
            out.append(f"# HELP {shown} {_escape_help(family.help, quote=False)}")
        out.append(f"# TYPE {shown} {kind}")
        for s in family.samples:
            line = f"{_series(s.name, s.labels)} {number(s.value)}"
            if s.timestamp is not None:
                line += f" {round(s.timestamp * 1000)}"
            out.append(line)
    return ("\n".join(out) + "\n").encode() if out else b""


def _timestamp(value: float) -> str:
    """A timestamp in seconds, never in exponent form: the reference parser reads
    ``1e-10`` as a float and ``0`` as an exact time, and then cannot compare the two."""
    text = number(value)
    if "e" in text:
        text = format(decimal.Decimal(text), "f")
    return text


def _canonical_le(labels: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``le`` of +Inf written ``+Inf``, the one spelling OpenMetrics accepts."""
    for k, v in labels:
        if k == "le" and v != "+Inf" and v.lower().lstrip("+") in ("inf", "infinity"):
            return tuple((k, "+Inf" if k == "le" else v) for k, v in labels)
    return labels


def render_openmetrics(families: Iterable[exposition.Family]) -> bytes:
    """OpenMetrics 1.0, ending in ``# EOF``. Timestamps in seconds; exemplars kept.

    Families that would not be valid OpenMetrics as they are (see ``shaping``) go out as
    ``unknown`` families, every sample kept.
    """
    out: list[str] = []
    for family in shaping.shape(families):
        name, kind = family.name, family.type
        shown = _metadata_name(name)
        out.append(f"# TYPE {shown} {kind}")
        if family.unit is not None:
            out.append(f"# UNIT {shown} {family.unit}")
        if family.help is not None:
            out.append(f"# HELP {shown} {_escape_help(family.help, quote=True)}")
        buckets = kind in ("histogram", "gaugehistogram")
        for s in family.samples:
            labels = _canonical_le(s.labels) if buckets else s.labels
            line = f"{_series(s.name, labels)} {number(s.value)}"
            if s.timestamp is not None:
                line += f" {_timestamp(s.timestamp)}"
            if (
                s.exemplar is not None
                and family.exemplars
                and s.name.endswith(("_total", "_bucket"))
            ):
                e = s.exemplar
                line += f" # {_labels(e.labels) or '{}'} {number(e.value)}"
                if e.timestamp is not None:
                    line += f" {_timestamp(e.timestamp)}"
            out.append(line)
    out.append("# EOF")
    return ("\n".join(out) + "\n").encode()


def negotiate(accept: str | None) -> str:
    """The content type to answer a scrape with, from its ``Accept`` header."""
    best_om = best_text = -1.0
    for part in (accept or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        params = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if media == "application/openmetrics-text" and params.get("version", "1.0.0") in (
            "1.0.0",
            "0.0.1",
        ):
            best_om = max(best_om, quality)
        elif media in ("text/plain", "*/*", "text/*"):
            best_text = max(best_text, quality)
    if best_om > 0 and best_om >= best_text:
        return openmetrics.CONTENT_TYPE
    return promtext.CONTENT_TYPE


def render(families: Iterable[exposition.Family], content_type: str) -> bytes:
    """``families`` in the format ``content_type`` names (from ``negotiate``)."""
    if content_type.startswith("application/openmetrics-text"):
        return render_openmetrics(families)
    return render_text(families)
