"""``sidecarkit repair`` against the real API server and controller-manager: pods created
before the webhook existed are found, and restarting their Deployment brings injected pods."""

from __future__ import annotations

import subprocess
import sys

from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Pod

from sidecarkit import discovering, repairing
from sidecarkit.injection import policy
from tests.support import controlplane, webhooks
from tests.support import kube as k

OPT_IN = {policy.INJECT_LABEL: "true"}


def repair(plane: controlplane.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "repair",
            "--kubeconfig",
            str(plane.kubeconfig),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def deployment(name: str) -> dict[str, object]:
    template = k.pod_dict("unused", labels={"app": name})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": template["spec"]},
        },
    }


def pods(kube: Client, namespace: str) -> list[dict[str, object]]:
    return [p.to_dict() for p in kube.list(Pod, namespace=namespace)]


def test_without_the_webhook_installed_repair_says_to_install_it(
    control_plane: controlplane.ControlPlane,
) -> None:
    done = repair(control_plane)

    assert done.returncode == 3
    assert "install sidecarkit first" in done.stderr


def test_pods_created_before_the_webhook_are_found_and_their_deployment_restarted(
    control_plane: controlplane.ControlPlane, kube: Client, tls: webhooks.Tls, probe_namespace: str
) -> None:
    namespace = k.namespace(kube, "before-webhook", labels=OPT_IN)
    kube.create(k.typed(Deployment, deployment("web")), namespace=namespace)
    k.create_pod(kube, namespace, k.pod_dict("bare"))
    k.wait_for("the Deployment's pod", lambda: len(pods(kube, namespace)) == 2, timeout=60)
    assert not any(k.injected(p) for p in pods(kube, namespace))

    with webhooks.process(tls) as (_, port):
        config = k.url_mode(tls, port, name=discovering.WEBHOOK_CONFIGURATION)
        with k.registered(kube, config, probe_namespace=probe_namespace):
            listed = repair(control_plane, "-n", namespace)
            dry = repair(control_plane, "-n", namespace, "--apply", "--dry-run")
            template = kube.get(Deployment, "web", namespace=namespace).to_dict()["spec"][
                "template"
            ]
            applied = repair(control_plane, "-n", namespace, "--apply", "--interval", "0s")

            def an_injected_pod() -> bool:
                return any(k.injected(p) for p in pods(kube, namespace))

            k.wait_for(
                "a new, injected pod from the restarted Deployment", an_injected_pod, timeout=60
            )

    assert listed.returncode == 0, listed.stderr
    lines = sorted(listed.stdout.splitlines())
    assert len(lines) == 2, lines
    assert (
        lines[0]
        == f"{namespace}/bare: missing sidecars (no restartable owner); a bare pod: delete and recreate it"
    )
    assert lines[1].startswith(f"{namespace}/web-")
    assert lines[1].endswith("missing sidecars (Deployment/web)")
    assert dry.stdout.splitlines()[-1] == f"restarted Deployment {namespace}/web (dry run)"
    assert repairing.RESTARTED_AT not in (template["metadata"].get("annotations") or {})
    assert applied.stdout.splitlines()[-1] == f"restarted Deployment {namespace}/web"
    restarted = kube.get(Deployment, "web", namespace=namespace).to_dict()["spec"]["template"]
    assert repairing.RESTARTED_AT in restarted["metadata"]["annotations"]


def test_a_cluster_where_every_pod_is_injected_needs_no_repair(
    control_plane: controlplane.ControlPlane, kube: Client, tls: webhooks.Tls, probe_namespace: str
) -> None:
    namespace = k.namespace(kube, "all-good", labels=OPT_IN)
    with webhooks.process(tls) as (_, port):
        config = k.url_mode(tls, port, name=discovering.WEBHOOK_CONFIGURATION)
        with k.registered(kube, config, probe_namespace=probe_namespace):
            k.create_pod(kube, namespace, k.pod_dict("app"))

            done = repair(control_plane, "-n", namespace)

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "no pod needs repair" in done.stderr


def test_a_pod_injected_from_an_older_config_is_found_stale(
    control_plane: controlplane.ControlPlane, kube: Client, tls: webhooks.Tls, probe_namespace: str
) -> None:
    namespace = k.namespace(kube, "old-config", labels=OPT_IN)
    install_namespace = k.namespace(kube, "sk-install")
    with webhooks.process(tls) as (_, port):
        config = k.url_mode(tls, port, name=discovering.WEBHOOK_CONFIGURATION)
        with k.registered(kube, config, probe_namespace=probe_namespace):
            k.create_pod(kube, namespace, k.pod_dict("app"))  # logs and metrics, the built-ins
            kube.create(
                ConfigMap(
                    metadata=ObjectMeta(name=discovering.CONFIG_MAP, namespace=install_namespace),
                    data={discovering.CONFIG_KEY: "mode: native\ndefaultProfiles: [logs]\n"},
                )
            )

            done = repair(control_plane, "-n", namespace, "--webhook-namespace", install_namespace)

    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == f"{namespace}/app: stale sidecars (no restartable owner); a bare pod: delete and recreate it\n"
    )
