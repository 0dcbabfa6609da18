"""Label selectors and rules as the API server applies them, on install's configuration."""

from __future__ import annotations

import pytest

from sidecarkit.webhook import installing, selecting

CONFIG = next(
    o
    for o in installing.render(installing.Install(image="x"))
    if o["kind"] == "MutatingWebhookConfiguration"
)
L = "sidecarkit.io/inject"


def sent(namespace: str, ns_labels: dict[str, str], pod_labels: dict[str, str]) -> list[str]:
    found = selecting.verdicts(
        CONFIG, namespace=namespace, namespace_labels=ns_labels, pod_labels=pod_labels
    )
    return [v.webhook for v in found if v.sent]


@pytest.mark.parametrize(
    ("ns_labels", "pod_labels", "expected"),
    [
        ({}, {}, []),
        ({}, {L: "true"}, ["object.sidecarkit.io"]),
        ({}, {L: "false"}, []),
        ({L: "true"}, {}, ["namespace.sidecarkit.io"]),
        ({L: "true"}, {L: "true"}, ["namespace.sidecarkit.io"]),
        ({L: "true"}, {L: "false"}, []),
        ({L: "false"}, {}, []),
        ({L: "false"}, {L: "true"}, []),
        ({L: "maybe"}, {L: "true"}, ["object.sidecarkit.io"]),
    ],
)
def test_install_s_selectors_send_exactly_the_opted_in_pods(
    ns_labels: dict[str, str], pod_labels: dict[str, str], expected: list[str]
) -> None:
    assert sent("shop", ns_labels, pod_labels) == expected


@pytest.mark.parametrize("namespace", ["sidecarkit-system", "kube-system", "kube-public"])
def test_our_own_and_the_system_namespaces_are_excluded_by_name(namespace: str) -> None:
    found = selecting.verdicts(
        CONFIG, namespace=namespace, namespace_labels={L: "true"}, pod_labels={L: "true"}
    )

    assert not any(v.sent for v in found)
    assert all(
        "kubernetes.io/metadata.name NotIn" in v.reason
        for v in found
        if "namespaceSelector" in v.reason and v.webhook == "namespace.sidecarkit.io"
    )


def test_a_sent_pod_still_has_its_match_conditions_to_pass() -> None:
    (verdict,) = [
        v
        for v in selecting.verdicts(
            CONFIG, namespace="a", namespace_labels={}, pod_labels={L: "true"}
        )
        if v.sent
    ]

    assert verdict.conditions == ("not-a-mirror-pod",)


@pytest.mark.parametrize(
    ("selector", "labels", "ok"),
    [
        (None, {}, True),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}, {}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
            {"a": "2"},
            False,
        ),
    ],
)
def test_label_selectors_follow_metav1(selector: object, labels: dict[str, str], ok: bool) -> None:
    assert selecting.matches(selector, labels)[0] is ok


def test_the_reason_names_the_requirement_and_what_was_found() -> None:
    ok, why = selecting.matches(
        {"matchExpressions": [{"key": L, "operator": "In", "values": ["true"]}]}, {L: "false"}
    )

    assert not ok
    assert why == f"{L} In ['true'] fails: {L}=false"


def test_rules_that_do_not_cover_pod_create_send_nothing() -> None:
    config = {
        "webhooks": [
            {
                "name": "deployments-only",
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "resources": ["deployments"],
                    }
                ],
            }
        ]
    }

    (verdict,) = selecting.verdicts(config, namespace="a", namespace_labels={}, pod_labels={})

    assert not verdict.sent
    assert "rules" in verdict.reason
