"""``sidecarkit inject --cluster``: the offline answer from what the cluster says, the webhook's.

The CLI runs as a process against the session's real API server, with its admin kubeconfig.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Node

from sidecarkit import discovering
from sidecarkit.injection import policy
from sidecarkit.webhook import installing
from tests.support import controlplane, webhooks
from tests.support import kube as k

OPT_IN = {policy.INJECT_LABEL: "true"}


def sidecarkit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecarkit", *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def inject_cluster(plane: controlplane.ControlPlane, manifest: str, *args: str) -> str:
    done = sidecarkit(
        "inject",
        "--cluster",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--report",
        "none",
        *args,
        stdin=manifest,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def pod_yaml(namespace: str, name: str = "app", labels: dict[str, str] | None = None) -> str:
    pod = k.pod_dict(name, labels=labels)
    pod["metadata"]["namespace"] = namespace
    return json.dumps(pod) + "\n"


def loaded(text: str) -> dict[str, Any]:
    from ruamel.yaml import YAML  # noqa: PLC0415

    data = YAML(typ="safe").load(text)
    assert isinstance(data, dict)
    return data


def test_the_namespace_labels_come_from_the_cluster(
    control_plane: controlplane.ControlPlane, kube: Client
) -> None:
    opted_in = k.namespace(kube, "labelled", labels=OPT_IN)
    plain = k.namespace(kube, "unlabelled")

    injected = loaded(inject_cluster(control_plane, pod_yaml(opted_in)))
    untouched = inject_cluster(control_plane, pod_yaml(plain))

    assert k.injected(injected)
    assert untouched == pod_yaml(plain)


def test_a_namespace_created_in_the_same_stream_lends_its_labels(
    control_plane: controlplane.ControlPlane,
) -> None:
    name = k.unique("not-yet")
    stream = (
        json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": OPT_IN}}
        )
        + "\n---\n"
        + pod_yaml(name)
    )

    out = inject_cluster(control_plane, stream)

    assert "sidecarkit-logs" in out.split("---", 1)[1]


@pytest.fixture(scope="module")
def webhook(kube: Client, tls: webhooks.Tls, probe_namespace: str) -> Iterator[int]:
    with (
        webhooks.process(tls) as (_, port),
        k.registered(
            kube,
            k.url_mode(tls, port, name=k.unique("sidecarkit")),
            probe_namespace=probe_namespace,
        ),
    ):
        yield port


def test_the_offline_answer_is_the_one_the_webhook_gives(
    control_plane: controlplane.ControlPlane, kube: Client, webhook: int
) -> None:
    namespace = k.namespace(kube, "same-answer", labels=OPT_IN)
    manifest = pod_yaml(namespace, labels={"team": "a"})

    offline = loaded(inject_cluster(control_plane, manifest))
    admitted = k.create_pod(kube, namespace, k.pod_dict("app", labels={"team": "a"}))

    # The record of what injection had to create differs on purpose: before the webhook, the
    # ServiceAccount plugin already gave the pod volumes and the app a mount, which the offline
    # copy of the manifest lacks. Everything else, the content hash included, must agree.
    records = [
        json.loads(pod["metadata"]["annotations"][policy.STATUS_ANNOTATION])
        for pod in (offline, admitted)
    ]
    for record in records:
        record.pop("created")
    assert records[0] == records[1]
    assert k.names_of_containers(offline) == k.names_of_containers(admitted)


@pytest.fixture
def install_namespace(kube: Client) -> str:
    return k.namespace(kube, "sk-install")


def test_the_installed_config_map_is_the_config(
    control_plane: controlplane.ControlPlane, kube: Client, install_namespace: str
) -> None:
    config = "apiVersion: sidecarkit.io/v1alpha1\nkind: InjectionConfig\nmode: native\ndefaultProfiles: [logs]\n"
    kube.create(
        ConfigMap(
            metadata=ObjectMeta(name=discovering.CONFIG_MAP, namespace=install_namespace),
            data={discovering.CONFIG_KEY: config},
        )
    )
    namespace = k.namespace(kube, "config-user", labels=OPT_IN)

    out = loaded(
        inject_cluster(control_plane, pod_yaml(namespace), "--webhook-namespace", install_namespace)
    )

    assert "sidecarkit-logs" in k.names_of_containers(out)
    assert "sidecarkit-metrics" not in k.names_of_containers(out)


def test_a_broken_installed_config_is_named_by_its_config_map(
    control_plane: controlplane.ControlPlane, kube: Client, install_namespace: str
) -> None:
    kube.create(
        ConfigMap(
            metadata=ObjectMeta(name=discovering.CONFIG_MAP, namespace=install_namespace),
            data={discovering.CONFIG_KEY: "defaultProfiles: [nope]\n"},
        )
    )
    namespace = k.namespace(kube, "config-user", labels=OPT_IN)

    done = sidecarkit(
        "inject",
        "--cluster",
        "--kubeconfig",
        str(control_plane.kubeconfig),
        "--webhook-namespace",
        install_namespace,
        stdin=pod_yaml(namespace),
    )

    assert done.returncode == 3
    assert f"ConfigMap {install_namespace}/{discovering.CONFIG_MAP}" in done.stderr
    assert done.stdout == ""


def test_the_oldest_kubelet_settles_mode_auto(
    control_plane: controlplane.ControlPlane, kube: Client
) -> None:
    namespace = k.namespace(kube, "auto-mode", labels=OPT_IN)
    name = k.unique("old-node")
    kube.create(Node(metadata=ObjectMeta(name=name)))
    try:
        kube.patch(Node.Status, name, {"status": {"nodeInfo": {"kubeletVersion": "v1.28.9"}}})

        out = loaded(inject_cluster(control_plane, pod_yaml(namespace), "--mode", "auto"))
    finally:
        kube.delete(Node, name)

    init_names = [c["name"] for c in out["spec"].get("initContainers", [])]
    assert "sidecarkit-logs" not in init_names  # legacy: before native sidecars (1.29)
    assert "sidecarkit-logs" in k.names_of_containers(out)


def test_the_config_map_name_is_the_one_install_writes() -> None:
    assert discovering.CONFIG_MAP == installing.CONFIG_MAP


def test_an_unreachable_cluster_names_the_server_and_context(tmp_path: Path) -> None:
    port = webhooks.free_port()
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "gone",
                "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "me", "user": {"token": "x"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "me"}}],
            }
        )
    )

    done = sidecarkit(
        "inject", "--cluster", "--kubeconfig", str(kubeconfig), stdin=pod_yaml("default")
    )

    assert done.returncode == 3
    assert f"https://127.0.0.1:{port} (context gone)" in done.stderr
    assert "--context" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--kubeconfig", "x"), "--kubeconfig and --context go with --cluster"),
        (("--cluster", "--facts", "f.yaml"), "--facts and --cluster"),
    ],
)
def test_cluster_options_that_do_not_go_together_are_refused(
    args: tuple[str, ...], expected: str
) -> None:
    done = sidecarkit("inject", *args, stdin=pod_yaml("default"))

    assert done.returncode == 2
    assert expected in done.stderr
