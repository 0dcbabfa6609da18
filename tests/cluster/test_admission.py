"""Admission end to end: the real kube-apiserver calls ``sidecarkit webhook`` over HTTPS.

The webhook runs as a local process with a certificate from ``sidecarkit certs``; the
MutatingWebhookConfiguration is ``sidecarkit install``'s, in URL mode (tests/support/kube.py).
So the selectors, matchConditions, failure policy and dry-run handling under test are the API
server's own, not our reading of them.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterator

import pytest
from lightkube import ApiError, Client
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from sidecarkit.injection import policy
from sidecarkit.webhook import selecting
from tests.support import kube as k
from tests.support import webhooks

OPT_IN = {policy.INJECT_LABEL: "true"}
OPT_OUT = {policy.INJECT_LABEL: "false"}


@pytest.fixture(scope="module")
def webhook(kube: Client, tls: webhooks.Tls, probe_namespace: str) -> Iterator[int]:
    """A ``sidecarkit webhook`` process, registered with failurePolicy Fail; yields its port."""
    with webhooks.process(tls) as (_, port):
        config = k.url_mode(tls, port, name=k.unique("sidecarkit"))
        with k.registered(kube, config, probe_namespace=probe_namespace):
            yield port


def admissions(port: int, tls: webhooks.Tls) -> Counter[str]:
    """The webhook's own count of reviews answered, by ``decision/reason``, from /metrics."""
    client = webhooks.Client(port, tls)
    try:
        status, body = client.request("GET", "/metrics")
    finally:
        client.close()
    assert status == 200
    found = re.findall(
        r'^sidecarkit_webhook_admissions_total\{decision="([^"]+)",reason="([^"]+)"\} (\d+)$',
        body.decode(),
        re.M,
    )
    return Counter({f"{decision}/{reason}": int(n) for decision, reason, n in found})


def since(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {key: n for key, n in (after - before).items() if n}


def test_an_opted_in_pod_is_injected_through_the_api_server(kube: Client, webhook: int) -> None:
    namespace = k.namespace(kube, "opted-in-pod")

    pod = k.create_pod(kube, namespace, k.pod_dict("app", labels=OPT_IN))

    assert k.injected(pod)
    assert len(k.names_of_containers(pod)) > 1
    stored = kube.get(Pod, "app", namespace=namespace).to_dict()
    assert k.names_of_containers(stored) == k.names_of_containers(pod)


def test_the_reinvocation_after_the_service_account_plugin_finds_the_pod_up_to_date(
    kube: Client, webhook: int, tls: webhooks.Tls
) -> None:
    """The ServiceAccount plugin mounts its token into the sidecars the webhook added, so the
    API server calls the webhook again (reinvocationPolicy IfNeeded); the second answer must
    leave the pod, mounts included, as it is."""
    namespace = k.namespace(kube, "reinvoked", labels=OPT_IN)
    before = admissions(webhook, tls)

    pod = k.create_pod(kube, namespace, k.pod_dict("app"))

    assert since(before, admissions(webhook, tls)) == {
        "patched/injected": 1,
        "allowed/up-to-date": 1,
    }
    token = next(
        v["name"] for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")
    )
    for container in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
        assert token in [m["name"] for m in container["volumeMounts"]], container["name"]
    assert k.injected(pod)


def test_a_pod_in_an_opted_in_namespace_is_injected(kube: Client, webhook: int) -> None:
    namespace = k.namespace(kube, "opted-in-ns", labels=OPT_IN)

    pod = k.create_pod(kube, namespace, k.pod_dict("app"))

    assert k.injected(pod)


def test_pods_and_namespaces_not_opted_in_never_reach_the_webhook(
    kube: Client, webhook: int, tls: webhooks.Tls
) -> None:
    plain = k.namespace(kube, "plain")
    opted_out = k.namespace(kube, "opted-out", labels=OPT_OUT)
    opted_in = k.namespace(kube, "opted-in", labels=OPT_IN)
    before = admissions(webhook, tls)

    created = [
        k.create_pod(kube, plain, k.pod_dict("unlabelled")),
        k.create_pod(kube, plain, k.pod_dict("labelled-false", labels=OPT_OUT)),
        k.create_pod(kube, opted_out, k.pod_dict("in-opted-out-namespace")),
        k.create_pod(
            kube, opted_out, k.pod_dict("labelled-true-in-opted-out-namespace", labels=OPT_IN)
        ),
        k.create_pod(kube, opted_in, k.pod_dict("opting-out", labels=OPT_OUT)),
    ]

    assert not any(k.injected(pod) for pod in created)
    assert since(before, admissions(webhook, tls)) == {}
    k.create_pod(kube, opted_in, k.pod_dict("opted-in"))
    assert since(before, admissions(webhook, tls))  # the count does move for a pod that opted in


def test_the_api_server_evaluates_match_conditions_and_skips_mirror_pods(
    kube: Client, webhook: int, tls: webhooks.Tls
) -> None:
    namespace = k.namespace(kube, "mirror", labels=OPT_IN)
    before = admissions(webhook, tls)
    mirror = k.pod_dict("static-web", annotations={"kubernetes.io/config.mirror": "abc123"})
    mirror["spec"]["nodeName"] = "node-a"  # the API server requires it of a mirror pod

    pod = k.create_pod(kube, namespace, mirror, dry_run=True)

    assert not k.injected(pod)
    assert since(before, admissions(webhook, tls)) == {}


def test_a_server_side_dry_run_is_injected_and_stores_nothing(kube: Client, webhook: int) -> None:
    namespace = k.namespace(kube, "dry-run", labels=OPT_IN)

    pod = k.create_pod(kube, namespace, k.pod_dict("app"), dry_run=True)

    assert k.injected(pod)
    with pytest.raises(ApiError) as caught:
        kube.get(Pod, "app", namespace=namespace)
    assert caught.value.status.code == 404


def test_a_deployment_s_pods_are_injected_when_its_replica_set_creates_them(
    kube: Client, webhook: int
) -> None:
    namespace = k.namespace(kube, "deployment", labels=OPT_IN)
    template = k.pod_dict("unused", labels={"app": "web"})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]},
        },
    }

    kube.create(k.typed(Deployment, deployment), namespace=namespace)

    pods: list[Pod] = []

    def two_pods() -> bool:
        pods[:] = list(kube.list(Pod, namespace=namespace, labels={"app": "web"}))
        return len(pods) == 2

    k.wait_for("the ReplicaSet's two pods", two_pods, timeout=60)
    stored = kube.get(Deployment, "web", namespace=namespace).to_dict()
    assert not k.injected(stored["spec"]["template"])  # the template is left as written
    for pod in pods:
        as_dict = pod.to_dict()
        assert k.injected(as_dict)
        owners = as_dict["metadata"]["ownerReferences"]
        assert [o["kind"] for o in owners] == ["ReplicaSet"]


