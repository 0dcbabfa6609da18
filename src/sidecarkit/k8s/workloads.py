"""Where each workload kind keeps its pod template.

Pure data access on JSON-shaped Kubernetes objects (plain dicts, or ruamel's dict subclasses when
the shell loaded YAML with comments): nothing here copies, so callers decide when to.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, Final

from sidecarkit import errors

__all__ = [
    "NO_KINDS",
    "TEMPLATE_PATHS",
    "Kinds",
    "describe",
    "group_of",
    "is_list",
    "pod_template",
    "template_path",
]

Kinds = Mapping[tuple[str, str], tuple[str, ...]]
"""Workload kinds by (API group, kind): the path from the object to its pod template."""

NO_KINDS: Final[Kinds] = MappingProxyType({})
"""No kinds beyond the built-in ones."""

_SPEC_TEMPLATE: Final = ("spec", "template")

#: The path from the object to its pod template (an object with ``metadata`` and ``spec``), by
#: API group and kind: a custom resource may well be called ``Deployment`` and have no pod
#: template where ours has one. Versions do not matter (``batch/v1beta1`` CronJobs and
#: ``extensions/v1beta1`` Deployments have the same shape). A Pod is its own template. Argo
#: Rollouts and OpenShift DeploymentConfigs (also under the legacy ``v1`` of OpenShift 3) keep
#: theirs where a Deployment does.
TEMPLATE_PATHS: Final[Kinds] = MappingProxyType(
    {
        ("", "Pod"): (),
        ("", "ReplicationController"): _SPEC_TEMPLATE,
        ("apps", "Deployment"): _SPEC_TEMPLATE,
        ("apps", "StatefulSet"): _SPEC_TEMPLATE,
        ("apps", "DaemonSet"): _SPEC_TEMPLATE,
        ("apps", "ReplicaSet"): _SPEC_TEMPLATE,
        ("extensions", "Deployment"): _SPEC_TEMPLATE,
        ("extensions", "DaemonSet"): _SPEC_TEMPLATE,
        ("extensions", "ReplicaSet"): _SPEC_TEMPLATE,
        ("batch", "Job"): _SPEC_TEMPLATE,
        ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
        ("argoproj.io", "Rollout"): _SPEC_TEMPLATE,
        ("apps.openshift.io", "DeploymentConfig"): _SPEC_TEMPLATE,
        ("", "DeploymentConfig"): _SPEC_TEMPLATE,
    }
)
_BY_KIND: Final = {kind: path for (group, kind), path in TEMPLATE_PATHS.items() if group != ""}
_BY_KIND.update({kind: path for (group, kind), path in TEMPLATE_PATHS.items() if group == ""})


def group_of(api_version: object) -> str | None:
    """The API group of ``apiVersion`` (``apps/v1`` is ``apps``, ``v1`` the core ``""``)."""
    if not isinstance(api_version, str):
        return None
    group, slash, _ = api_version.rpartition("/")
    return group if slash else ""


def template_path(obj: Mapping[str, Any], extra: Kinds = NO_KINDS) -> tuple[str, ...] | None:
    """The path to the pod template of ``obj``'s group and kind, or None for other kinds.

    ``extra`` adds kinds (from the injection config) to the built-in ones. An object without
    an ``apiVersion`` (the API server would refuse it, but files in the making lack one) is
    taken by its kind alone.
    """
    kind = obj.get("kind")
    if not isinstance(kind, str):
        return None
    group = group_of(obj.get("apiVersion"))
    if group is None:
        for (_, extra_kind), path in extra.items():
            if extra_kind == kind:
                return path
        return _BY_KIND.get(kind)
    return extra.get((group, kind)) or TEMPLATE_PATHS.get((group, kind))


def is_list(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is a ``List`` or a typed list (``DeploymentList``) holding ``items``."""
    kind = obj.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list)


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


def pod_template(
    obj: MutableMapping[str, Any],
    extra: Kinds = NO_KINDS,
    *,
    path: tuple[str, ...] | None = None,
) -> MutableMapping[str, Any] | None:
    """The pod template of a workload object, or None when the object has none.

    Raises ManifestError when a step of the path exists but is not a mapping, because then the
    object is broken in a way the user must fix, and silently skipping it would hide that.
    ``path`` is ``template_path(obj, extra)`` when the caller has it already (the webhook
    looks it up once per pod, not three times).
    """
    if path is None:
        path = template_path(obj, extra)
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
