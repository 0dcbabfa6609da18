"""Relabelling and enrichment of series, with Prometheus's semantics for the common actions.

A rule is what Prometheus's ``metric_relabel_configs`` takes: ``source_labels``, ``separator``
(``;``), ``regex`` (anchored at both ends, default ``(.*)``), ``target_label``, ``replacement``
(``$1``) and ``action``, one of ``replace``, ``keep``, ``drop``, ``labeldrop``, ``labelkeep``,
``labelmap``. The metric name is the label ``__name__``. Rules are compiled once, when the
settings load; applying them is per series, never per line of text.

Enrichment adds the pod's identity (and static labels) the way Prometheus attaches target
labels with ``honor_labels: false``: a label the app already set is kept as ``exported_<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sidecarkit.agents.metrics import exposition

__all__ = ["ACTIONS", "Rule", "apply", "enrich", "rule_from"]

ACTIONS: Final = ("replace", "keep", "drop", "labeldrop", "labelkeep", "labelmap")
_GROUP: Final = re.compile(r"\$\{?(\w+)\}?")
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Rule:
    action: str = "replace"
    source_labels: tuple[str, ...] = ()
    separator: str = ";"
    regex: re.Pattern[str] = re.compile("(.*)")
    target_label: str = ""
    replacement: str = "$1"


def rule_from(data: Mapping[str, Any], *, where: str) -> Rule:
    """A rule from its YAML/JSON form; ValueError names ``where`` and the fix."""
    unknown = set(data) - {
        "action",
        "source_labels",
        "separator",
        "regex",
        "target_label",
        "replacement",
    }
    if unknown:
        raise ValueError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; accepted: action, "
            "source_labels, separator, regex, target_label, replacement"
        )
    action = str(data.get("action", "replace"))
    if action not in ACTIONS:
        raise ValueError(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
    try:
        regex = re.compile(str(data.get("regex", "(.*)")))
    except re.error as exc:
        raise ValueError(f"{where}: regex does not compile: {exc}") from exc
    sources = data.get("source_labels", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ValueError(f"{where}: source_labels must be a list of label names")
    rule = Rule(
        action,
        tuple(sources),
        str(data.get("separator", ";")),
        regex,
        str(data.get("target_label", "")),
        str(data.get("replacement", "$1")),
    )
    if action == "replace" and not rule.target_label:
        raise ValueError(f"{where}: a replace rule needs target_label")
    return rule


def _expand(template: str, match: re.Match[str]) -> str:
    def group(m: re.Match[str]) -> str:
        key = m.group(1)
        try:
            value = match.group(int(key)) if key.isdigit() else match.group(key)
        except IndexError:  # no such group: Prometheus expands it to nothing
            return ""
        return value or ""

    return _GROUP.sub(group, template)


def _relabel(labels: dict[str, str], rules: Sequence[Rule]) -> dict[str, str] | None:
    for rule in rules:
        if rule.action in ("labeldrop", "labelkeep"):
            keep = rule.action == "labelkeep"
            labels = {
                k: v
                for k, v in labels.items()
                if k == "__name__" or (rule.regex.fullmatch(k) is not None) == keep
            }
            continue
        if rule.action == "labelmap":
            for k, v in list(labels.items()):
                m = rule.regex.fullmatch(k)
                if m is not None:
                    labels[_expand(rule.replacement, m)] = v
            continue
        value = rule.separator.join(labels.get(s, "") for s in rule.source_labels)
        m = rule.regex.fullmatch(value)
        if rule.action == "keep":
            if m is None:
                return None
        elif rule.action == "drop":
            if m is not None:
                return None
        elif m is not None:  # replace
            target = _expand(rule.target_label, m)
            new = _expand(rule.replacement, m)
            if new:
                labels[target] = new
            else:
                labels.pop(target, None)
    return labels


def apply(families: Iterable[exposition.Family], rules: Sequence[Rule]) -> list[exposition.Family]:
    """``families`` with every sample relabelled; samples a rule drops are gone."""
    if not rules:
        return list(families)
    out: list[exposition.Family] = []
    for family in families:
        kept = []
        for sample in family.samples:
            labels = _relabel({"__name__": sample.name, **dict(sample.labels)}, rules)
            if labels is None:
                continue
            name = labels.pop("__name__", sample.name)
            kept.append(
                exposition.Sample(
                    name, tuple(labels.items()), sample.value, sample.timestamp, sample.exemplar
                )
            )
        if kept:
            out.append(exposition.Family(family.name, family.type, family.help, family.unit, kept))
    return out


def enrich(
    families: Iterable[exposition.Family],
    extra: Sequence[tuple[str, str]],
    *,
    in_place: bool = False,
    honor: bool = False,
    cache: dict[int, tuple[Labels, Labels]] | None = None,
) -> list[exposition.Family]:
    """Add ``extra`` labels to every sample, as Prometheus adds a target's labels.

    A label the app set with the same name as one in ``extra`` is renamed ``exported_<name>``
    (``honor_labels: false``), or kept with the added one left out (``honor``).
    ``in_place`` changes the given samples instead of copying them: for families the caller
    has just parsed and owns, it saves an object per sample. ``cache``, kept by the caller
    with the same ``extra`` and ``honor`` from one scrape to the next, maps a labels tuple
    (by identity: the parsers give a known series the same tuple again) to its enriched one,
    so a series keeps one enriched tuple too; it holds both, so an identity is never reused.
    """
    if not extra:
        return list(families)
    names = {k for k, _ in extra}
    tail = tuple(extra)
    out = []
    known = cache.get if cache is not None else None
    for family in families:
        samples = family.samples if in_place else []
        for s in family.samples:
            original = own = s.labels
            hit = known(id(own)) if known is not None else None
            if hit is not None and hit[0] is own:
                labels = hit[1]
            else:
                added = tail
                for k, _ in own:
                    if k in names:
                        if honor:
                            mine = {name for name, _ in own}
                            added = tuple((n, v) for n, v in tail if n not in mine)
                        else:
                            own = tuple((f"exported_{k}" if k in names else k, v) for k, v in own)
                        break
                labels = own + added
                if cache is not None:
                    cache[id(original)] = (original, labels)
            if in_place:
                s.labels = labels
            else:
                samples.append(exposition.Sample(s.name, labels, s.value, s.timestamp, s.exemplar))
        out.append(
            family
            if in_place
            else exposition.Family(family.name, family.type, family.help, family.unit, samples)
        )
    return out
