"""``sidecarkit install --ca-dir``: the webhook and the workload CA together pass the real API
server's validation (server-side apply, ``dryRun=All``, strict), as ``install``'s own objects
do in ``test_install``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from ruamel.yaml import YAML

from tests.security.support import init_ca
from tests.support import kube as k


@pytest.fixture
def namespace(kube: Client) -> Iterator[str]:
    name = k.unique("sidecarkit-ca")
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    kube.delete(Namespace, name)


def test_the_webhook_and_the_ca_pass_server_side_validation(
    kube: Client, namespace: str, tmp_path: Path
) -> None:
    ca = init_ca(tmp_path / "ca")
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "install", "--namespace", namespace,
         "--ca-dir", str(ca), "--ca-namespace", namespace, "--ca-bundle-namespace", namespace],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    objects = [doc for doc in YAML(typ="safe").load_all(done.stdout) if doc]
    checked = []
    for obj in objects:
        if obj["kind"] != "Namespace":
            k.apply_dry_run(kube, obj)
            checked.append((obj["kind"], obj["metadata"]["name"]))
    assert ("Deployment", "sidecarkit-ca") in checked
    assert ("Secret", "sidecarkit-ca") in checked
    assert ("Service", "sidecarkit-ca") in checked
    assert ("ConfigMap", "sidecarkit-ca-bundle") in checked
    assert ("Deployment", "sidecarkit-webhook") in checked
