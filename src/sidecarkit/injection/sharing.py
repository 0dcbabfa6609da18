"""Copy on write for YAML aliases: injection never edits a node that something else refers to.

A YAML anchor and its aliases load as one shared object (``env: *common-env`` in two
containers, ``<<: *defaults`` merging a base's ``volumeMounts``). Appending a mount to such a
list in place would append it everywhere the alias appears: twice to the same container, or to
an unrelated part of the document. So before placing or stripping, every node that those edit
is made referenced exactly once: a node with more than one reference is replaced, in the one
place injection edits, by its own copy. The rest of the document keeps its anchors and aliases.

Plain JSON data (the webhook's) shares nothing and skips all of this.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any

__all__ = ["EDITED_CONTAINER_FIELDS", "unshare"]

EDITED_CONTAINER_FIELDS = ("volumeMounts", "env", "command")
"""The fields of the app's containers that placing appends to and stripping trims."""

_Node = dict[Any, Any] | list[Any]


def _references(root: object) -> dict[int, int]:
    """How many references each collection under ``root`` has (``root`` itself counts 1)."""
    counts: dict[int, int] = {}
    if not isinstance(root, dict | list):
        return counts
    counts[id(root)] = 1
    stack: list[_Node] = [root]
    while stack:
        node = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                key = id(child)
                seen = counts.get(key, 0)
                counts[key] = seen + 1
                if not seen:
                    stack.append(child)
    return counts


def _steps(
    root: MutableMapping[str, Any], path: tuple[str, ...], *, labels: bool = False
) -> list[tuple[Any, Any]]:
    """(parent, key) of every node that placing or stripping may edit, parents first."""
    steps: list[tuple[Any, Any]] = []
    node: Any = root
    for key in path:
        steps.append((node, key))
        node = node.get(key) if isinstance(node, dict) else None
    template = node
    if not isinstance(template, dict):
        return steps
    for key in ("metadata", "spec"):
        steps.append((template, key))
    metadata = template.get("metadata")
    if isinstance(metadata, dict):
        steps.append((metadata, "annotations"))
        if labels:
            steps.append((metadata, "labels"))
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return steps
    for key in ("initContainers", "containers", "volumes"):
        steps.append((spec, key))
    containers = spec.get("containers")
    if isinstance(containers, list):
        for index, container in enumerate(containers):
            steps.append((containers, index))
            if isinstance(container, dict):
                steps.extend((container, key) for key in EDITED_CONTAINER_FIELDS)
    return steps


def unshare(root: MutableMapping[str, Any], path: tuple[str, ...], *, labels: bool = False) -> None:
    """Give every node on the edit path below ``root`` exactly one reference.

    ``path`` leads from ``root`` to the pod template. Each copy is made in the parent that
    injection edits through, and the references are counted again after it, because a copied
    subtree can still share nodes inside itself. ``labels``: the template's labels too (a
    Deployment's template labels are often an alias of its selector, which must not change).
    """
    counts = _references(root)
    if all(n == 1 for n in counts.values()):
        return
    index = 0
    steps = _steps(root, path, labels=labels)
    while index < len(steps):
        parent, key = steps[index]
        index += 1
        if isinstance(parent, dict):
            if key not in parent:
                continue
            child = parent[key]
        elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
            child = parent[key]
        else:
            continue
        if isinstance(child, dict | list) and counts.get(id(child), 0) > 1:
            parent[key] = copy.deepcopy(child)
            counts = _references(root)
            steps = _steps(root, path, labels=labels)
