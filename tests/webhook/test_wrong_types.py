"""Pods with wrong-typed fields, sent to a real ``sidecarkit webhook`` over HTTPS: a 400."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import webhooks

BROKEN: list[tuple[dict[str, Any], str]] = [
    ({"volumeMounts": [{"name": "v", "mountPath": []}]}, "volumeMounts[0].mountPath"),
    ({"env": "x"}, "spec.containers[0].env"),
    ({"ports": [{"containerPort": {}}]}, "ports[0].containerPort"),
    ({"command": ["sh", []]}, "command[1]"),
]


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"sidecarkit.io/inject": "true"}},
        "spec": {"containers": [{"name": "web", "image": "nginx", **container}]},
    }


@pytest.mark.parametrize(("fields", "path"), BROKEN)
def test_a_wrong_typed_field_is_denied_with_400_naming_its_path(
    fields: dict[str, Any], path: str, client: webhooks.Client
) -> None:
    answer = client.review(webhooks.review_for(_pod(fields)))
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert path in response["status"]["message"]


@pytest.mark.parametrize("containers", [None, []])
def test_a_pod_without_containers_is_denied_with_400(
    containers: Any, client: webhooks.Client
) -> None:
    pod = _pod({})
    pod["spec"]["containers"] = containers
    response = client.review(webhooks.review_for(pod))["response"]
    assert response["status"]["code"] == 400
    assert "spec.containers must list at least one container" in response["status"]["message"]
