"""Wrong-typed and unknown fields end in an error naming the field and the fix, never a traceback.

As ``kubectl apply`` does with the API server's schema and strict field validation: a value
of the wrong type is refused, and so is a field the Pod schema does not have (a typo such as
``livenessProbes`` would otherwise silently drop the probe). ``--lenient`` lets unknown fields
through with a warning, as ``kubectl --validate=warn`` does.
"""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.runner import specs


def _template(spec: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "i", "command": ["true"], **container}],
            **(spec or {}),
        },
    }


def _run(tmp_path: Path, pod: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "pod.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", **pod}))
    return subprocess.run(
        [sys.executable, "-m", "sidecarkit", "run", str(path), "--events", "none", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_WRONG_TYPES = [
    (
        _template({"terminationGracePeriodSeconds": "abc"}),
        'spec.terminationGracePeriodSeconds: must be an integer, got "abc"; write a whole number',
    ),
    (_template(ports=5), "spec.containers[0].ports: must be a list, got 5; write a list"),
    (_template(volumeMounts=5), "spec.containers[0].volumeMounts: must be a list, got 5"),
    (_template(env=5), "spec.containers[0].env: must be a list, got 5"),
    (_template({"initContainers": 5}), "spec.initContainers: must be a list, got 5"),
    (
        {**_template(), "metadata": {"name": "p", "labels": ["a"]}},
        'metadata.labels: must be a mapping, got ["a"]; write key: value pairs',
    ),
    (
        _template(
            livenessProbe={"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": "x"}
        ),
        'spec.containers[0].livenessProbe.terminationGracePeriodSeconds: must be an integer, got "x"',
    ),
]


@pytest.mark.parametrize(("pod", "problem"), _WRONG_TYPES)
def test_a_wrong_typed_field_is_an_error_with_its_path_and_fix(
    tmp_path: Path, pod: dict[str, Any], problem: str
) -> None:
    result = _run(tmp_path, pod)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert problem in result.stderr


@pytest.mark.parametrize(
    ("pod", "problem"),
    [
        (
            _template(livenessProbes={"exec": {"command": ["true"]}}),
            "spec.containers[0].livenessProbes: unknown field of Container; "
            "did you mean livenessProbe? remove or rename it "
            "(`kubectl explain pod.spec.containers` lists the fields)",
        ),
        (
            _template({"restartPolicyy": "Never"}),
            "spec.restartPolicyy: unknown field of PodSpec; did you mean restartPolicy?",
        ),
    ],
)
def test_an_unknown_field_is_an_error_unless_lenient(
    tmp_path: Path, pod: dict[str, Any], problem: str
) -> None:
    result = _run(tmp_path, pod)
    assert result.returncode == 2
    assert problem in result.stderr
    assert "--lenient ignores them" in result.stderr
    lenient = _run(tmp_path, pod, "--lenient")
    assert lenient.returncode == 0, lenient.stderr
    assert "warning" in lenient.stderr
    assert problem.split(";", 1)[0] in lenient.stderr


def test_a_workload_points_to_its_own_explain_path() -> None:
    template = _template(livenessProbes={})
    with pytest.raises(specs.SpecError) as caught:
        specs.read_pod(template, where="spec.template.spec", explain="deployment.spec.template")
    assert "spec.template.spec.containers[0].livenessProbes" in str(caught.value)
    assert "kubectl explain deployment.spec.template.spec.containers" in str(caught.value)


@pytest.mark.parametrize("scale", ["0", "-1", "nan", "inf", "abc"])
def test_a_bad_backoff_scale_is_refused(tmp_path: Path, scale: str) -> None:
    result = _run(tmp_path, _template(), "--backoff-scale", scale)
    assert result.returncode == 2
    assert "--backoff-scale" in result.stderr
    assert "Traceback" not in result.stderr


def test_events_asked_for_on_a_terminal_are_printed_not_replaced_by_the_status_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pod.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", **_template()}))
    primary, secondary = pty.openpty()
    try:
        runner = subprocess.Popen(
            [sys.executable, "-m", "sidecarkit", "run", str(path), "--events", "text"],
            stdout=subprocess.DEVNULL,
            stderr=secondary,
        )
        os.close(secondary)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the runner is gone and the terminal closed
                break
            if not chunk:
                break
            seen += chunk
        assert runner.wait(timeout=30) == 0
    finally:
        os.close(primary)
    assert b"] pod: succeeded" in seen, "--events text was asked for"


def test_a_declared_port_already_in_use_names_the_port_the_container_and_the_fix(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        marker = tmp_path / "started"
        pod = _template(
            command=["touch", str(marker)], ports=[{"name": "http", "containerPort": port}]
        )
        result = _run(tmp_path, pod)
    assert result.returncode == 2
    assert (
        f"spec.containers[0].ports: port {port}/TCP of container 'app' is already in use"
        in result.stderr
    )
    assert "stop what holds it" in result.stderr
    assert "or change containerPort" in result.stderr
    assert not marker.exists(), "nothing starts"
