"""Sidecars go after the init containers that set up the pod's network (Istio's, Linkerd's),
unless the profile says otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from sidecarkit import configfiles, inject, uninject

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "labels": {"sidecarkit.io/inject": "true"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def _pod(*init_names: str) -> dict[str, Any]:
    inits = [{"name": n, "image": "setup"} for n in init_names]
    return {**POD, "spec": {**POD["spec"], "initContainers": inits}}


def _init_names(pod: Any) -> list[str]:
    return [c["name"] for c in pod["spec"]["initContainers"]]


@pytest.mark.parametrize("setup", ["linkerd-init", "istio-init", "istio-validation"])
def test_sidecars_go_after_a_network_setup_init_container(setup: str) -> None:
    pod = _pod(setup, "migrate")
    injected, _ = inject(pod)
    names = _init_names(injected)
    assert names[0] == setup, names
    assert names[-1] == "migrate", "the user's own init containers still come after the sidecars"
    assert "sidecarkit-logs" in names
    assert inject(injected)[0] is injected, "idempotent"
    assert uninject(injected)[0] == pod


def test_without_network_setup_sidecars_go_first() -> None:
    names = _init_names(inject(_pod("migrate"))[0])
    assert names[-1] == "migrate"
    assert names[0].startswith("sidecarkit-")


def test_a_profile_can_ask_to_go_first_anyway() -> None:
    config = configfiles.parse_config(
        """
defaultProfiles: [mesh]
profiles:
  mesh:
    afterInitContainers: []
    containers:
      - name: mesh
        image: mesh:1
""",
        source="config.yaml",
    )
    names = _init_names(inject(_pod("linkerd-init"), config)[0])
    assert names == ["mesh", "linkerd-init"]


def test_a_profile_names_its_own_setup_containers() -> None:
    config = configfiles.parse_config(
        """
defaultProfiles: [mesh]
profiles:
  mesh:
    afterInitContainers: [cilium-wait]
    containers:
      - name: mesh
        image: mesh:1
""",
        source="config.yaml",
    )
    names = _init_names(inject(_pod("cilium-wait", "linkerd-init"), config)[0])
    assert names == ["cilium-wait", "mesh", "linkerd-init"]


def test_a_bad_after_init_containers_value_names_the_place() -> None:
    from sidecarkit import errors  # noqa: PLC0415

    with pytest.raises(errors.ConfigError, match=r"profiles\.mesh\.afterInitContainers"):
        configfiles.parse_config(
            "profiles:\n  mesh:\n    afterInitContainers: linkerd-init\n"
            "    containers: [{name: mesh, image: p}]\n",
            source="config.yaml",
        )
