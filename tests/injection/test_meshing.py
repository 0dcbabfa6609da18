"""The built-in ``mtls`` profile: what it adds to a pod, and that the proxy reads it as meant."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from ruamel.yaml import YAML

from sidecarkit.injection import meshing, profiles
from tests.support import schema

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {sidecarkit.io/inject: "true"}
  annotations:
    sidecarkit.io/profiles: mtls
    sidecarkit.io/mtls.mtls: strict
    sidecarkit.io/mtls.port: "9090"
spec:
  serviceAccountName: web
  containers:
    - name: app
      image: registry.example/web:1
"""


def _inject(tmp: Any) -> dict[str, Any]:
    path = tmp / "pod.yaml"
    path.write_text(POD)
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "inject", "-f", str(path), "--mode", "native"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    pod: dict[str, Any] = YAML(typ="safe").load(done.stdout)
    return pod


def test_the_mtls_profile_adds_the_proxy_with_a_projected_token_and_the_trust_bundle(
    tmp_path: Any,
) -> None:
    pod = _inject(tmp_path)
    schema.validate(pod)
    (proxy,) = pod["spec"]["initContainers"]
    assert proxy["name"] == "sidecarkit-proxy"
    assert proxy["restartPolicy"] == "Always"
    assert proxy["args"][:4] == ["--inbound", "0.0.0.0:15006", "--app", "127.0.0.1:9090"]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SIDECARKIT_PROXY_MTLS"] == "strict"
    assert env["SIDECARKIT_PROXY_IDENTITY_TOKEN"] == f"{meshing.IDENTITY_DIR}/token/token"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    token = volumes["sidecarkit-identity-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "sidecarkit-ca"
    assert volumes["sidecarkit-trust-bundle"]["configMap"]["name"] == "sidecarkit-ca-bundle"
    assert "volumeMounts" not in pod["spec"]["containers"][0]  # the app is left alone


def test_the_proxy_reads_the_profiles_env_and_args_as_an_strict_mtls_inbound(
    tmp_path: Any,
) -> None:
    (proxy,) = _inject(tmp_path)["spec"]["initContainers"]
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in proxy["env"] if "value" in e})
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", *proxy["args"], "--dry-run"],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    )  # fmt: skip
    shown = YAML(typ="safe").load(done.stdout)
    assert shown["inbound"] == {
        "listen": "0.0.0.0:15006",
        "app": "127.0.0.1:9090",
        "mtls": "strict",
        "protocol": "http",
    }
    assert shown["identity"]["ca"] == "https://sidecarkit-ca.sidecarkit.svc:15443"
    assert shown["identity"]["token"] == f"{meshing.IDENTITY_DIR}/token/token"
    assert shown["identity"]["trust_bundle"] == f"{meshing.IDENTITY_DIR}/ca/root.crt"
    assert shown["admin"] == "0.0.0.0:15102"


@pytest.mark.parametrize("profile", ["mtls", "proxy"])
def test_the_policy_setting_mounts_its_config_map_and_the_proxy_reads_it(
    tmp_path: Any, profile: str
) -> None:
    """``sidecarkit.io/<profile>.policy: NAME``: the ConfigMap is mounted as a directory (so
    its updates reach the proxy, which reloads the file) and named to the proxy by env."""
    path = tmp_path / "pod.yaml"
    path.write_text(
        POD.replace("sidecarkit.io/profiles: mtls", f"sidecarkit.io/profiles: {profile}")
        .replace("sidecarkit.io/mtls.mtls: strict", f"sidecarkit.io/{profile}.policy: orders")
        .replace("sidecarkit.io/mtls.port", f"sidecarkit.io/{profile}.port")
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "inject", "-f", str(path), "--mode", "native"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    pod = YAML(typ="safe").load(done.stdout)
    schema.validate(pod)
    (proxy,) = pod["spec"]["initContainers"]
    policy_file = f"{profiles.PROXY_POLICY_DIR}/policy.yaml"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SIDECARKIT_PROXY_POLICY"] == policy_file
    mounts = {m["name"]: m for m in proxy["volumeMounts"]}
    assert mounts["sidecarkit-proxy-policy"]["mountPath"] == profiles.PROXY_POLICY_DIR
    assert "subPath" not in mounts["sidecarkit-proxy-policy"]  # updates must reach the file
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["sidecarkit-proxy-policy"]["configMap"]["name"] == "orders"
    # The proxy takes the file named by the env (here a local stand-in for the mounted one).
    local = tmp_path / "policy.yaml"
    local.write_text(
        "authorization:\n  rules:\n    - {name: reads, action: allow, methods: [GET]}\n"
    )
    run_env = dict(os.environ)
    run_env.update({e["name"]: e["value"] for e in proxy["env"] if "value" in e})
    run_env["SIDECARKIT_PROXY_POLICY"] = str(local)
    shown = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", *proxy.get("args", []), "--dry-run"],
        capture_output=True, text=True, check=True, timeout=60, env=run_env,
    )  # fmt: skip
    assert YAML(typ="safe").load(shown.stdout)["policy"] == str(local)
