"""The built-in ``proxy`` profile through the real API server: the webhook attaches the proxy
sidecar in explicit-port mode, and the API server accepts the pod it made."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from sidecarkit.injection import policy
from tests.support import kube as k
from tests.support import webhooks


@pytest.fixture(scope="module")
def webhook(kube: Client, tls: webhooks.Tls, probe_namespace: str) -> Iterator[int]:
    """A ``sidecarkit webhook`` process, registered with failurePolicy Fail; yields its port."""
    with webhooks.process(tls) as (_, port):
        config = k.url_mode(tls, port, name=k.unique("sidecarkit"))
        with k.registered(kube, config, probe_namespace=probe_namespace):
            yield port


def test_a_pod_asking_for_the_proxy_profile_gets_the_proxy_sidecar_from_the_webhook(
    kube: Client, webhook: int
) -> None:
    namespace = k.namespace(kube, "proxy-profile")
    annotations = {
        "sidecarkit.io/profiles": "proxy",
        "sidecarkit.io/proxy.port": "8080",
        "sidecarkit.io/proxy.config-map": "app-proxy",
    }
    pod = k.pod_dict("app", labels={policy.INJECT_LABEL: "true"}, annotations=annotations)
    k.create_pod(kube, namespace, pod)
    stored = kube.get(Pod, "app", namespace=namespace).to_dict()
    (sidecar,) = stored["spec"]["initContainers"]
    assert sidecar["name"] == "sidecarkit-proxy"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["sidecarkit", "agent", "proxy"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["SIDECARKIT_PROXY_APP"] == "127.0.0.1:8080"
    assert env["SIDECARKIT_PROXY_INBOUND"] == "0.0.0.0:15006"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert not sidecar["securityContext"].get("privileged")
    volumes = {v["name"]: v for v in stored["spec"]["volumes"]}
    assert volumes["sidecarkit-proxy-config"]["configMap"]["name"] == "app-proxy"
