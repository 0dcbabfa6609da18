"""``sidecarkit repair``: find the pods that missed injection and restart their owners.

A pod can run without the sidecars it opted into: it was created before the webhook existed,
admitted while the webhook was down under ``failurePolicy: Ignore``, or injected from an older
config. The webhook only sees pods at creation, so the fix is a new pod: restart the owner the
way ``kubectl rollout restart`` does (a ``kubectl.kubernetes.io/restartedAt`` annotation on the
pod template), and its controller replaces the pods under its own rollout rules.

A pod needs repair when the API server would send it to a sidecarkit webhook today (rules and
selectors, ``webhook.selecting``) and the injector would change it (a missing or stale
``sidecarkit.io/status``). Mirror pods, finished pods and pods being deleted are left alone.
Owners are restarted one at a time, ``interval`` apart, so a repair never restarts a whole
cluster at once; pods without a restartable owner (bare pods, Jobs) are listed with what to do.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from lightkube import ALL_NS, ApiError
from lightkube.resources.apps_v1 import DaemonSet, Deployment, ReplicaSet, StatefulSet
from lightkube.resources.core_v1 import Pod

from sidecarkit import discovering, errors
from sidecarkit.injection import configs, injecting
from sidecarkit.k8s import cluster as clusters
from sidecarkit.webhook import selecting

__all__ = ["Finding", "find", "restart", "run"]

RESTARTED_AT: Final = "kubectl.kubernetes.io/restartedAt"
RESTARTABLE: Final[dict[str, Any]] = {
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
    "DaemonSet": DaemonSet,
}
MIRROR: Final = "kubernetes.io/config.mirror"
Json = Any


@dataclass(frozen=True, slots=True)
class Finding:
    """One pod that should have sidecarkit's sidecars and does not (or has stale ones)."""

    namespace: str
    pod: str
    problem: str
    """``missing`` (never injected) or ``stale`` (injected from another config)."""
    owner: tuple[str, str] | None
    """(kind, name) of the workload to restart, or None when there is none to restart."""
    advice: str = ""

    def line(self) -> str:
        owner = f"{self.owner[0]}/{self.owner[1]}" if self.owner else "no restartable owner"
        advice = f"; {self.advice}" if self.advice else ""
        return f"{self.namespace}/{self.pod}: {self.problem} sidecars ({owner}){advice}"


def _owner(live: discovering.Cluster, pod: Json) -> tuple[tuple[str, str] | None, str]:
    namespace = pod["metadata"]["namespace"]
    refs = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")]
    if not refs:
        return None, "a bare pod: delete and recreate it"
    kind, name = refs[0]["kind"], refs[0]["name"]
    if kind == "ReplicaSet":
        try:
            replica_set = live.client.get(ReplicaSet, name, namespace=namespace).to_dict()
        except ApiError:
            return None, f"its ReplicaSet {name} could not be read"
        parents = [
            r for r in replica_set["metadata"].get("ownerReferences") or [] if r.get("controller")
        ]
        if not parents:
            return None, f"ReplicaSet {name} has no Deployment: delete the pod to replace it"
        kind, name = parents[0]["kind"], parents[0]["name"]
    if kind in RESTARTABLE:
        return (kind, name), ""
    return None, f"owned by {kind}/{name}, which has no rollout: delete the pod when it may go"


def find(
    live: discovering.Cluster,
    *,
    config: configs.Config,
    configuration: Json,
    kubernetes_version: tuple[int, int] | None,
    namespace: str | None = None,
) -> list[Finding]:
    """Every pod in ``namespace`` (all when None) that missed injection, with its owner."""
    pods = live.call(
        "list pods",
        lambda: [p.to_dict() for p in live.client.list(Pod, namespace=namespace or ALL_NS)],
        fix="ask for the RBAC to list pods",
    )
    findings: list[Finding] = []
    for pod in pods:
        metadata = pod["metadata"]
        if MIRROR in (metadata.get("annotations") or {}) or metadata.get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        facts = live.facts_for(pod, kubernetes_version=kubernetes_version, extra_labels={})
        verdicts = selecting.verdicts(
            configuration,
            namespace=metadata["namespace"],
            namespace_labels=facts.namespace_labels,
            pod_labels=metadata.get("labels") or {},
        )
        if not any(v.sent for v in verdicts):
            continue
        try:
            _, report = injecting.inject(pod, config, facts)
        except errors.InputError:
            continue  # the webhook would refuse it: a new pod would not be admitted either
        if not report.changed:
            continue
        codes = {r.code for d in report.decisions for r in d.reasons}
        problem = "stale" if "reinjected" in codes else "missing"
        owner, advice = _owner(live, pod)
        findings.append(Finding(metadata["namespace"], metadata["name"], problem, owner, advice))
    return findings


def restart(
    live: discovering.Cluster,
    findings: list[Finding],
    *,
    dry_run: bool,
    interval: float,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Restart each owner once, ``interval`` seconds apart; answer how many were restarted."""
    owners = sorted({(f.namespace, *f.owner) for f in findings if f.owner is not None})
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    for index, (namespace, kind, name) in enumerate(owners):
        if index:
            sleep(interval)
        resource: Any = RESTARTABLE[kind]

        def patch_owner(resource: Any = resource, name: str = name, ns: str = namespace) -> Any:
            return live.client.patch(resource, name, patch, namespace=ns, dry_run=dry_run)

        live.call(
            f"restart {kind} {namespace}/{name}",
            patch_owner,
            fix=f"ask for the RBAC to patch {kind.lower()}s",
        )
        say(f"restarted {kind} {namespace}/{name}{' (dry run)' if dry_run else ''}")
    return len(owners)


def run(
    target: clusters.Target,
    *,
    namespace: str | None,
    config: configs.Config | None,
    apply: bool,
    dry_run: bool,
    interval: float,
    install_namespace: str,
    say: Callable[[str], None],
) -> list[Finding]:
    """``sidecarkit repair``: list, and with ``apply`` restart, against ``target``."""
    live = discovering.connect(target)
    configuration = live.webhook_configuration()
    if configuration is None:
        raise errors.ConfigError(
            f"no MutatingWebhookConfiguration {discovering.WEBHOOK_CONFIGURATION} on "
            f"{live.describe}: install sidecarkit first (`sidecarkit install`); "
            "a repair restarts pods for a webhook that must be there to inject them"
        )
    chosen = config or live.config(namespace=install_namespace) or configs.Config()
    findings = find(
        live,
        config=chosen,
        configuration=configuration,
        kubernetes_version=live.kubelet_version(),
        namespace=namespace,
    )
    for finding in findings:
        say(finding.line())
    if apply:
        restart(live, findings, dry_run=dry_run, interval=interval, say=say)
    return findings
