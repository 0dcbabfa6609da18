"""Where the logs agent delivers: one module per kind of receiver, all behind ``records.Sink``.

A sink is described by a ``Spec``: its kind, its endpoint (a URL, a path or ``host:port``) and
kind-specific options from the YAML settings. ``create`` builds it; a bad endpoint or option is a
``ValueError`` whose message names the option and says what is accepted.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sidecarkit.agents.logs.records import Sink
from sidecarkit.agents.logs.routing import Match

__all__ = ["KINDS", "Spec", "create"]

KINDS: Final = {
    "stdout": "stdout",
    "file": "file",
    "loki": "loki",
    "elasticsearch": "elasticsearch",
    "otlp": "otlp",
    "syslog": "syslog",
    "http": "http",
}
"""Sink kind -> module in this package that implements it (each has ``create(spec)``)."""


@dataclass(frozen=True, slots=True)
class Spec:
    kind: str
    endpoint: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    """Name in metrics and logs; defaults to the kind."""
    match: Match | None = None
    """Which records the sink takes (``routing``); ``None``: all of them."""


def create(spec: Spec) -> Sink:
    """The sink ``spec`` describes."""
    module = KINDS.get(spec.kind)
    if module is None:
        raise ValueError(f"unknown sink kind {spec.kind!r}; use one of: {', '.join(sorted(KINDS))}")
    factory = importlib.import_module(f"{__name__}.{module}").create
    sink: Sink = factory(spec)
    return sink
