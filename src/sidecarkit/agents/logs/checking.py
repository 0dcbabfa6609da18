"""``sidecarkit agent logs --check-config FILE``: validate everything, print the pipeline.

The check does what a start does short of opening files and sockets: it reads the settings
(file, then env, then flags), compiles every parser, stage and sink, and prints the pipeline the
agent would run, in the order a record goes through it. Any error is the one the agent would
stop on, so a CI job can catch it before a pod crash-loops on it.
"""

from __future__ import annotations

import re
from typing import Final

from sidecarkit.agents.logs import parsing, stages, staging
from sidecarkit.agents.logs.settings import Settings, effective_sources

__all__ = ["check"]

_USERINFO: Final = re.compile(r"//[^/@]*@")
"""Credentials in an endpoint URL, kept out of what is printed."""


def _parser(spec: parsing.ParserSpec) -> str:
    parts = [spec.format]
    if spec.regex:
        parts.append(f"regex={spec.regex!r}")
    if spec.multiline:
        parts.append(f"multiline={spec.multiline}")
    if spec.multiline_start:
        parts.append(f"multiline_start={spec.multiline_start!r}")
    if spec.multiline_continue:
        parts.append(f"multiline_continue={spec.multiline_continue!r}")
    return " ".join(parts)


def check(settings: Settings) -> str:
    """The effective pipeline as text; ValueError (saying where and how to fix) if invalid."""
    sources = effective_sources(settings)
    for source in sources:
        parsing.compile(source.parser)
    staging.compile(settings.stages)  # the sinks were created once already, when read
    lines = ["sources:"]
    for source in sources:
        lines.append(f"  {source.name}: {source.paths} (parser: {_parser(source.parser)})")
    lines.append("stages:" if settings.stages else "stages: none (records go as parsed)")
    for index, stage in enumerate(settings.stages, 1):
        note = " (joined by each source's parser)" if isinstance(stage, stages.Multiline) else ""
        lines.append(f"  {index}. {stages.describe(stage)}{note}")
    lines.append("sinks:")
    for spec in settings.sinks:
        target = f" -> {_USERINFO.sub('//***@', spec.endpoint)}" if spec.endpoint else ""
        rule = f" (takes {spec.match.describe()})" if spec.match is not None else ""
        lines.append(f"  {spec.name or spec.kind}: {spec.kind}{target}{rule}")
    labels = ", ".join(f"{k}={v}" for k, v in settings.labels)
    lines.append(f"labels: {labels or 'none'}")
    lines.append(f"offsets: {settings.offsets_dir or 'not saved (no offsets_dir)'}")
    tuning = settings.tuning
    if len(settings.sinks) > 1:
        lines.append(
            f"spool of a stalled sink: {settings.offsets_dir}/spool, {tuning.spool_max} bytes "
            f"per sink, after {tuning.spool_after:g} s"
            if settings.offsets_dir and tuning.spool_max
            else "spool of a stalled sink: none (a stalled sink pauses reading for all "
            "once max_lead is reached)"
        )
    return "\n".join(lines) + "\n"
