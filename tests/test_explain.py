"""``sidecarkit explain`` offline: selectors of a default install, then the injector's report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}ANNOTATIONS}
    spec: {containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
"""


def explain(tmp_path: Path, *args: str, annotations: str = "") -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(DEPLOYMENT.replace("ANNOTATIONS", annotations))
    return subprocess.run(
        [sys.executable, "-m", "sidecarkit", "explain", "-f", str(manifest), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_pod_nobody_opted_in_is_never_sent_and_the_selectors_say_why(tmp_path: Path) -> None:
    done = explain(tmp_path)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("Deployment/web (pods in namespace shop):")
    assert (
        "  webhook object.sidecarkit.io: not called: objectSelector: sidecarkit.io/inject In ['true'] fails: no sidecarkit.io/inject"
        in lines
    )
    assert "  result: created as written; no sidecarkit webhook sees these pods" in lines
    assert lines[-1].endswith("Service/web: makes no pods; nothing to inject")


def test_an_opted_in_namespace_sends_the_pod_and_the_injector_reports(tmp_path: Path) -> None:
    done = explain(tmp_path, "--namespace-labels", "sidecarkit.io/inject=true")

    assert done.returncode == 0, done.stderr
    assert (
        "  webhook namespace.sidecarkit.io: called; then matchConditions not-a-mirror-pod (CEL, evaluated by the API server)"
        in done.stdout
    )
    assert "  injector: injected: added logs (native), metrics (native)" in done.stdout


def test_a_pod_the_injector_refuses_is_explained_not_a_traceback(tmp_path: Path) -> None:
    done = explain(
        tmp_path,
        "--namespace-labels",
        "sidecarkit.io/inject=true",
        annotations=", annotations: {sidecarkit.io/profiles: nope}",
    )

    assert done.returncode == 0, done.stderr
    assert "injector: refuses the pod, so the API server rejects it:" in done.stdout
    assert "nope" in done.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [(("web-0",), "add --cluster"), (("--context", "x"), "go with --cluster")],
)
def test_cluster_arguments_without_cluster_are_refused(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "explain", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        input="",
    )

    assert done.returncode == 2
    assert expected in done.stderr
