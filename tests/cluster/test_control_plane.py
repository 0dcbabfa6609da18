"""The control plane the cluster tests share is a real one, configured as clusters are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Namespace

from tests.support import controlplane
from tests.support import kube as k


def test_the_apiserver_serves_the_built_in_namespaces(kube: Client) -> None:
    names = {ns.metadata.name for ns in kube.list(Namespace) if ns.metadata is not None}

    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


def test_the_apiserver_is_the_pinned_kubernetes_release(
    control_plane: controlplane.ControlPlane,
) -> None:
    status, body = control_plane.get("/version")

    assert status == 200
    assert json.loads(body)["gitVersion"] == controlplane.KUBERNETES_VERSION


def test_pods_get_a_service_account_token_as_in_a_real_cluster(kube: Client) -> None:
    namespace = k.namespace(kube, "plain")

    pod = k.create_pod(kube, namespace, k.pod_dict("app"), dry_run=True)

    assert pod["spec"]["serviceAccountName"] == "default"
    volumes = [v["name"] for v in pod["spec"]["volumes"]]
    assert any(name.startswith("kube-api-access-") for name in volumes), volumes
    tolerations = {t["key"] for t in pod["spec"]["tolerations"]}
    assert "node.kubernetes.io/not-ready" in tolerations  # DefaultTolerationSeconds ran


def test_pod_security_admission_enforces_a_namespace_level(kube: Client) -> None:
    namespace = k.namespace(
        kube, "restricted", labels={"pod-security.kubernetes.io/enforce": "restricted"}
    )
    pod = k.pod_dict("privileged")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}

    with pytest.raises(ApiError) as caught:
        k.create_pod(kube, namespace, pod, dry_run=True)

    assert caught.value.status.code == 403
    assert "violates PodSecurity" in str(caught.value.status.message)


_SCRIPT = """
import json, sys, time
from pathlib import Path
from tests.support import controlplane
with controlplane.running(controlplane.assets(), Path(sys.argv[1]), controller_manager=False) as plane:
    print(json.dumps([p.pid for p in plane.processes.values()]), flush=True)
    if sys.argv[2] == "raise":
        raise RuntimeError("the test failed")
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("end", ["raise", "sigkill"])
def test_no_control_plane_process_outlives_its_test_run(
    control_plane: controlplane.ControlPlane, tmp_path: Path, end: str
) -> None:
    """A test that fails stops the processes; a run killed outright takes them with it."""
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), end],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert run.stdout is not None
    pids = json.loads(run.stdout.readline())
    assert len(pids) == 2
    assert all(_alive(pid) for pid in pids)

    if end == "sigkill":
        run.kill()
    run.wait(timeout=60)

    k.wait_for("etcd and kube-apiserver to exit", lambda: not any(_alive(p) for p in pids))
