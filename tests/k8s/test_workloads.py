"""Workload kinds are matched on API group and kind, never on the kind's name alone."""

from __future__ import annotations

from typing import Any

import pytest

from sidecarkit import configfiles, errors
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


def test_a_config_adds_a_custom_kind_by_group_kind_and_path() -> None:
    config = configfiles.parse_config(
        "workloads:\n  - {group: example.com, kind: WebApp, path: spec.podTemplate}\n",
        source="config.yaml",
    )
    webapp = {
        "apiVersion": "example.com/v2",
        "kind": "WebApp",
        "metadata": {"name": "shop"},
        "spec": {
            "podTemplate": {
                "metadata": {"labels": {"sidecarkit.io/inject": "true"}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            }
        },
    }
    new, report = inject(webapp, config, Facts())
    assert report.decisions[0].codes[-1] == Code.INJECTED
    assert new["spec"]["podTemplate"]["spec"]["initContainers"]
    other = dict(webapp, apiVersion="other.io/v1")
    assert inject(other, config, Facts())[1].decisions[0].codes == (Code.UNSUPPORTED_KIND,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workloads: {kind: X}\n", "workloads: must be a list"),
        ("workloads:\n  - {kind: X}\n", r"workloads\[0\]\.path: must be a non-empty string"),
        ("workloads:\n  - {kind: X, path: spec..t}\n", "keys joined by dots"),
        ("workloads:\n  - {kind: X, path: s, api: v}\n", "unknown key"),
    ],
)
def test_a_bad_workloads_entry_names_its_place(text: str, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        configfiles.parse_config(text, source="config.yaml")
