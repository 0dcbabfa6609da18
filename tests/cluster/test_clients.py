"""The clients ``sidecarkit.k8s.cluster`` makes work against a real API server, both kinds."""

from __future__ import annotations

import asyncio

from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from sidecarkit.k8s import cluster
from tests.support import controlplane
from tests.support import kube as k


def test_the_async_client_reads_what_the_blocking_one_wrote(
    control_plane: controlplane.ControlPlane, kube: Client
) -> None:
    namespace = k.namespace(kube, "clients")
    kube.create(ConfigMap(metadata=ObjectMeta(name="shared", namespace=namespace), data={"k": "v"}))

    async def read() -> dict[str, str] | None:
        client = cluster.async_client(cluster.Target(kubeconfig=control_plane.kubeconfig))
        try:
            found = await client.get(ConfigMap, "shared", namespace=namespace)
        finally:
            await client.close()
        return found.data

    assert asyncio.run(read()) == {"k": "v"}


def test_a_dry_run_client_stores_nothing(
    control_plane: controlplane.ControlPlane, kube: Client
) -> None:
    namespace = k.namespace(kube, "dry")
    dry = cluster.client(cluster.Target(kubeconfig=control_plane.kubeconfig), dry_run=True)

    dry.create(ConfigMap(metadata=ObjectMeta(name="ghost", namespace=namespace)))

    assert [c.metadata.name for c in kube.list(ConfigMap, namespace=namespace) if c.metadata] == [
        "kube-root-ca.crt"
    ]
