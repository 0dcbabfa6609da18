"""The session's control plane: one etcd, kube-apiserver and kube-controller-manager for every
test in this folder, started on first use and stopped when the session ends.

Without the binaries the tests skip with the way to get them, except in CI (``CI=true``), where
a missing binary is a failure: these tests must run there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from lightkube import Client

from sidecarkit.injection import policy
from sidecarkit.k8s import cluster
from sidecarkit.webhook import certificates
from tests.support import controlplane, webhooks
from tests.support import kube as k

_started: list[controlplane.ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    try:
        binaries = controlplane.assets()
    except controlplane.AssetsMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the cluster tests, but {exc}", pytrace=False)
        pytest.skip(str(exc))
    with controlplane.running(binaries, tmp_path_factory.mktemp("control-plane")) as plane:
        _started.append(plane)
        yield plane


@pytest.fixture(scope="session")
def kube(control_plane: controlplane.ControlPlane) -> Client:
    """A lightkube client for the admin, made the way sidecarkit makes its own."""
    return cluster.client(cluster.Target(kubeconfig=control_plane.kubeconfig))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> webhooks.Tls:
    """The webhook's CA and serving pair, made by ``sidecarkit certs`` for 127.0.0.1."""
    out = tmp_path_factory.mktemp("webhook-tls")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "certs",
            "--out",
            str(out),
            "--name",
            "127.0.0.1",
            "--name",
            "localhost",
        ],
        check=True,
        capture_output=True,
    )
    return webhooks.Tls(out, certificates.read_pair(out, stem="ca"))


@pytest.fixture(scope="module")
def probe_namespace(kube: Client) -> str:
    """An opted-in namespace where dry-run pods show which webhooks are in force."""
    return k.namespace(kube, "probe", labels={policy.INJECT_LABEL: "true"})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for plane in _started:
        names = ", ".join(plane.processes)
        terminalreporter.write_line(
            f"control plane ({names}) was ready {plane.started_in:.1f} s after start"
        )
