"""Workload kinds are matched on API group and kind, never on the kind's name alone."""

from __future__ import annotations

from typing import Any

import pytest

from sidecarkit.injection import Code, Config, Facts, inject
from sidecarkit.k8s import workloads


def _workload(api_version: str, kind: str) -> dict[str, Any]:
    template = {
        "metadata": {"labels": {"sidecarkit.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }
    spec: dict[str, Any] = {"template": template}
    if kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}, "spec": spec}


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("example.com/v1", "Deployment"),
        ("example.com/v1", "Pod"),
        ("batch.example.io/v1", "Job"),
        ("v1", "Deployment"),
        ("apps/v1", "Job"),
    ],
)
def test_a_custom_resource_named_like_a_workload_passes_through(
    api_version: str, kind: str
) -> None:
    obj = _workload(api_version, kind)
    new, report = inject(obj, Config(), Facts())
    assert new is obj
    assert report.decisions[0].codes == (Code.UNSUPPORTED_KIND,)
    assert f"{api_version} {kind} has no pod template" in report.decisions[0].reasons[0].message


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("apps/v1", "Deployment"),
        ("extensions/v1beta1", "Deployment"),
        ("apps/v1beta2", "DaemonSet"),
        ("batch/v1beta1", "CronJob"),
        ("batch/v1", "Job"),
        ("v1", "ReplicationController"),
        ("argoproj.io/v1alpha1", "Rollout"),
        ("apps.openshift.io/v1", "DeploymentConfig"),
        ("v1", "DeploymentConfig"),
    ],
)
def test_every_version_of_a_known_group_and_kind_is_injected(api_version: str, kind: str) -> None:
    _, report = inject(_workload(api_version, kind), Config(), Facts())
    assert report.decisions[0].codes[-1] == Code.INJECTED


def test_a_typed_list_is_walked_item_by_item() -> None:
    items = [_workload("apps/v1", "Deployment"), _workload("example.com/v1", "Deployment")]
    deployments = {"apiVersion": "apps/v1", "kind": "DeploymentList", "items": items}
    _, report = inject(deployments, Config(), Facts())
    assert [d.location for d in report.decisions] == [
        "document 1, items[0]",
        "document 1, items[1]",
    ]
    assert [d.codes[-1] for d in report.decisions] == [Code.INJECTED, Code.UNSUPPORTED_KIND]


def test_the_group_of_an_api_version() -> None:
    assert workloads.group_of("apps/v1") == "apps"
    assert workloads.group_of("v1") == ""
    assert workloads.group_of("rbac.authorization.k8s.io/v1") == "rbac.authorization.k8s.io"
    assert workloads.group_of(None) is None
