"""The built-in ``auth`` profile: the proxy checking end users (JWT, API keys) and enforcing a
policy from a ConfigMap in front of the app, with the keys' Secret mounted where the policy
file can name them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from sidecarkit.injection import meshing, profiles
from tests.support import schema

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: orders
  namespace: shop
  labels: {sidecarkit.io/inject: "true"}
  annotations:
    sidecarkit.io/profiles: PROFILES
    sidecarkit.io/auth.port: "9090"
    ANNOTATIONS
spec:
  containers:
    - name: app
      image: registry.example/orders:1
"""


def _inject(
    tmp: Path, annotations: str, profile_list: str = "auth"
) -> subprocess.CompletedProcess[str]:
    path = tmp / "pod.yaml"
    path.write_text(POD.replace("PROFILES", profile_list).replace("ANNOTATIONS", annotations))
    return subprocess.run(
        [sys.executable, "-m", "sidecarkit", "inject", "-f", str(path), "--mode", "native"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


FULL = "sidecarkit.io/auth.policy: orders-policy\n    sidecarkit.io/auth.secret: orders-keys"


def test_the_auth_profile_mounts_the_policy_config_map_and_the_key_secret_read_only(
    tmp_path: Path,
) -> None:
    done = _inject(tmp_path, FULL)
    assert done.returncode == 0, done.stderr
    pod: dict[str, Any] = YAML(typ="safe").load(done.stdout)
    schema.validate(pod)
    (proxy,) = pod["spec"]["initContainers"]
    assert proxy["name"] == "sidecarkit-proxy"
    assert proxy["restartPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SIDECARKIT_PROXY_INBOUND"] == "0.0.0.0:15006"
    assert env["SIDECARKIT_PROXY_APP"] == "127.0.0.1:9090"
    assert env["SIDECARKIT_PROXY_POLICY"] == f"{profiles.PROXY_POLICY_DIR}/policy.yaml"
    mounts = {m["name"]: m for m in proxy["volumeMounts"]}
    assert mounts["sidecarkit-proxy-policy"]["mountPath"] == profiles.PROXY_POLICY_DIR
    secret_mount = mounts["sidecarkit-proxy-secret"]
    assert secret_mount == {
        "name": "sidecarkit-proxy-secret",
        "mountPath": profiles.PROXY_SECRET_DIR,
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["sidecarkit-proxy-policy"]["configMap"]["name"] == "orders-policy"
    assert volumes["sidecarkit-proxy-secret"]["secret"]["secretName"] == "orders-keys"
    assert "volumeMounts" not in pod["spec"]["containers"][0]  # the app never sees the keys


def test_the_auth_profile_without_a_policy_is_refused_naming_the_annotation(
    tmp_path: Path,
) -> None:
    done = _inject(tmp_path, "sidecarkit.io/auth.secret: orders-keys")
    assert done.returncode != 0
    assert "sidecarkit.io/auth.policy" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_injected_proxy_reads_the_policy_naming_files_of_the_mounted_secret(
    tmp_path: Path,
) -> None:
    """The proxy's own --dry-run takes the injected command, env and a policy file whose
    api_keys and jwks_file point into the Secret's mount; a broken policy fails it, so the
    file is really read."""
    done = _inject(tmp_path, FULL)
    (proxy,) = YAML(typ="safe").load(done.stdout)["spec"]["initContainers"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "authentication:\n"
        "  jwt:\n"
        "    - issuer: https://auth.example.com\n"
        f"      jwks_file: {profiles.PROXY_SECRET_DIR}/jwks.json\n"
        f"  api_keys: {{file: {profiles.PROXY_SECRET_DIR}/api-keys}}\n"
        "authorization:\n  rules:\n    - {name: users, action: allow, subjects: ['*']}\n"
    )
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in proxy["env"] if "value" in e})
    env["SIDECARKIT_PROXY_POLICY"] = str(policy)  # a local stand-in for the mounted file
    command = [sys.executable, "-m", "sidecarkit", *proxy["command"][1:], *proxy.get("args", [])]
    shown = subprocess.run(
        [*command, "--dry-run"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert shown.returncode == 0, shown.stderr
    effective = YAML(typ="safe").load(shown.stdout)
    assert effective["policy"] == str(policy)
    assert effective["inbound"]["app"] == "127.0.0.1:9090"
    assert effective["admin"] == "0.0.0.0:15102"
    policy.write_text("authorization:\n  rules:\n    - {name: x, action: permit}\n")
    broken = subprocess.run(
        [*command, "--dry-run"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert broken.returncode != 0
    assert "permit" in broken.stderr


def test_auth_with_mtls_in_one_pod_is_refused_pointing_at_mtls_with_a_policy(
    tmp_path: Path,
) -> None:
    """Both run the proxy in front of the same port; ``mtls`` takes the same ``policy`` and
    ``secret`` settings, which is how a pod gets both."""
    done = _inject(tmp_path, FULL, profile_list="mtls,auth")
    assert done.returncode != 0
    assert "'sidecarkit-proxy'" in done.stderr
    assert "sidecarkit.io/mtls.policy" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_mtls_profile_takes_the_secret_setting_too(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(
        POD.replace("PROFILES", "mtls")
        .replace("sidecarkit.io/auth.port", "sidecarkit.io/mtls.port")
        .replace("ANNOTATIONS", FULL.replace("auth.", "mtls."))
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "inject", "-f", str(path), "--mode", "native"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pod = YAML(typ="safe").load(done.stdout)
    schema.validate(pod)
    (proxy,) = pod["spec"]["initContainers"]
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    assert mounts["sidecarkit-proxy-secret"] == profiles.PROXY_SECRET_DIR
    assert mounts["sidecarkit-identity-token"] == f"{meshing.IDENTITY_DIR}/token"
