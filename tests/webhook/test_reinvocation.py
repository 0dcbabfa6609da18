"""``reinvocationPolicy: IfNeeded`` as the API server does it: call the webhook, let another
webhook change the pod, call it again with the changed pod."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from tests.support import webhooks

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-", "labels": {"sidecarkit.io/inject": "true"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def _admit(client: webhooks.Client, pod: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    ops = webhooks.patch_of(client.review(webhooks.review_for(pod)))
    return jsonpatch.apply_patch(pod, ops), bool(ops)


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def test_a_container_added_by_a_later_webhook_gets_the_app_mounts_and_env(
    client: webhooks.Client,
) -> None:
    injected, changed = _admit(client, POD)
    assert changed
    web = _container(injected, "web")
    assert web.get("volumeMounts") or web.get("env"), "the profiles give app containers nothing"

    # Another webhook, called after ours, appends a container of its own.
    mutated = copy.deepcopy(injected)
    mutated["spec"]["containers"].append({"name": "audit", "image": "auditor:1"})

    reinvoked, changed = _admit(client, mutated)
    assert changed, "the reinvocation answered no patch: the new container got nothing"
    audit = _container(reinvoked, "audit")
    assert audit.get("volumeMounts", []) == web.get("volumeMounts", [])
    assert audit.get("env", []) == web.get("env", [])
    assert _container(reinvoked, "web") == web, "the first container is unchanged"
    assert reinvoked["spec"].get("initContainers") == injected["spec"].get("initContainers")
    assert reinvoked["spec"].get("volumes") == injected["spec"].get("volumes")

    # A further reinvocation with nothing new changes nothing.
    again, changed = _admit(client, reinvoked)
    assert not changed
    assert again == reinvoked


def test_a_reinvocation_with_no_change_by_others_is_a_no_op(client: webhooks.Client) -> None:
    injected, _ = _admit(client, POD)
    _, changed = _admit(client, injected)
    assert not changed


def test_a_network_setup_container_added_later_ends_up_before_the_sidecars(
    client: webhooks.Client,
) -> None:
    injected, _ = _admit(client, POD)
    ours = [c["name"] for c in injected["spec"]["initContainers"]]
    # A mesh injector called after ours appends its network setup to the init containers.
    mutated = copy.deepcopy(injected)
    mutated["spec"]["initContainers"].append({"name": "linkerd-init", "image": "proxy-init"})
    reinvoked, changed = _admit(client, mutated)
    assert changed, "the sidecars stayed before the network setup"
    names = [c["name"] for c in reinvoked["spec"]["initContainers"]]
    assert names == ["linkerd-init", *ours]
    assert _admit(client, reinvoked) == (reinvoked, False)
