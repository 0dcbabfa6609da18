"""``sidecarkit ca serve --token-review`` against a real kube-apiserver's TokenReview API.

The tokens are real: made by the API server's TokenRequest API for a ServiceAccount, as the
kubelet makes a pod's projected token.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lightkube import Client, codecs
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Secret, ServiceAccount, ServiceAccountToken

from sidecarkit.k8s import cluster
from tests.security.support import init_ca, key_and_csr, post_csr, running_ca
from tests.support import controlplane
from tests.support import kube as k


def _token(kube: Client, namespace: str, account: str, audience: str) -> str:
    request = ServiceAccountToken(
        metadata=ObjectMeta(namespace=namespace),
        spec=TokenRequestSpec(audiences=[audience], expirationSeconds=600),
    )
    answer = kube.create(request, account, namespace=namespace)
    assert answer.status is not None
    return str(answer.status.token)


def test_a_service_account_token_gets_the_identity_the_api_server_vouches_for(
    kube: Client, control_plane: controlplane.ControlPlane, tmp_path: Path
) -> None:
    namespace = k.namespace(kube, "ca")
    kube.create(ServiceAccount(metadata=ObjectMeta(name="web", namespace=namespace)))
    right = _token(kube, namespace, "web", "sidecarkit-ca")
    wrong_audience = _token(kube, namespace, "web", "somebody-else")
    directory = init_ca(tmp_path / "ca")
    with running_ca(
        directory, "--token-review", "--kubeconfig", str(control_plane.kubeconfig), tokens=False
    ) as ca:
        _, csr = key_and_csr()
        status, answer = post_csr(ca, csr, right)
        refused, refusal = post_csr(ca, csr, wrong_audience)
        forged, forgery = post_csr(ca, csr, right[:-4] + "AAAA")
        log = ca.stop()
    assert status == 200, answer
    assert answer["spiffe_id"] == f"spiffe://cluster.local/ns/{namespace}/sa/web"
    assert refused == 401
    assert "did not accept the token" in refusal["error"] or "audience" in refusal["error"]
    assert forged == 401
    assert "did not accept the token" in forgery["error"]
    assert right not in log
    assert wrong_audience not in log
    assert log.count("issued spiffe://") == 1


def test_the_objects_ca_install_prints_are_accepted_by_the_api_server(
    kube: Client, control_plane: controlplane.ControlPlane, tmp_path: Path
) -> None:
    directory = init_ca(tmp_path / "ca")
    home, shop = k.namespace(kube, "ca-home"), k.namespace(kube, "ca-shop")
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "ca", "install", "--dir", str(directory),
         "--namespace", home, "--bundle-namespace", shop],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    client = cluster.client(cluster.Target(kubeconfig=control_plane.kubeconfig))
    for obj in codecs.load_all_yaml(done.stdout):
        client.create(obj)
    secret = kube.get(Secret, "sidecarkit-ca", namespace=home)
    assert secret.data is not None
    assert set(secret.data) == {"root.crt", "intermediate.crt", "intermediate.key"}
    bundle = kube.get(ConfigMap, "sidecarkit-ca-bundle", namespace=shop)
    assert bundle.data is not None
    assert bundle.data["root.crt"] == (directory / "root.crt").read_text()
