"""``sidecarkit explain --cluster`` against the real API server: live pods, the installed
configuration, and a cluster where sidecarkit is not installed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from lightkube import Client

from sidecarkit import discovering
from sidecarkit.injection import policy
from tests.support import controlplane, webhooks
from tests.support import kube as k

OPT_IN = {policy.INJECT_LABEL: "true"}


def explain(plane: controlplane.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "explain",
            "--cluster",
            "--kubeconfig",
            str(plane.kubeconfig),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_without_sidecarkit_installed_the_explanation_says_so(
    control_plane: controlplane.ControlPlane, kube: Client
) -> None:
    namespace = k.namespace(kube, "uninstalled", labels=OPT_IN)
    k.create_pod(kube, namespace, k.pod_dict("app"))

    done = explain(control_plane, "app", "-n", namespace)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"no MutatingWebhookConfiguration {discovering.WEBHOOK_CONFIGURATION} on https://127.0.0.1:"
    )
    assert "injector: injected" in done.stdout  # what a default install would have done


@pytest.fixture(scope="module")
def installed(kube: Client, tls: webhooks.Tls, probe_namespace: str) -> Iterator[int]:
    """The webhook registered under the name ``sidecarkit install`` gives it."""
    with webhooks.process(tls) as (_, port):
        config = k.url_mode(tls, port, name=discovering.WEBHOOK_CONFIGURATION)
        with k.registered(kube, config, probe_namespace=probe_namespace):
            yield port


def test_an_injected_live_pod_is_explained_as_up_to_date(
    control_plane: controlplane.ControlPlane, kube: Client, installed: int
) -> None:
    namespace = k.namespace(kube, "live", labels=OPT_IN)
    k.create_pod(kube, namespace, k.pod_dict("app"))

    done = explain(control_plane, "app", "-n", namespace)

    assert done.returncode == 0, done.stderr
    assert "no MutatingWebhookConfiguration" not in done.stdout
    assert "  webhook namespace.sidecarkit.io: called" in done.stdout
    assert "  injector: up-to-date:" in done.stdout


def test_a_live_pod_in_a_namespace_that_opted_out_is_explained_by_the_selector(
    control_plane: controlplane.ControlPlane, kube: Client, installed: int
) -> None:
    namespace = k.namespace(kube, "opted-out", labels={policy.INJECT_LABEL: "false"})
    k.create_pod(kube, namespace, k.pod_dict("app", labels=OPT_IN))

    done = explain(control_plane, "app", "-n", namespace)

    assert done.returncode == 0, done.stderr
    assert (
        "  webhook object.sidecarkit.io: not called: namespaceSelector: sidecarkit.io/inject NotIn ['true', 'false'] fails: sidecarkit.io/inject=false"
        in done.stdout
    )
    assert "  result: created as written; no sidecarkit webhook sees these pods" in done.stdout


def test_a_pod_that_does_not_exist_is_named_with_the_fix(
    control_plane: controlplane.ControlPlane, kube: Client
) -> None:
    namespace = k.namespace(kube, "empty")

    done = explain(control_plane, "ghost", "-n", namespace)

    assert done.returncode == 2
    assert f"no pod ghost in namespace {namespace}" in done.stderr
    assert "-n NAMESPACE" in done.stderr
