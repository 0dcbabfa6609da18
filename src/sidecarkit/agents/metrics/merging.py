"""Merging the families of several sources (targets, StatsD, the agent) into one exposition.

An exposition may hold each family once, and each sample name in one family only; a series
(name and labels) may appear once. Sources do not know about each other, so the merge is
where their clashes show, and it never resolves one silently: it keeps the first source's
data (in the order the sources are given, which is the configured order of the targets) and
returns a ``Conflict`` for everything it had to leave out, for the agent to log and count.

Families are matched by the name the text format gives them: a counter parsed from
OpenMetrics is called ``x`` with samples ``x_total``, the same counter parsed from text is
called ``x_total``; both merge under ``x_total``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sidecarkit.agents.metrics import exposition

__all__ = ["Conflict", "Source", "key_of", "merge", "names_of"]


@dataclass(frozen=True, slots=True)
class Conflict:
    """What a merge left out, and why, in one sentence."""

    kind: str
    """``type`` (a family or sample name another source uses with another type) or
    ``duplicate`` (a series another source already gave)."""
    family: str
    source: str
    message: str


@dataclass(frozen=True, slots=True)
class Source:
    """One source's families, with each family's merge key and sample names worked out once
    (a target's stay the same until its next scrape, and are merged on every request)."""

    name: str
    families: Sequence[exposition.Family]
    keys: Sequence[str]
    names: Sequence[frozenset[str]]

    @classmethod
    def of(cls, name: str, families: Sequence[exposition.Family]) -> Source:
        return cls(name, families, [key_of(f) for f in families], [names_of(f) for f in families])


def key_of(family: exposition.Family) -> str:
    """The family's name in the text format (``x_total`` for an OpenMetrics counter ``x``)."""
    name = family.name
    if (
        family.type == "counter"
        and not name.endswith("_total")
        and any(s.name == name + "_total" for s in family.samples)
    ):
        return name + "_total"
    return name


def names_of(family: exposition.Family) -> frozenset[str]:
    """Every sample name of the family."""
    return frozenset(s.name for s in family.samples)


@dataclass(slots=True)
class _Merged:
    family: exposition.Family
    source: str
    series: set[tuple[str, tuple[tuple[str, str], ...]]] | None = None


def merge(sources: Iterable[Source]) -> tuple[list[exposition.Family], list[Conflict]]:
    """One list of families from all sources, and the conflicts found on the way."""
    merged: dict[str, _Merged] = {}
    owner: dict[str, str] = {}  # sample name -> key of the family holding it
    conflicts: list[Conflict] = []
    for source in sources:
        for family, key, names in zip(source.families, source.keys, source.names, strict=True):
            known = merged.get(key)
            if known is not None and known.family.type != family.type:
                conflicts.append(
                    Conflict(
                        "type",
                        key,
                        source.name,
                        f"family {key} from {source.name} is a {family.type}, but {key} is "
                        f"already a {known.family.type} from {known.source}; its samples are "
                        "left out. Rename one of them, or drop it with a relabel rule",
                    )
                )
                continue
            taken = sorted(n for n in names if owner.get(n, key) != key)
            if taken:
                other = merged[owner[taken[0]]]
                conflicts.append(
                    Conflict(
                        "type",
                        key,
                        source.name,
                        f"family {key} from {source.name} has samples named {taken[0]}, which "
                        f"belong to the {other.family.type} {other.family.name} from "
                        f"{other.source}; its samples are left out. Rename one of them, or "
                        "drop it with a relabel rule",
                    )
                )
                continue
            for n in names:
                owner[n] = key
            if known is None:
                merged[key] = _Merged(
                    exposition.Family(
                        family.name, family.type, family.help, family.unit, list(family.samples)
                    ),
                    source.name,
                )
                continue
            _add(known, family, source.name, conflicts)
    return [m.family for m in merged.values()], conflicts


def _add(known: _Merged, family: exposition.Family, source: str, conflicts: list[Conflict]) -> None:
    """Samples of a second source's family of the same name and type, without the series
    already there."""
    if known.series is None:
        known.series = {(s.name, tuple(sorted(s.labels))) for s in known.family.samples}
    series = known.series
    dropped = 0
    samples = known.family.samples
    for s in family.samples:
        identity = (s.name, tuple(sorted(s.labels)))
        if identity in series:
            dropped += 1
        else:
            series.add(identity)
            samples.append(s)
    if dropped:
        conflicts.append(
            Conflict(
                "duplicate",
                known.family.name,
                source,
                f"{dropped} series of {known.family.name} from {source} already came from "
                f"{known.source} and are left out; tell the targets apart with target_label, "
                "or drop one with a relabel rule",
            )
        )
