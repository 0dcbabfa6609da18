"""Routing: which sinks each record goes to, by the ``match`` rule of every sink.

A sink without a rule takes every record, as before routing existed. A sink with one takes the
records that satisfy all of the rule's parts:

- ``files``: the path of the file the record came from matches one of these globs
  (``fnmatch``: ``*`` also crosses ``/``);
- ``level``: the record's ``level`` field is one of these, compared without case;
- ``fields``: every named field holds one of its listed values, compared as text
  (``500`` matches the JSON number 500, ``true`` the JSON ``true``).

A rule of its own, ``unmatched: true``, takes the records that no other sink's rule took
(sinks without a rule do not count): "errors to the pager, the rest to storage". A record may go
to several sinks; one that no sink takes goes nowhere and is counted as unrouted.

Rules are compiled once, when the agent starts. Deciding costs nothing per record when no sink
has a rule, one cached look-up per file read when rules name files only (groups of raw bytes
then travel as they are), and a dict look-up per record and rule otherwise. A record without
fields (the ``raw`` parser) has no level or field to match: rules on them need a parser that
finds them.

This module is pure: it splits a batch's groups into the part each sink gets, and the shipper
does the rest (``shipping.Shipper``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sidecarkit.agents.logs import records

__all__ = ["Match", "Route", "Router", "parse_match"]

_KEYS: Final = ("files", "level", "fields", "unmatched")


@dataclass(frozen=True, slots=True)
class Match:
    """A sink's rule: the records it takes (every given part must hold)."""

    files: tuple[str, ...] = ()
    """Globs on the record's file path; any one may match."""
    levels: tuple[str, ...] = ()
    """Accepted values of the ``level`` field, lower case."""
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Field name and its accepted values, as text."""
    unmatched: bool = False
    """Takes what no other rule took (and nothing else: no other part may be given)."""

    @property
    def per_record(self) -> bool:
        """Whether the rule looks inside records (levels or fields), not just at their file."""
        return bool(self.levels or self.fields)

    def describe(self) -> str:
        """The rule in a few words, for the agent's start-up log."""
        if self.unmatched:
            return "what no other rule takes"
        parts = []
        if self.files:
            parts.append(f"files {' or '.join(self.files)}")
        if self.levels:
            parts.append(f"level {' or '.join(self.levels)}")
        for name, values in self.fields:
            parts.append(f"{name} {' or '.join(values)}")
        return " and ".join(parts) or "everything"


def _texts(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, Mapping | list) or item is None or item == "":
            raise ValueError(f"{where}: must be a value or a list of values, not {item!r}")
        out.append(_text(item))
    if not out:
        raise ValueError(f"{where}: give at least one value")
    return tuple(out)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_match(data: Any, where: str) -> Match:
    """A rule from its YAML form; ValueError names the key, the value and the fix."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError(
            f"{where}: a match rule is a mapping with any of {', '.join(_KEYS)}, "
            "e.g. match: {level: [error, fatal]}"
        )
    unknown = sorted(str(k) for k in set(data) - set(_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r}; a match rule takes {', '.join(_KEYS)}"
        )
    if "unmatched" in data:
        if data["unmatched"] is not True or len(data) > 1:
            raise ValueError(
                f"{where}: unmatched takes only the value true and stands alone "
                "(match: {unmatched: true}): the sink then gets what no other rule took"
            )
        return Match(unmatched=True)
    files: tuple[str, ...] = ()
    if "files" in data:
        files = _texts(data["files"], f"{where}.files")
    levels: tuple[str, ...] = ()
    if "level" in data:
        levels = tuple(v.lower() for v in _texts(data["level"], f"{where}.level"))
    fields: list[tuple[str, tuple[str, ...]]] = []
    if "fields" in data:
        given = data["fields"]
        if not isinstance(given, Mapping) or not given:
            raise ValueError(
                f"{where}.fields: a mapping of field names to a value or a list of values, "
                "e.g. fields: {team: payments}"
            )
        for name, values in given.items():
            fields.append((str(name), _texts(values, f"{where}.fields.{name}")))
    return Match(files, levels, tuple(fields))


@dataclass(slots=True)
class Route:
    """What one sink gets of a batch."""

    groups: list[records.Group]
    events: int
    size: int
    """Bytes of input its records came from (a share of a group's bytes for part of it)."""


class _Compiled:
    __slots__ = ("fields", "files", "levels", "paths")

    def __init__(self, match: Match) -> None:
        self.files = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in match.files))
            if match.files
            else None
        )
        self.levels = frozenset(match.levels) or None
        self.fields = tuple((name, frozenset(values)) for name, values in match.fields)
        self.paths: dict[str, bool] = {}

    def file_ok(self, path: str) -> bool:
        if self.files is None:
            return True
        known = self.paths.get(path)
        if known is None:
            if len(self.paths) > 4096:  # rotated names come and go: keep the cache small
                self.paths.clear()
            known = self.paths[path] = self.files.match(path) is not None
        return known

    def takes(self, fields: dict[str, Any] | None) -> bool:
        if fields is None:
            return False
        if self.levels is not None:
            level = fields.get("level")
            if level is None or _text(level).lower() not in self.levels:
                return False
        for name, values in self.fields:
            value = fields.get(name)
            if value is None or _text(value) not in values:
                return False
        return True


