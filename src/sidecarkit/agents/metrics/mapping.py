"""StatsD name mapping, as statsd_exporter's mapping config does it: a dotted name that
matches a rule becomes the rule's metric name and labels, taken from the name's parts.

    statsd_mappings:
      - match: "api.*.requests.*"        # glob: each * is one dot-separated part
        name: "api_requests"
        labels: {service: "$1", code: "$2"}
      - match: 'db\\.(\\w+)\\.query'        # match_type regex: anchored at both ends
        match_type: regex
        name: "db_queries"
        labels: {table: "$1"}

The first rule that matches wins; a name no rule matches keeps the usual treatment (every
character a Prometheus name cannot hold becomes ``_``). Mapped labels come before the line's
own tags. Results are cached per name (bounded). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Mapper", "Rule", "rule_from"]

_GROUP: Final = re.compile(r"\$\{?(\d+)\}?")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_CACHED: Final = 10_000

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    name: str
    labels: Labels = ()


def _glob(text: str) -> re.Pattern[str]:
    """``*`` is one dot-separated part, captured; everything else is itself."""
    return re.compile("([^.]*)".join(re.escape(part) for part in text.split("*")))


def rule_from(data: Mapping[str, Any], *, where: str) -> Rule:
    """A rule from its YAML form; ValueError names ``where`` and the fix."""
    unknown = set(data) - {"match", "match_type", "name", "labels"}
    if unknown:
        raise ValueError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; accepted: match, match_type, name, "
            "labels"
        )
    match, name = data.get("match"), data.get("name")
    if not isinstance(match, str) or not match or not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a mapping needs match (the StatsD name) and name")
    kind = str(data.get("match_type", "glob"))
    if kind == "glob":
        pattern = _glob(match)
    elif kind == "regex":
        try:
            pattern = re.compile(match)
        except re.error as exc:
            raise ValueError(f"{where}: match does not compile: {exc}") from exc
    else:
        raise ValueError(f"{where}: match_type {kind!r} is not glob or regex")
    labels = data.get("labels", {})
    if not isinstance(labels, Mapping):
        raise ValueError(f"{where}: labels must be a mapping of names to values")
    for label in labels:
        if not isinstance(label, str) or _LABEL_NAME.fullmatch(label) is None:
            raise ValueError(f"{where}: label name {label!r} is not [a-zA-Z_][a-zA-Z0-9_]*")
    return Rule(pattern, name, tuple((str(k), str(v)) for k, v in labels.items()))


def _expand(template: str, match: re.Match[str]) -> str:
    def group(m: re.Match[str]) -> str:
        try:
            return match.group(int(m.group(1))) or ""
        except IndexError:
            return ""

    return _GROUP.sub(group, template)


class Mapper:
    """The rules, applied to StatsD names, with the results cached per name."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._cache: dict[str, tuple[str, Labels] | None] = {}

    def map(self, name: str) -> tuple[str, Labels] | None:
        """(metric name, labels) of the first rule ``name`` matches, or None."""
        cache = self._cache
        if name in cache:
            return cache[name]
        found = None
        for rule in self.rules:
            m = rule.pattern.fullmatch(name)
            if m is not None:
                labels = tuple((k, _expand(v, m)) for k, v in rule.labels)
                found = (_expand(rule.name, m), labels)
                break
        if len(cache) < _CACHED:
            cache[name] = found
        return found
