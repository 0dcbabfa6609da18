"""``annotate``: opt workloads in without rendering sidecars, for the webhook to inject.

What ``linkerd inject`` does by default: the manifest in Git says only that its pods want
sidecars (the ``sidecarkit.io/inject: "true"`` label on the pod template), and the admission
webhook renders them in the cluster with whatever profiles it runs. Manifests then do not
change when the profiles do.

A template that opts out (``"false"``) keeps its choice; one that already opts in, or carries
sidecars from an offline injection (its status annotation), is left as it is.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any

from sidecarkit.injection import injecting, policy, reports, shapes, sharing
from sidecarkit.k8s import workloads

__all__ = ["annotate"]

Code = reports.Code
Reason = reports.Reason


def annotate(
    document: Any, *, location: str = "document 1", owned: bool = False
) -> tuple[Any, reports.Report]:
    """Return ``document`` with its pod templates labelled to opt in, and the report.

    ``owned`` as for ``inject``: change ``document`` in place rather than a copy.
    """

    def handle(obj: MutableMapping[str, Any], where: str) -> tuple[Any, reports.Decision]:
        return _annotate_object(obj, where, owned=owned)

    return injecting.walk(document, handle, location)


def _decision(location: str, obj: Any, reason: Reason, *, changed: bool) -> reports.Decision:
    return reports.Decision(location, workloads.describe(obj), (reason,), changed)


def _annotate_object(
    obj: MutableMapping[str, Any], location: str, *, owned: bool
) -> tuple[Any, reports.Decision]:
    target = workloads.describe(obj)
    path = workloads.template_path(obj)
    template = workloads.pod_template(obj) if path is not None else None
    if path is None or template is None:
        code = Code.UNSUPPORTED_KIND if path is None else Code.NO_POD_TEMPLATE
        reason = Reason(code, "no pod template to opt in; passed through")
        return obj, _decision(location, obj, reason, changed=False)
    shapes.check(template, path=".".join(path), target=target)
    metadata = template.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    value = labels.get(policy.INJECT_LABEL)
    if value == "false":
        reason = Reason(Code.SKIPPED_OPTED_OUT, f'label {policy.INJECT_LABEL} is "false"; kept')
        return obj, _decision(location, obj, reason, changed=False)
    if value == "true" or policy.STATUS_ANNOTATION in annotations:
        reason = Reason(Code.UP_TO_DATE, "already opted in; nothing to do")
        return obj, _decision(location, obj, reason, changed=False)
    result = obj if owned else copy.deepcopy(obj)
    sharing.unshare(result, path, labels=True)
    new_template = workloads.pod_template(result)
    assert new_template is not None
    if not isinstance(new_template.get("metadata"), dict):
        new_template["metadata"] = {}
    new_metadata = new_template["metadata"]
    if not isinstance(new_metadata.get("labels"), dict):
        new_metadata["labels"] = {}
    new_metadata["labels"][policy.INJECT_LABEL] = "true"
    reason = Reason(
        Code.ANNOTATED,
        f'added label {policy.INJECT_LABEL}: "true"; the webhook adds the sidecars in the cluster',
    )
    return result, _decision(location, obj, reason, changed=True)