class Router:
    """The rules of an agent's sinks, in the order of its sinks, compiled once."""

    __slots__ = ("_rest", "_rules", "everything")

    def __init__(self, rules: Sequence[Match | None]) -> None:
        self._rest = [rule is not None and rule.unmatched for rule in rules]
        """Sinks with ``unmatched: true``."""
        self._rules = [
            None if rule is None or rule.unmatched else _Compiled(rule) for rule in rules
        ]
        self.everything = all(rule is None for rule in rules)
        """No sink has a rule: every batch goes whole to every sink."""

    def split(
        self, groups: list[records.Group], sizes: list[int], events: int, size: int
    ) -> tuple[list[Route | None], int]:
        """The part of ``groups`` (with their input ``sizes``; ``events`` and ``size`` in all)
        each sink gets, ``None`` for a sink that gets nothing; and how many events no sink
        took."""
        out: list[Route | None] = []
        taken_by: list[list[bool] | bool] = [False] * len(groups)
        """Per group: taken whole (True), by no rule yet (False), or per event."""
        everything = False
        for rule, rest in zip(self._rules, self._rest, strict=True):
            if rest:
                out.append(None)  # filled in below, once every rule had its pick
                continue
            if rule is None:
                out.append(Route(groups, events, size) if groups else None)
                everything = True
                continue
            taken: list[records.Group] = []
            count = part_size = 0
            for index, (group, group_size) in enumerate(zip(groups, sizes, strict=True)):
                if not rule.file_ok(group.source):
                    continue
                if rule.levels is None and not rule.fields:
                    taken.append(group)
                    count += group.count()
                    part_size += group_size
                    taken_by[index] = True
                    continue
                if not group.events:
                    continue  # bytes without fields: no level or field to match
                flags = [rule.takes(event[2]) for event in group.events]
                part = _part(group, flags)
                if part is None:
                    continue
                taken.append(part)
                count += len(part.events)
                part_size += group_size * len(part.events) // len(group.events)
                seen = taken_by[index]
                if part is group:
                    taken_by[index] = True
                elif seen is False:
                    taken_by[index] = flags
                elif seen is not True:
                    taken_by[index] = [a or b for a, b in zip(seen, flags, strict=True)]
            out.append(Route(taken, count, part_size) if taken else None)
        left: list[records.Group] = []
        left_count = left_size = 0
        for group, group_size, seen in zip(groups, sizes, taken_by, strict=True):
            if seen is False:
                left.append(group)
                left_count += group.count()
                left_size += group_size
            elif seen is not True:
                part = _part(group, [not flag for flag in seen])
                if part is not None:
                    left.append(part)
                    left_count += len(part.events)
                    left_size += group_size * len(part.events) // len(group.events)
        if left and any(self._rest):
            for index, rest in enumerate(self._rest):
                if rest:
                    out[index] = Route(left, left_count, left_size)
            return out, 0
        return out, 0 if everything else left_count


def _part(group: records.Group, flags: list[bool]) -> records.Group | None:
    """The events of ``group`` whose flag is set: the group itself when all are."""
    kept = flags.count(True)
    if kept == len(flags):
        return group
    if not kept:
        return None
    start = group.time_ns
    events = [
        event if event[3] is not None else (event[0], event[1], event[2], start + n)
        for n, (event, flag) in enumerate(zip(group.events, flags, strict=True))
        if flag
    ]
    return records.Group(group.source, group.key, events, group.time_ns)
