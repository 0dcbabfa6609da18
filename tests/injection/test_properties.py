"""Properties of inject/uninject over generated pod specs.

The generator builds pods with any mix of containers, ports, env, mounts, init containers,
native sidecars of their own, volumes, restart policies, modes and profile choices, avoiding
only the names, ports and paths sidecarkit itself uses (conflicts with those are covered by
their own property below). For every such pod, injection must keep its invariants.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecarkit import configfiles, errors
from sidecarkit.injection import Facts, inject, uninject
from sidecarkit.k8s import workloads
from tests.support import pods, schema

RESERVED_PORTS = {15100, 15101, 8125, 8200}
OPTED_IN = Facts(namespace_labels={"sidecarkit.io/inject": "true"})
#: The built-in profiles plus one of a user's own that adds env and mounts to the app.
CONFIG = configfiles.parse_config(
    """
profiles:
  secrets:
    settings: {role: {kind: name, default: app}}
    initContainers:
      - {name: secrets-init, image: agent, args: [--role, "${role}"],
         volumeMounts: [{name: secrets, mountPath: /secrets}]}
    containers:
      - {name: secrets-agent, image: agent, ports: [{containerPort: 8200}],
         volumeMounts: [{name: secrets, mountPath: /secrets}]}
    volumes: [{name: secrets, emptyDir: {medium: Memory}}]
    appVolumeMounts: [{name: secrets, mountPath: /secrets, readOnly: true}]
    appEnv: [{name: SECRETS_DIR, value: /secrets}, {name: SECRETS_ROLE, value: "${role}"}]
