"""The built-in ``proxy`` injection profile: what ``sidecarkit inject`` adds runs as it is.

The test injects a pod, takes the sidecar container it got (command, env, probes, ports) and
starts that command with that env as a process, the ConfigMap's file where the volume would
mount it, in front of a real backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.agents.proxy import support


def inject(tmp_path: Path, annotations: dict[str, str]) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "shop",
            "labels": {"sidecarkit.io/inject": "true"},
            "annotations": {"sidecarkit.io/profiles": "proxy", **annotations},
        },
        "spec": {"containers": [{"name": "shop", "image": "example/shop:1"}]},
    }
    path = tmp_path / "pod.yaml"
    path.write_text(json.dumps(pod))
    out = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "inject", "-f", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    injected: dict[str, Any] = YAML(typ="safe").load(out)
    return injected


def test_the_injected_proxy_sidecar_runs_with_its_env_and_answers_its_probes(
    tmp_path: Path,
) -> None:
    app = support.start_backend(tmp_path / "app")
    upstream = support.start_backend(tmp_path / "upstream")
    inbound, admin, outbound = support.free_port(), support.free_port(), support.free_port()
    pod = inject(
        tmp_path,
        {
            "sidecarkit.io/proxy.port": str(app.port),
            "sidecarkit.io/proxy.inbound-port": str(inbound),
            "sidecarkit.io/proxy.admin-port": str(admin),
            "sidecarkit.io/proxy.config-map": "shop-proxy",
        },
    )
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["sidecarkit", "agent", "proxy"]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": admin}
    assert {"name": "sk-proxy-in", "containerPort": inbound, "protocol": "TCP"} in sidecar["ports"]
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == "sidecarkit-proxy-config"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "sidecarkit-proxy-config"]
    assert volume["configMap"] == {"name": "shop-proxy"}

    config_dir = tmp_path / "configmap"  # where the kubelet would mount the ConfigMap
    config_dir.mkdir()
    (config_dir / "proxy.yaml").write_text(
        json.dumps(
            {"upstreams": [{"name": "stock", "listen": outbound, "endpoints": [upstream.address]}]}
        )
    )
    env = {**os.environ}
    for item in sidecar["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace(mount["mountPath"], str(config_dir))
    proc = subprocess.Popen([sys.executable, "-m", "sidecarkit", "agent", "proxy"], env=env)
    support.STARTED.append(proc)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, f"the sidecar exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the sidecar never became ready"
        time.sleep(0.1)
    assert support.request(inbound)[2] == b"ok %d" % app.port, "clients reach the app"
    assert support.request(outbound)[2] == b"ok %d" % upstream.port, "the app reaches upstreams"
    proxy = support.Proxy(proc, admin, {})
    assert proxy.stop() == 0


def test_transparent_outbound_adds_an_init_container_that_writes_the_redirect_for_the_proxy(
    tmp_path: Path,
) -> None:
    pod = inject(
        tmp_path,
        {
            "sidecarkit.io/proxy.transparent": "outbound",
            "sidecarkit.io/proxy.transparent-include": "10.96.0.0/12, 10.100.0.0/16",
        },
    )
    init, sidecar = pod["spec"]["initContainers"]
    assert init["name"] == "sidecarkit-proxy-init"
    assert "restartPolicy" not in init  # runs to completion before the proxy starts
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    uid = sidecar["securityContext"]["runAsUser"]
    assert init["command"][:3] == ["sidecarkit", "agent", "proxy-init"]
    printed = subprocess.run(
        [sys.executable, "-m", "sidecarkit", *init["command"][1:], "--dry-run"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    # the proxy's own connections are left alone, the app's to the included ranges redirected
    assert f"-m owner --uid-owner {uid} -j RETURN" in printed
    assert "-d 10.96.0.0/12 -j REDIRECT --to-ports 15001" in printed
    assert "-d 10.100.0.0/16 -j REDIRECT --to-ports 15001" in printed
    env = {**os.environ}
    env.update({e["name"]: e["value"] for e in sidecar["env"] if "value" in e})
    settings = subprocess.run(
        [sys.executable, "-m", "sidecarkit", *sidecar["command"][1:], "--dry-run"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    assert "transparent: 127.0.0.1:15001" in settings

    all_ports = inject(tmp_path, {"sidecarkit.io/proxy.transparent": "all",
                                  "sidecarkit.io/proxy.port": "8080"})  # fmt: skip
    command = all_ports["spec"]["initContainers"][0]["command"]
    assert command[-4:] == ["--inbound-port", "8080", "--inbound-redirect-to", "15006"]
