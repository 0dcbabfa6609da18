"""``sidecarkit explain``: why a pod would, or would not, get sidecars.

Two steps decide, and the explanation follows them in order. First the API server: from the
MutatingWebhookConfiguration's rules and selectors (``webhook.selecting``) it decides whether
the pod is sent to a sidecarkit webhook at all; a pod that is not sent is created as written,
whatever its annotations say. Then the injector, on the pods it is sent: its report says what
it did and why, in the same reason codes ``inject`` prints.

The configuration is the one installed in the cluster when there is one, else the one
``sidecarkit install`` prints, so the explanation holds for a default install. matchConditions
are CEL and evaluated by the API server; the explanation names them rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from sidecarkit import discovering, errors
from sidecarkit.injection import configs, facts, injecting, profiles
from sidecarkit.k8s import cluster as clusters
from sidecarkit.k8s import workloads
from sidecarkit.webhook import installing, selecting

__all__ = ["explain", "install_configuration", "run"]

Json = Any


def install_configuration(*, namespace: str = "sidecarkit-system") -> Json:
    """The MutatingWebhookConfiguration a default ``sidecarkit install`` creates."""
    objects = installing.render(installing.Install(image="unused", namespace=namespace))
    return next(o for o in objects if o["kind"] == "MutatingWebhookConfiguration")


def _objects(document: Json) -> list[Json]:
    if isinstance(document, Mapping) and document.get("kind") == "List":
        return [item for item in document.get("items") or [] if isinstance(item, Mapping)]
    return [document] if isinstance(document, Mapping) else []


def _pod_labels(obj: Json) -> dict[str, str] | None:
    """The labels the pods of ``obj`` are created with; None when ``obj`` makes no pods."""
    if obj.get("kind") == "Pod":
        metadata = obj.get("metadata") or {}
    else:
        template = workloads.pod_template(obj)
        if template is None:
            return None
        metadata = template.get("metadata") or {}
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return {str(k): str(v) for k, v in (labels or {}).items()}


def explain(
    document: Json,
    *,
    where: str,
    configuration: Json,
    namespace: str,
    cluster: facts.Facts,
    config: configs.Config,
) -> list[str]:
    """Lines that explain each pod-making object of ``document``, for people."""
    lines: list[str] = []
    for index, obj in enumerate(_objects(document)):
        place = where if document is obj else f"{where}, items[{index}]"
        labels = _pod_labels(obj)
        target = workloads.describe(obj)
        if labels is None:
            lines.append(f"{place} {target}: makes no pods; nothing to inject")
            continue
        lines.append(f"{place} {target} (pods in namespace {namespace}):")
        verdicts = selecting.verdicts(
            configuration,
            namespace=namespace,
            namespace_labels=cluster.namespace_labels,
            pod_labels=labels,
        )
        for verdict in verdicts:
            if verdict.sent:
                then = (
                    f"; then matchConditions {', '.join(verdict.conditions)} (CEL, evaluated by "
                    "the API server)"
                    if verdict.conditions
                    else ""
                )
                lines.append(f"  webhook {verdict.webhook}: called{then}")
            else:
                lines.append(f"  webhook {verdict.webhook}: not called: {verdict.reason}")
        if not any(v.sent for v in verdicts):
            lines.append("  result: created as written; no sidecarkit webhook sees these pods")
            continue
        try:
            _, report = injecting.inject(obj, config, cluster, location=place)
        except errors.InputError as exc:
            lines.append(f"  injector: refuses the pod, so the API server rejects it: {exc}")
            continue
        for decision in report.decisions:
            for reason in decision.reasons:
                lines.append(f"  injector: {reason.code}: {reason.message}")
    return lines


def run(
    documents: Sequence[tuple[str, Json]],
    *,
    target: clusters.Target | None,
    config: configs.Config | None,
    mode: profiles.Mode | None,
    kubernetes_version: tuple[int, int] | None,
    namespace_labels: Mapping[str, str],
    install_namespace: str = discovering.INSTALL_NAMESPACE,
) -> list[str]:
    """Explain ``(where, document)`` pairs, with the cluster's facts when ``target`` is given.

    Command-line values win over the cluster's, as in ``inject --cluster``.
    """
    lines: list[str] = []
    live = discovering.connect(target) if target is not None else None
    configuration = None
    if live is not None:
        configuration = live.webhook_configuration()
        if configuration is None:
            lines.append(
                f"no MutatingWebhookConfiguration {discovering.WEBHOOK_CONFIGURATION} on "
                f"{live.describe}: sidecarkit's webhook is not installed there, so no pod is "
                "injected at admission; below is what a default install would do"
            )
        if config is None:
            config = live.config(namespace=install_namespace)
        if kubernetes_version is None:
            kubernetes_version = live.kubelet_version()
    if configuration is None:
        configuration = install_configuration(namespace=install_namespace)
    chosen = config or configs.Config()
    if mode is not None:
        chosen = replace(chosen, mode=mode)
    for where, document in documents:
        if live is not None:
            known = live.facts_for(
                document, kubernetes_version=kubernetes_version, extra_labels=namespace_labels
            )
            namespace = discovering.namespace_of(document) or live.default_namespace
        else:
            known = facts.Facts(
                kubernetes_version=kubernetes_version,
                namespace_labels=MappingProxyType(dict(namespace_labels)),
            )
            namespace = discovering.namespace_of(document) or "default"
        lines += explain(
            document,
            where=where,
            configuration=configuration,
            namespace=namespace,
            cluster=known,
            config=chosen,
        )
    return lines
