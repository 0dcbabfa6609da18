"""``sidecarkit repair --watch``: two replicas share a Lease on the real API server; only the
holder restarts, a rollout in progress is not restarted again, and a stopped holder hands over."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from sidecarkit import discovering, repairing
from sidecarkit.injection import policy
from tests.support import controlplane, webhooks
from tests.support import kube as k

OPT_IN = {policy.INJECT_LABEL: "true"}


@contextmanager
def watcher(
    plane: controlplane.ControlPlane, log: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecarkit",
                "repair",
                "--watch",
                "--kubeconfig",
                str(plane.kubeconfig),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def holder(kube: Client, namespace: str) -> str | None:
    try:
        lease = kube.get(Lease, repairing.LEASE, namespace=namespace)
    except ApiError:
        return None
    return lease.spec.holderIdentity if lease.spec else None


def test_only_the_lease_holder_repairs_and_a_stopped_holder_hands_over(
    control_plane: controlplane.ControlPlane,
    kube: Client,
    tls: webhooks.Tls,
    probe_namespace: str,
    tmp_path: Path,
) -> None:
    namespace = k.namespace(kube, "watched", labels=OPT_IN)
    install = k.namespace(kube, "sk-lease")
    template = k.pod_dict("unused", labels={"app": "web"})
    kube.create(
        k.typed(
            Deployment,
            {
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]},
                },
            },
        ),
        namespace=namespace,
    )
    k.wait_for(
        "the Deployment's first pod",
        lambda: len(list(kube.list(Pod, namespace=namespace))) == 1,
        timeout=60,
    )
    common = (
        "-n",
        namespace,
        "--webhook-namespace",
        install,
        "--period",
        "1s",
        "--lease-duration",
        "3",
        "--interval",
        "0s",
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}

    with webhooks.process(tls) as (_, port), ExitStack() as stack:
        config = k.url_mode(tls, port, name=discovering.WEBHOOK_CONFIGURATION)
        stack.enter_context(k.registered(kube, config, probe_namespace=probe_namespace))
        procs = {
            name: stack.enter_context(
                watcher(control_plane, logs[name], *common, "--identity", name)
            )
            for name in ("a", "b")
        }

        k.wait_for("a Lease holder", lambda: holder(kube, install) in ("a", "b"))
        k.wait_for(
            "an injected pod from the restarted Deployment",
            lambda: any(k.injected(p.to_dict()) for p in kube.list(Pod, namespace=namespace)),
            timeout=60,
        )
        leader = holder(kube, install)
        assert leader is not None
        other = "b" if leader == "a" else "a"
        k.wait_for(
            f"{leader} to pass again over the pending rollout",
            lambda: "will replace the pod" in logs[leader].read_text(),
            timeout=30,
        )

        procs[leader].send_signal(signal.SIGTERM)
        assert procs[leader].wait(timeout=20) == 0
        k.wait_for(f"{other} to take the Lease", lambda: holder(kube, install) == other, timeout=30)

    texts = {name: path.read_text() for name, path in logs.items()}
    restarts = [
        line
        for text in texts.values()
        for line in text.splitlines()
        if line.startswith("restarted ")
    ]
    assert restarts == [f"restarted Deployment {namespace}/web"], texts
    assert f"leading as {leader}" in texts[leader]
    assert f"released Lease {install}/{repairing.LEASE}" in texts[leader]
    assert f"leading as {other}" in texts[other]
    assert "Traceback" not in texts["a"] + texts["b"]
