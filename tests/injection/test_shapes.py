"""Wrong-typed pod fields: a clear error naming the field's path, never a TypeError."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from sidecarkit import errors
from sidecarkit.injection import Config, Facts, Mode, inject, uninject


def _deployment(**container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "template": {
                "metadata": {"labels": {"sidecarkit.io/inject": "true"}},
                "spec": {"containers": [{"name": "app", "image": "nginx", **container}]},
            }
        },
    }


WRONG_CONTAINER_FIELDS = [
    ({"volumeMounts": [{"name": "v", "mountPath": []}]}, "containers[0].volumeMounts[0].mountPath"),
    ({"volumeMounts": [{"name": {}, "mountPath": "/x"}]}, "containers[0].volumeMounts[0].name"),
    ({"volumeMounts": "v"}, "containers[0].volumeMounts"),
    ({"volumeMounts": ["v"]}, "containers[0].volumeMounts[0]"),
    ({"env": "x"}, "containers[0].env"),
    ({"env": [{"name": ["A"], "value": "1"}]}, "containers[0].env[0].name"),
    ({"ports": [{"containerPort": []}]}, "containers[0].ports[0].containerPort"),
    ({"ports": [{"containerPort": "80"}]}, "containers[0].ports[0].containerPort"),
    ({"ports": [{"containerPort": 80, "protocol": {}}]}, "containers[0].ports[0].protocol"),
    ({"ports": 80}, "containers[0].ports"),
    ({"command": "run"}, "containers[0].command"),
    ({"command": ["run", 5]}, "containers[0].command[1]"),
    ({"name": ["app"]}, "containers[0].name"),
    ({"restartPolicy": []}, "containers[0].restartPolicy"),
    ({"name": ""}, "containers[0].name"),
    ({"env": [{"name": "A"}, {"name": ""}]}, "containers[0].env[1].name"),
    ({"env": [{"value": "1"}]}, "containers[0].env[0].name"),
    ({"volumeMounts": [{"name": "v"}]}, "containers[0].volumeMounts[0].mountPath"),
    ({"volumeMounts": [{"name": "", "mountPath": "/x"}]}, "containers[0].volumeMounts[0].name"),
    ({"ports": [{"containerPort": True}]}, "containers[0].ports[0].containerPort"),
    ({"ports": [{"containerPort": 80}, "80"]}, "containers[0].ports[1]"),
    ({"command": ["run", None]}, "containers[0].command[1]"),
]


@pytest.mark.parametrize(("fields", "path"), WRONG_CONTAINER_FIELDS)
def test_a_wrong_typed_container_field_is_named_by_its_path(
    fields: dict[str, Any], path: str
) -> None:
    with pytest.raises(errors.ManifestError) as caught:
        inject(_deployment(**fields), Config(), Facts())
    assert f"Deployment/web: spec.template.spec.{path} must be" in str(caught.value)
    assert "fix the manifest" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"containers": 5}, "spec.containers"),
        ({"containers": [{"name": "a"}], "initContainers": [{"name": 1}]}, "initContainers[0]"),
        ({"containers": [{"name": "a"}], "volumes": [{"name": None}]}, "volumes[0].name"),
        ({"containers": [{"name": "a"}], "volumes": {"name": "v"}}, "spec.volumes"),
        ({"containers": [{"name": "a"}], "hostNetwork": "true"}, "spec.hostNetwork"),
        ({"containers": [{"name": "a"}], "restartPolicy": 1}, "spec.restartPolicy"),
        (
            {"containers": [{"name": "a"}], "ephemeralContainers": [{"name": "d", "env": 1}]},
            "ephemeralContainers[0].env",
        ),
    ],
)
def test_a_wrong_typed_pod_field_is_named_by_its_path(spec: dict[str, Any], path: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"sidecarkit.io/inject": "true"}},
        "spec": spec,
    }
    with pytest.raises(errors.ManifestError, match=rf"Pod/p: \S*{re.escape(path)}"):
        inject(pod, Config(), Facts())


@pytest.mark.parametrize("containers", [None, [], {}])
def test_a_pod_without_containers_is_refused_with_the_path(containers: Any) -> None:
    deployment = _deployment()
    deployment["spec"]["template"]["spec"]["containers"] = containers
    with pytest.raises(errors.ManifestError, match=r"spec\.template\.spec\.containers must"):
        inject(deployment, Config(), Facts())


@pytest.mark.parametrize(("fields", "path"), WRONG_CONTAINER_FIELDS)
def test_a_wrong_typed_field_in_a_later_container_is_named_by_its_path(
    fields: dict[str, Any], path: str
) -> None:
    deployment = _deployment(env=[{"name": "A", "value": "1"}], ports=[{"containerPort": 80}])
    spec = deployment["spec"]["template"]["spec"]
    spec["containers"].append({"name": "second", "image": "nginx", **fields})
    spec["initContainers"] = [{"name": "setup", "image": "busybox", "command": ["true"]}]
    spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    with pytest.raises(errors.ManifestError) as caught:
        inject(deployment, Config(), Facts())
    later = path.replace("containers[0]", "containers[1]")
    assert f"Deployment/web: spec.template.spec.{later} must be" in str(caught.value)


def test_a_pod_that_does_not_opt_in_passes_through_whatever_its_shape() -> None:
    deployment = _deployment(env="x")
    deployment["spec"]["template"]["metadata"]["labels"] = {}
    new, report = inject(deployment, Config(), Facts())
    assert new is deployment
    assert not report.decisions[0].changed


@pytest.mark.parametrize(("fields", "path"), WRONG_CONTAINER_FIELDS[:4])
def test_uninject_names_wrong_typed_fields_too(fields: dict[str, Any], path: str) -> None:
    injected, _ = inject(_deployment(), Config(mode=Mode.NATIVE), Facts())
    broken = copy.deepcopy(injected)
    broken["spec"]["template"]["spec"]["containers"][0].update(fields)
    with pytest.raises(errors.ManifestError, match="must be"):
        uninject(broken)
