"""``sidecarkit install``'s manifests pass the real API server's validation (dry run, strict).

They are sent as server-side apply with ``dryRun=All``, as the raw JSON the command printed (a
typed client model would drop unknown fields before the server could object to them). The
Namespace is created for real, since namespaced objects can only be checked inside an existing
one; nothing else is stored, so the webhook configuration never takes effect.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from ruamel.yaml import YAML

from tests.support import kube as k


def install_output(*args: str) -> list[Any]:
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "install", *args], check=True, capture_output=True
    )
    return [doc for doc in YAML(typ="safe").load_all(done.stdout) if doc]


@pytest.fixture
def install_namespace(kube: Client) -> Iterator[str]:
    name = k.unique("sidecarkit-system")
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    kube.delete(Namespace, name)


@pytest.mark.parametrize(
    "args", [(), ("--namespace-lookup", "--replicas", "3")], ids=["default", "namespace-lookup"]
)
def test_install_output_passes_server_side_validation(
    kube: Client, install_namespace: str, args: tuple[str, ...]
) -> None:
    objects = install_output("--namespace", install_namespace, *args)

    for obj in objects:
        if obj["kind"] != "Namespace":
            k.apply_dry_run(kube, obj)

    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "MutatingWebhookConfiguration"}


def test_the_validation_is_strict_enough_to_catch_an_unknown_field(
    kube: Client, install_namespace: str
) -> None:
    objects = install_output("--namespace", install_namespace)
    config = copy.deepcopy(next(o for o in objects if o["kind"] == "MutatingWebhookConfiguration"))
    config["webhooks"][0]["failurePolicyy"] = "Fail"

    with pytest.raises(ApiError) as caught:
        k.apply_dry_run(kube, config)

    assert "failurePolicyy" in str(caught.value.status.message)