def test_a_second_webhook_s_container_makes_the_api_server_ask_again_and_nothing_doubles(
    kube: Client, webhook: int, tls: webhooks.Tls
) -> None:
    """Webhooks run in name order: sidecarkit's configuration, then ``zz-...``, whose injector
    appends a container; with reinvocationPolicy IfNeeded the API server calls sidecarkit again
    on the changed pod, and that answer must keep one copy of each sidecar and give the new
    container the mounts and env app containers get."""
    namespace = k.namespace(kube, "two-injectors", labels={**OPT_IN, "other-injector": "on"})
    with k.another_injector(tls.cert, tls.key, container="other-proxy") as port:
        name = k.unique("zz-other-injector")
        other: dict[str, object] = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "inject.other.example",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/mutate",
                        "caBundle": base64.b64encode(tls.ca.cert).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"other-injector": "on"}},
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "Never",
                }
            ],
        }
        kube.create(k.typed(MutatingWebhookConfiguration, other))
        try:
            k.wait_for(
                "the other injector in force",
                lambda: (
                    "other-proxy"
                    in k.names_of_containers(
                        k.create_pod(kube, namespace, k.pod_dict(k.unique("probe")), dry_run=True)
                    )
                ),
            )
            before = admissions(webhook, tls)

            pod = k.create_pod(kube, namespace, k.pod_dict("app"))
        finally:
            kube.delete(MutatingWebhookConfiguration, name)

    names = k.names_of_containers(pod)
    assert len(names) == len(set(names)), names
    assert "other-proxy" in names
    assert k.injected(pod)
    # Asked again after the other injector's change, sidecarkit gives the new container what app
    # containers get (the mounts and env of its profiles), and nothing else doubles.
    assert since(before, admissions(webhook, tls)) == {
        "patched/injected": 1,
        "patched/reinjected": 1,
    }
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    app_mounts = {m["name"] for m in containers["app"].get("volumeMounts", [])}
    other_mounts = {m["name"] for m in containers["other-proxy"].get("volumeMounts", [])}
    assert app_mounts, "the default profiles mount their volumes into app containers"
    assert app_mounts <= other_mounts, (app_mounts, other_mounts)
    app_env = {e["name"] for e in containers["app"].get("env", [])}
    assert app_env <= {e["name"] for e in containers["other-proxy"].get("env", [])}


LABELS = [{}, OPT_IN, OPT_OUT, {policy.INJECT_LABEL: "maybe"}]


def test_selecting_predicts_which_pods_the_api_server_sends(
    kube: Client, webhook: int, tls: webhooks.Tls
) -> None:
    """``webhook.selecting`` (used to explain decisions) against the API server's own choice,
    over every combination of the opt-in label on namespace and pod."""
    config = k.url_mode(tls, webhook, name="unused")
    compared = []
    for ns_labels in LABELS:
        namespace = k.namespace(kube, "truth", labels=ns_labels)
        for pod_labels in LABELS:
            predicted = any(
                v.sent
                for v in selecting.verdicts(
                    config, namespace=namespace, namespace_labels=ns_labels, pod_labels=pod_labels
                )
            )
            before = admissions(webhook, tls)
            pod = k.pod_dict(k.unique("p"), labels=pod_labels)
            try:
                k.create_pod(kube, namespace, pod, dry_run=True)
            except ApiError as exc:  # the webhook refuses a label value it does not know
                refused = str(exc.status.message)
                assert pod_labels == {policy.INJECT_LABEL: "maybe"}, refused
            called = bool(since(before, admissions(webhook, tls)))
            compared.append((ns_labels, pod_labels, predicted, called))

    assert [c for c in compared if c[2] != c[3]] == []
    assert sum(c[3] for c in compared) == 5  # both sides said yes somewhere: not vacuous
