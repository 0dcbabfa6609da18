"""Bad manifests fail before anything starts, with the field path; good ones are typed."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import PurePosixPath
from typing import Any

import pytest

from sidecarkit.runner import expanding, planning, specs


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "labels": {"app": "x"}, "annotations": {"a": "b"}},
        "spec": {"containers": [{"name": "app", "image": "i", "command": ["run"]}], **spec},
    }


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {"initContainers": [{"name": "app", "image": "i"}]},
            "spec.containers[0].name: 'app' is already the name of spec.initContainers[0]",
        ),
        (
            {
                "initContainers": [
                    {
                        "name": "init",
                        "image": "i",
                        "readinessProbe": {"exec": {"command": ["true"]}},
                    }
                ]
            },
            "spec.initContainers[0].readinessProbe: is only allowed on sidecars",
        ),
        (
            {
                "initContainers": [
                    {
                        "name": "init",
                        "image": "i",
                        "lifecycle": {"postStart": {"exec": {"command": ["true"]}}},
                    }
                ]
            },
            "spec.initContainers[0].lifecycle: is only allowed on sidecars",
        ),
        (
            {"containers": [{"name": "app", "image": "i", "restartPolicy": "Always"}]},
            "spec.containers[0].restartPolicy: may only be set on init containers",
        ),
        (
            {"initContainers": [{"name": "s", "image": "i", "restartPolicy": "OnFailure"}]},
            "spec.initContainers[0].restartPolicy: must be Always (a sidecar), got 'OnFailure'",
        ),
        (
            {
                "containers": [
                    {
                        "name": "app",
                        "image": "i",
                        "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                    }
                ]
            },
            "spec.containers[0].volumeMounts[0].name: no volume 'data' in spec.volumes",
        ),
        (
            {
                "containers": [
                    {"name": "a", "image": "i", "ports": [{"containerPort": 80}]},
                    {"name": "b", "image": "i", "ports": [{"containerPort": 80}]},
                ]
            },
            "spec.containers[1].ports: port 80/TCP is also declared by spec.containers[0]",
        ),
        (
            {
                "containers": [
                    {
                        "name": "a",
                        "image": "i",
                        "livenessProbe": {"exec": {"command": ["x"]}, "tcpSocket": {"port": 1}},
                    }
                ]
            },
            "spec.containers[0].livenessProbe: needs exactly one of exec, httpGet, tcpSocket, grpc",
        ),
        ({"containers": []}, "spec.containers: a pod needs at least one container"),
        ({"restartPolicy": "Sometimes"}, "spec.restartPolicy: must be Always, OnFailure or Never"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(specs.SpecError) as caught:
        specs.read_pod(_pod(**spec))
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    bad = _pod(
        initContainers=[{"name": "app", "image": "i", "startupProbe": {}}],
        restartPolicy="Sometimes",
    )
    with pytest.raises(specs.SpecError) as caught:
        specs.read_pod(bad)
    assert len(caught.value.problems) >= 3


def test_a_good_spec_is_typed_with_probe_defaults() -> None:
    pod = specs.read_pod(
        _pod(
            initContainers=[
                {"name": "setup", "image": "i", "command": ["setup"]},
                {
                    "name": "proxy",
                    "image": "i",
                    "restartPolicy": "Always",
                    "command": ["proxy"],
                    "startupProbe": {"httpGet": {"path": "/ready", "port": 15000}},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
                },
            ],
            restartPolicy="Never",
            terminationGracePeriodSeconds=5,
        )
    )
    assert [c.name for c in pod.sidecars] == ["proxy"]
    probe = pod.init_containers[1].startup
    assert probe is not None
    assert (probe.period, probe.timeout, probe.failure_threshold, probe.success_threshold) == (
        10.0,
        1.0,
        3,
        1,
    )
    assert probe.handler.kind == "httpGet"
    assert probe.handler.port == 15000
    assert pod.init_containers[1].pre_stop == specs.Handler("sleep", seconds=2.0)
    assert pod.termination_grace == 5.0
    assert pod.restart_policy == "Never"


HOST = expanding.Host(pod_ip="127.0.0.1", node_name="box", cpus=2.0, memory=4 << 30)


def test_env_and_argv_expand_as_the_kubelet_does() -> None:
    pod = specs.read_pod(
        _pod(
            containers=[
                {
                    "name": "app",
                    "image": "i",
                    "command": ["echo", "$(GREETING)", "$$(GREETING)", "$(MISSING)"],
                    "args": ["--pod=$(POD)", "--cpu=$(CPU)"],
                    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                    "env": [
                        {"name": "NAME", "value": "world"},
                        {"name": "GREETING", "value": "hello $(NAME) $(LATER)"},
                        {"name": "LATER", "value": "x"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {
                            "name": "APP",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                        },
                        {
                            "name": "CPU",
                            "valueFrom": {
                                "resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}
                            },
                        },
                        {
                            "name": "MEM",
                            "valueFrom": {
                                "resourceFieldRef": {
                                    "resource": "requests.memory",
                                    "divisor": "1Mi",
                                }
                            },
                        },
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                        },
                    ],
                    "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                }
            ]
        )
    )
    objects = expanding.Objects.from_documents(
        [
            {"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"level": "debug"}},
            {"kind": "Secret", "metadata": {"name": "creds"}, "data": {"token": "czNjcjN0"}},
        ]
    )
    app = pod.containers[0]
    env = expanding.environment(app, pod, where="spec.containers[0]", objects=objects, host=HOST)
    assert env["GREETING"] == "hello world $(LATER)"
    assert env["CFG_level"] == "debug"
    assert env["POD"] == "p"
    assert env["APP"] == "x"
    assert env["CPU"] == "500"
    assert env["MEM"] == "64"
    assert env["TOKEN"] == "s3cr3t"
    argv = expanding.command_line(app, env, where="spec.containers[0]")
    assert argv == [
        "echo",
        "hello world $(LATER)",
        "$(GREETING)",
        "$(MISSING)",
        "--pod=p",
        "--cpu=500",
    ]


def test_unresolvable_references_and_missing_commands_are_errors() -> None:
    pod = specs.read_pod(
        _pod(
            containers=[
                {
                    "name": "app",
                    "image": "example/app:1",
                    "env": [
                        {
                            "name": "A",
                            "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}},
                        },
                        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}},
                        {
                            "name": "C",
                            "valueFrom": {
                                "configMapKeyRef": {"name": "nope", "key": "k", "optional": True}
                            },
                        },
                    ],
                }
            ]
        )
    )
    with pytest.raises(specs.SpecError) as caught:
        expanding.environment(
            pod.containers[0],
            pod,
            where="spec.containers[0]",
            objects=expanding.Objects(),
            host=HOST,
        )
    assert caught.value.problems == (
        "spec.containers[0].env[0].valueFrom.configMapKeyRef: no key 'k' in configMap 'nope'; "
        "add it or mark it optional",
        "spec.containers[0].env[1].valueFrom.fieldRef.fieldPath: 'status.phase' is not a "
        "Downward API field",
    )
    with pytest.raises(specs.SpecError, match=r"--command app='program args'"):
        expanding.command_line(pod.containers[0], {}, where="spec.containers[0]")
    assert expanding.command_line(pod.containers[0], {}, where="x", override=["sh", "-c", "x"]) == [
        "sh",
        "-c",
        "x",
    ]
    assert expanding.command_line(pod.containers[0], {}, where="x", own_image=True) == [
        "sidecarkit"
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2.0), ("128Mi", 128 * 2**20), ("1G", 1e9), ("1.5", 1.5), ("1e3", 1000.0)],
)
def test_quantities(text: str, value: float) -> None:
    assert expanding.quantity(text) == value


def test_the_run_command_refuses_a_bad_pod_before_starting_anything(tmp_path: Any) -> None:
    marker = tmp_path / "started"
    bad = _pod(
        initContainers=[
            {
                "name": "init",
                "image": "i",
                "command": ["touch", str(marker)],
                "livenessProbe": {"exec": {"command": ["true"]}},
            }
        ],
        containers=[{"name": "app", "image": "example/app:1"}],
    )
    path = tmp_path / "pod.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", **bad}))
    result = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "spec.initContainers[0].livenessProbe: is only allowed on sidecars" in result.stderr
    assert not marker.exists()
    missing = _pod(containers=[{"name": "app", "image": "example/app:1"}])
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", **missing}))
    result = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        "spec.containers[0].command: image 'example/app:1' cannot be pulled here" in result.stderr
    )
    assert "--command app='program args'" in result.stderr


@pytest.mark.parametrize(
    "parts",
    [
        ("/tmp/pod", "volumes", "data"),
        ("/tmp/pod/", "a//b/", "./c"),
        ("/v", "/abs/sub"),
        ("/v", "a/../b"),
        ("/v", ""),
        ("/v", "."),
        ("//net", "x"),
        ("///three", "x"),
        ("relative", "x/"),
        (".",),
        ("",),
        ("/",),
        ("/", "x"),
        ("//", "x"),
        ("/", "//x"),
        ("//a", "/b"),
        ("a", "//b", "c"),
        ("///", "x"),
    ],
)
def test_volume_paths_are_joined_as_pathlib_joins_them(parts: tuple[str, ...]) -> None:
    assert planning.join(*parts) == str(PurePosixPath(*parts))


def test_every_mix_of_roots_slashes_and_dots_joins_as_pathlib_joins_it() -> None:
    atoms = ["", "/", "//", "///", "a", "/a", "//a", "a/", "./a", "a/..", "..", "."]
    mixes = [p for n in (1, 2, 3) for p in itertools.product(atoms, repeat=n)]
    wrong = [p for p in mixes if planning.join(*p) != str(PurePosixPath(*p))]
    assert not wrong, wrong[:5]
