"""Which webhooks of a MutatingWebhookConfiguration the API server would call for a pod CREATE.

The API server decides before it sends anything, from the webhook's ``rules``, its
``namespaceSelector`` (matched against the namespace's labels, which always include
``kubernetes.io/metadata.name``), its ``objectSelector`` (the pod's labels) and then its
``matchConditions``. This module does the same for the first three, with reasons a person can
read, so ``explain`` and ``repair`` can say why a pod did or did not reach the webhook.

``matchConditions`` are CEL expressions; they are listed, not evaluated: a pod that passes the
selectors is only "sent unless a condition says otherwise". Pure: no I/O.

Label selector semantics follow ``metav1.LabelSelector``: ``matchLabels`` and every
``matchExpressions`` entry must all hold; ``In`` needs the key with one of the values, ``NotIn``
holds when the key is absent or has another value, ``Exists`` and ``DoesNotExist`` look at the
key only; an empty or missing selector matches everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["NAME_LABEL", "Verdict", "as_selected", "matches", "verdicts"]

NAME_LABEL: Final = "kubernetes.io/metadata.name"
"""The label the API server puts on every namespace, set to its name."""
Json = Any


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the API server would do with one webhook for one pod."""

    webhook: str
    sent: bool
    """Whether the rules and both selectors let the pod through."""
    reason: str
    """The first thing that stopped it, or what matched."""
    conditions: tuple[str, ...] = ()
    """Names of the matchConditions still to pass (evaluated by the API server, in CEL)."""


def as_selected(name: str, labels: Mapping[str, str]) -> dict[str, str]:
    """A namespace's labels as selectors see them: with ``kubernetes.io/metadata.name``."""
    return {**labels, NAME_LABEL: name}


def _show(labels: Mapping[str, str], key: str) -> str:
    return f"{key}={labels[key]}" if key in labels else f"no {key}"


def matches(selector: Json, labels: Mapping[str, str]) -> tuple[bool, str]:
    """Whether ``labels`` satisfy ``selector``, and the requirement that decided it."""
    if not selector:
        return True, "empty selector"
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False, f"{key}={value} required, found {_show(labels, key)}"
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = list(expression.get("values") or [])
        present = key in labels
        if operator == "In":
            ok = present and labels[key] in values
        elif operator == "NotIn":
            ok = not present or labels[key] not in values
        elif operator == "Exists":
            ok = present
        elif operator == "DoesNotExist":
            ok = not present
        else:
            return False, f"unknown operator {operator!r} on {key}"
        if not ok:
            shown = f" {values}" if values else ""
            return False, f"{key} {operator}{shown} fails: {_show(labels, key)}"
    return True, "matches"


def _covers_pod_create(rule: Json) -> bool:
    def has(field: str, *wanted: str) -> bool:
        return any(item in wanted for item in rule.get(field) or [])

    return (
        has("operations", "CREATE", "*")
        and has("apiGroups", "", "*")
        and has("apiVersions", "v1", "*")
        and has("resources", "pods", "*", "*/*")
        and rule.get("scope", "*") in ("*", "Namespaced")
    )


def verdicts(
    configuration: Json,
    *,
    namespace: str,
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
) -> list[Verdict]:
    """One verdict per webhook of ``configuration`` for creating a pod with ``pod_labels``."""
    seen_namespace = as_selected(namespace, namespace_labels)
    found: list[Verdict] = []
    for webhook in configuration.get("webhooks") or []:
        name = str(webhook.get("name", "?"))
        if not any(_covers_pod_create(rule) for rule in webhook.get("rules") or []):
            found.append(Verdict(name, False, "its rules do not cover pod CREATE"))
            continue
        ok, why = matches(webhook.get("namespaceSelector"), seen_namespace)
        if not ok:
            found.append(Verdict(name, False, f"namespaceSelector: {why}"))
            continue
        ok, why = matches(webhook.get("objectSelector"), pod_labels)
        if not ok:
            found.append(Verdict(name, False, f"objectSelector: {why}"))
            continue
        conditions = tuple(str(c.get("name")) for c in webhook.get("matchConditions") or [])
        found.append(Verdict(name, True, "rules and both selectors match", conditions))
    return found
