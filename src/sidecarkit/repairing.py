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
import threading
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
from sidecarkit.k8s import leasing
from sidecarkit.webhook import selecting

__all__ = ["Finding", "find", "restart", "run", "watch"]

RESTARTED_AT: Final = "kubectl.kubernetes.io/restartedAt"
LEASE: Final = "sidecarkit-repair"
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
    pending: bool = False
    """The owner was restarted after this pod was created: its rollout is already replacing
    the pod, so it is not restarted again (a watch never restarts one rollout twice)."""

    def line(self) -> str:
        owner = f"{self.owner[0]}/{self.owner[1]}" if self.owner else "no restartable owner"
        advice = f"; {self.advice}" if self.advice else ""
        return f"{self.namespace}/{self.pod}: {self.problem} sidecars ({owner}){advice}"


def _at(stamp: object) -> datetime.datetime | None:
    """An RFC 3339 time as kubectl and the API server write them, or None."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _owner(live: discovering.Cluster, pod: Json) -> tuple[tuple[str, str] | None, str, bool]:
    namespace = pod["metadata"]["namespace"]
    refs = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")]
    if not refs:
        return None, "a bare pod: delete and recreate it", False
    kind, name = refs[0]["kind"], refs[0]["name"]
    if kind == "ReplicaSet":
        try:
            replica_set = live.client.get(ReplicaSet, name, namespace=namespace).to_dict()
        except ApiError:
            return None, f"its ReplicaSet {name} could not be read", False
        parents = [
            r for r in replica_set["metadata"].get("ownerReferences") or [] if r.get("controller")
        ]
        if not parents:
            return None, f"ReplicaSet {name} has no Deployment: delete the pod to replace it", False
        kind, name = parents[0]["kind"], parents[0]["name"]
    if kind not in RESTARTABLE:
        return (
            None,
            f"owned by {kind}/{name}, which has no rollout: delete the pod when it may go",
            False,
        )
    try:
        workload = live.client.get(RESTARTABLE[kind], name, namespace=namespace).to_dict()
    except ApiError:
        return (kind, name), "", False
    template = (workload.get("spec") or {}).get("template") or {}
    restarted = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
    created = pod["metadata"].get("creationTimestamp")
    restarted_at, created_at = _at(restarted), _at(created)
    if restarted_at is not None and created_at is not None and restarted_at >= created_at:
        return (kind, name), f"restarted at {restarted}: its rollout will replace the pod", True
    return (kind, name), "", False


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
        owner, advice, pending = _owner(live, pod)
        findings.append(
            Finding(metadata["namespace"], metadata["name"], problem, owner, advice, pending)
        )
    return findings


def restart(
    live: discovering.Cluster,
    findings: list[Finding],
    *,
    dry_run: bool,
    interval: float,
    say: Callable[[str], None],
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """Restart each owner once, ``interval`` seconds apart; answer how many were restarted."""
    owners = sorted(
        {(f.namespace, *f.owner) for f in findings if f.owner is not None and not f.pending}
    )
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


def _pass(
    live: discovering.Cluster,
    *,
    namespace: str | None,
    config: configs.Config | None,
    apply: bool,
    dry_run: bool,
    interval: float,
    install_namespace: str,
    say: Callable[[str], None],
    sleep: Callable[[float], object] = time.sleep,
) -> list[Finding]:
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
        restart(live, findings, dry_run=dry_run, interval=interval, say=say, sleep=sleep)
    return findings


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
    return _pass(
        discovering.connect(target),
        namespace=namespace,
        config=config,
        apply=apply,
        dry_run=dry_run,
        interval=interval,
        install_namespace=install_namespace,
        say=say,
    )


def watch(
    target: clusters.Target,
    *,
    namespace: str | None,
    config: configs.Config | None,
    dry_run: bool,
    interval: float,
    install_namespace: str,
    identity: str,
    period: float,
    lease_duration: int,
    stop: threading.Event,
    say: Callable[[str], None],
) -> None:
    """``repair --watch``: a pass every ``period`` seconds while holding the Lease.

    Replicas share the Lease ``sidecarkit-repair`` in ``install_namespace``; only its holder
    restarts anything, so running two for availability never doubles a restart. A pass that
    fails (the API server away, the webhook not installed) is reported and tried again at the
    next period. ``stop`` (set by SIGTERM or SIGINT) ends the loop; a leader releases the
    Lease on the way out.
    """
    live = discovering.connect(target)
    elector = leasing.Elector(
        live.client, LEASE, install_namespace, identity, duration=lease_duration
    )
    leading = False
    next_pass = 0.0
    try:
        while not stop.is_set():
            try:
                now_leading = live.call(
                    f"take or renew Lease {install_namespace}/{LEASE}",
                    elector.try_lead,
                    fix="ask for the RBAC to get, create and update leases there",
                )
            except errors.ConfigError as exc:
                say(f"repair: {exc}")
                now_leading = False
            if now_leading != leading:
                say(f"{'leading' if now_leading else 'following'} as {identity}")
                leading = now_leading
            if leading and time.monotonic() >= next_pass:
                next_pass = time.monotonic() + period
                try:
                    _pass(
                        live,
                        namespace=namespace,
                        config=config,
                        apply=True,
                        dry_run=dry_run,
                        interval=interval,
                        install_namespace=install_namespace,
                        say=say,
                        sleep=stop.wait,
                    )
                except errors.SidecarkitError as exc:
                    say(f"repair: {exc}")
            stop.wait(max(lease_duration / 3, 0.2))
    finally:
        if leading:
            elector.release()
            say(f"released Lease {install_namespace}/{LEASE}")
