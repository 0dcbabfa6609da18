"""YAML anchors and aliases: injection edits its own copy of a shared node, never the node."""

from __future__ import annotations

from typing import Any

from sidecarkit.injection import Config, Facts, Mode, inject, uninject
from sidecarkit.k8s import manifests

SHARED_MOUNTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, sidecarkit.io/inject: "true"}
      annotations: {sidecarkit.io/profiles: logs}
    spec:
      containers:
        - name: web
          image: nginx
          volumeMounts: &mounts
            - {name: data, mountPath: /data}
        - name: helper
          image: busybox
          volumeMounts: *mounts
      volumes:
        - {name: data, emptyDir: {}}
"""

MERGED = """\
apiVersion: v1
kind: Pod
metadata:
  name: merged
  labels: {sidecarkit.io/inject: "true"}
  annotations: {sidecarkit.io/profiles: logs}
x-defaults: &defaults
  image: nginx
  env: [{name: A, value: "1"}]
spec:
  containers:
    - <<: *defaults
      name: app
"""

SHARED_COMMAND = """\
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  template:
    metadata:
      labels: {sidecarkit.io/inject: "true"}
      annotations: {sidecarkit.io/profiles: logs, sidecarkit.io/mode: legacy}
    spec:
      restartPolicy: Never
      containers:
        - {name: one, image: busybox, command: &cmd [sh, -c, "echo hi"]}
        - {name: two, image: busybox, command: *cmd}
"""


def _inject(text: str, *, owned: bool = False) -> tuple[Any, str]:
    (doc,) = manifests.load_stream(text, source="t")
    new, _ = inject(doc.data, Config(mode=Mode.NATIVE), Facts(), owned=owned)
    return new, manifests.dump(doc, new, changed=True)


def test_a_mount_list_shared_by_two_containers_gets_one_mount_in_each() -> None:
    new, text = _inject(SHARED_MOUNTS)
    for container in new["spec"]["template"]["spec"]["containers"]:
        paths = [m["mountPath"] for m in container["volumeMounts"]]
        assert paths == ["/data", "/var/log/app"], container["name"]
    again = manifests.load_stream(text, source="out")[0].data
    for container in again["spec"]["template"]["spec"]["containers"]:
        assert [m["mountPath"] for m in container["volumeMounts"]] == ["/data", "/var/log/app"]


def test_a_merge_key_base_is_left_alone_and_the_merge_kept_in_place() -> None:
    new, text = _inject(MERGED, owned=True)
    assert [e["name"] for e in new["x-defaults"]["env"]] == ["A"]
    assert "<<: *defaults" in text
    assert "x-defaults: &defaults" in text
    again = manifests.load_stream(text, source="out")[0].data
    assert [e["name"] for e in again["x-defaults"]["env"]] == ["A"]


def test_a_command_shared_by_two_containers_is_wrapped_once_in_each() -> None:
    new, _ = _inject(SHARED_COMMAND)
    apps = [c for c in new["spec"]["template"]["spec"]["containers"] if c["name"] in ("one", "two")]
    assert len(apps) == 2
    for container in apps:
        assert container["command"].count("-c") == 2, container["command"]  # wrapper + own
        assert container["command"][-3:] == ["sh", "-c", "echo hi"]


def test_uninject_after_inject_through_aliases_gives_back_the_original() -> None:
    (doc,) = manifests.load_stream(SHARED_MOUNTS, source="t")
    original = manifests.to_plain(doc.data)
    new, _ = inject(doc.data, Config(mode=Mode.NATIVE), Facts())
    back, _ = uninject(new)
    assert manifests.to_plain(back) == original