""",
    source="properties",
)

names = st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z").filter(
    lambda n: not n.startswith(("sidecarkit", "secrets"))
)
ports = st.integers(1, 65535).filter(lambda p: p not in RESERVED_PORTS)
paths = st.from_regex(r"\A/[a-z]{1,8}(/[a-z]{1,8})?\Z").filter(
    lambda p: not p.startswith(("/var/log/app", "/run/sidecarkit", "/etc/sidecarkit", "/secrets"))
)


@st.composite
def containers(draw: st.DrawFn, name: str, used_ports: set[int], volumes: list[str]) -> Any:
    c: dict[str, Any] = {"name": name, "image": draw(st.sampled_from(["nginx", "busybox:1.36"]))}
    if draw(st.booleans()):
        c["command"] = draw(
            st.lists(st.sampled_from(["run", "--fast", "x"]), min_size=1, max_size=3)
        )
    if draw(st.booleans()):
        c["args"] = ["--port", "8080"]
    chosen = draw(st.lists(ports.filter(lambda p: p not in used_ports), max_size=2, unique=True))
    used_ports.update(chosen)
    if chosen:
        c["ports"] = [{"containerPort": p} for p in chosen]
    env_names = draw(
        st.lists(st.from_regex(r"\A[A-Z]{1,6}\Z"), max_size=3, unique=True).filter(
            lambda ns: not any(n.startswith("SECRETS") for n in ns)
        )
    )
    if env_names:
        c["env"] = [{"name": n, "value": "v"} for n in env_names]
    if draw(st.booleans()) and volumes:
        mount_paths = draw(st.lists(paths, min_size=1, max_size=len(volumes), unique=True))
        c["volumeMounts"] = [
            {"name": v, "mountPath": p} for v, p in zip(volumes, mount_paths, strict=False)
        ]
    return c


@st.composite
def workloads_(draw: st.DrawFn) -> Any:
    all_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    split = draw(st.integers(1, len(all_names)))
    app_names, init_names = all_names[:split], all_names[split:]
    volumes = draw(st.lists(names.map(lambda n: f"v{n}"), max_size=3, unique=True))
    used: set[int] = set()
    spec: dict[str, Any] = {
        "containers": [draw(containers(n, used, volumes)) for n in app_names],
    }
    if init_names:
        inits = [draw(containers(n, used, volumes)) for n in init_names]
        for c in inits:
            if draw(st.booleans()):
                c["restartPolicy"] = "Always"
        spec["initContainers"] = inits
    if volumes:
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volumes]
    restart = draw(st.sampled_from([None, "Always", "OnFailure", "Never"]))
    if restart:
        spec["restartPolicy"] = restart
    if draw(st.booleans()):
        spec["hostNetwork"] = draw(st.booleans())
    annotations: dict[str, str] = {}
    profiles = draw(
        st.sampled_from(
            [None, "logs", "metrics", "logs,metrics", "metrics,logs", "", "secrets,logs", "secrets"]
        )
    )
    if profiles is not None:
        annotations["sidecarkit.io/profiles"] = profiles
    mode = draw(st.sampled_from([None, "native", "legacy", "auto"]))
    if mode:
        annotations["sidecarkit.io/mode"] = mode
    if draw(st.booleans()):
        annotations["sidecarkit.io/logs.mode"] = draw(st.sampled_from(["native", "legacy"]))
    metadata: dict[str, Any] = {"labels": {"app": "x"}}
    if draw(st.booleans()) or annotations:
        metadata["annotations"] = annotations
    template = {"metadata": metadata, "spec": spec}
    kind = draw(st.sampled_from(["Pod", "Deployment", "Job", "CronJob"]))
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", **metadata},
            "spec": spec,
        }
    if kind == "Job":
        spec.setdefault("restartPolicy", "Never")
        if spec["restartPolicy"] == "Always":
            spec["restartPolicy"] = "OnFailure"
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"template": template},
        }
    if kind == "CronJob":
        spec["restartPolicy"] = "Never"
        return {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "c"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
        }
    spec.pop("restartPolicy", None)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template},
    }


common = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(workloads_())
def test_injection_keeps_its_invariants(workload: Any) -> None:
    original = copy.deepcopy(workload)
    injected, report = inject(workload, CONFIG, OPTED_IN)
    assert workload == original, "inject modified its input"
    if report.changed:
        pods.assert_only_extended(original, injected)
        pods.assert_names_unique(injected)
    again, second = inject(injected, CONFIG, OPTED_IN)
    assert again is injected
    assert not second.changed
    back, _ = uninject(injected)
    assert back == original


@settings(max_examples=60, deadline=None)
@given(workloads_())
def test_injected_pods_validate_against_the_schema(workload: Any) -> None:
    if schema.errors(workload):
        return
    injected, _ = inject(workload, CONFIG, OPTED_IN)
    schema.validate(injected)


@common
@given(workloads_(), st.sampled_from(["port", "name", "mount", "volume"]))
def test_a_clash_with_what_sidecarkit_adds_is_an_error_not_an_overwrite(
    workload: Any, clash: str
) -> None:
    template = workloads.pod_template(workload)
    assert template is not None
    spec, annotations = template["spec"], template["metadata"].setdefault("annotations", {})
    annotations.update({"sidecarkit.io/profiles": "logs", "sidecarkit.io/mode": "native"})
    annotations.pop("sidecarkit.io/logs.mode", None)
    spec.pop("hostNetwork", None)
    app = spec["containers"][0]
    if clash == "port":
        app.setdefault("ports", []).append({"containerPort": 15100})
    elif clash == "name":
        spec["containers"].append({"name": "sidecarkit-logs", "image": "mine"})
    elif clash == "mount":
        spec.setdefault("volumes", []).append({"name": "mine", "emptyDir": {}})
        app.setdefault("volumeMounts", []).append({"name": "mine", "mountPath": "/var/log/app"})
    else:
        spec.setdefault("volumes", []).append({"name": "sidecarkit-logs", "emptyDir": {}})
    before = copy.deepcopy(workload)
    with pytest.raises(errors.ConflictError, match="would overwrite"):
        inject(workload, CONFIG, OPTED_IN)
    assert workload == before


@common
@given(workloads_())
def test_the_webhooks_sharing_path_gives_the_same_result_and_leaves_the_input(
    workload: Any,
) -> None:
    original = copy.deepcopy(workload)
    expected, report = inject(copy.deepcopy(workload), CONFIG, OPTED_IN)
    shared, shared_report = inject(workload, CONFIG, OPTED_IN, plain=True)
    assert workload == original, "plain=True modified its input"
    assert shared == expected
    assert shared_report == report
    again, _ = inject(workload, CONFIG, OPTED_IN, plain=True)
    assert again == expected, "a cached plan gives the same answer the second time"


@pytest.mark.parametrize(
    ("profiles", "field", "item"),
    [
        ("logs", "volumeMounts", {"name": "mine", "mountPath": "/var/log/app"}),
        ("secrets", "env", {"name": "SECRETS_DIR", "value": "/mine"}),
        ("secrets", "volumeMounts", {"name": "mine", "mountPath": "/secrets"}),
    ],
)
def test_an_app_mount_or_env_clash_in_a_later_container_is_found_on_the_cached_plan_path(
    profiles: str, field: str, item: dict[str, Any]
) -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"sidecarkit.io/profiles": profiles}},
        "spec": {
            "containers": [
                {"name": "a", "image": "a", "env": [{"name": "OTHER", "value": "1"}]},
                {"name": "b", "image": "b", field: [item]},
            ],
            "volumes": [{"name": "mine", "emptyDir": {}}],
        },
    }
    for _ in range(2):  # the second time answers from the cached plan
        with pytest.raises(errors.ConflictError, match="to container 'b', which has one"):
            inject(copy.deepcopy(pod), CONFIG, OPTED_IN, plain=True)
