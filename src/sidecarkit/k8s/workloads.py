"""Where each workload kind keeps its pod template.

Pure data access on JSON-shaped Kubernetes objects (plain dicts, or ruamel's dict subclasses when
the shell loaded YAML with comments): nothing here copies, so callers decide when to.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final

from sidecarkit import errors

__all__ = ["TEMPLATE_PATHS", "describe", "pod_template", "template_path"]

#: The path from the object to its pod template (an object with ``metadata`` and ``spec``).
#: A Pod is its own template. Kinds are matched by name only: a CronJob under ``batch/v1beta1``
#: has the same shape as under ``batch/v1``, and rejecting it would help nobody.
TEMPLATE_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def template_path(kind: object) -> tuple[str, ...] | None:
    """The path to the pod template of ``kind``, or None for kinds without one."""
    if not isinstance(kind, str):
        return None
    return TEMPLATE_PATHS.get(kind)


def describe(obj: object) -> str:
    """``Kind/name`` for messages; ``generateName`` stands in for a missing name."""
    if not isinstance(obj, dict):
        return "<not an object>"
    kind = obj.get("kind") or "<no kind>"
    meta = obj.get("metadata")
    name = None
    if isinstance(meta, dict):
        name = meta.get("name") or (
            f"{meta['generateName']}*" if meta.get("generateName") else None
        )
    return f"{kind}/{name or '<no name>'}"


def pod_template(obj: MutableMapping[str, Any]) -> MutableMapping[str, Any] | None:
    """The pod template of a workload object, or None when the object has none.

    Raises ManifestError when a step of the path exists but is not a mapping, because then the
    object is broken in a way the user must fix, and silently skipping it would hide that.
    """
    path = template_path(obj.get("kind"))
    if path is None:
        return None
    node: Any = obj
    walked: list[str] = []
    for key in path:
        walked.append(key)
        node = node.get(key)
        if node is None:
            return None
        if not isinstance(node, dict):
            raise errors.ManifestError(
                f"{describe(obj)}: {'.'.join(walked)} must be a mapping, "
                f"got {type(node).__name__}; fix the manifest"
            )
    spec = node.get("spec")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        where = ".".join([*path, "spec"])
        raise errors.ManifestError(
            f"{describe(obj)}: {where} must be a mapping, got {type(spec).__name__}; "
            "fix the manifest"
        )
    template: MutableMapping[str, Any] = node
    return template
