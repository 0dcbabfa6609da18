"""The injection config and facts files: valid ones load, wrong ones point at the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecarkit import configfiles, errors
from sidecarkit.injection import Mode, profiles


def _fails(text: str, pattern: str) -> None:
    with pytest.raises(errors.ConfigError, match=pattern):
        configfiles.parse_config(text, source="c.yaml")


def test_an_empty_file_is_the_built_in_config() -> None:
    config = configfiles.parse_config("", source="c.yaml")
    assert set(config.profiles) == {"logs", "metrics", "proxy", "mtls", "auth"}
    assert config.default_profiles == ("logs", "metrics")
    assert config.mode is Mode.NATIVE


def test_image_mode_defaults_and_built_in_overrides_are_read() -> None:
    config = configfiles.parse_config(
        "image: reg.example/sk:9\nmode: auto\ndefaultProfiles: [metrics]\n"
        "profiles:\n  logs:\n    settings: {dir: /logs, admin-port: 9000, mode: legacy}\n",
        source="c.yaml",
    )
    values = {s.name: s.default for s in config.profiles["logs"].settings}
    assert values["dir"] == "/logs"
    assert values["admin-port"] == "9000"
    assert values["mode"] == "legacy"
    assert values["image"] == "reg.example/sk:9"
    assert values["files"] == "*.log"
    assert config.mode is Mode.AUTO
    assert config.default_profiles == ("metrics",)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("imag: x\n", r"c\.yaml:1:1: imag: unknown key; accepted keys: apiVersion"),
        ("mode: sometimes\n", r"c\.yaml:1:1: mode: must be one of native, legacy, auto"),
        ("kind: Config\n", r"c\.yaml:1:1: kind: must be InjectionConfig"),
        (
            "defaultProfiles: [logs, tracing]\n",
            r"c\.yaml:1:\d+: defaultProfiles\[1\]: no profile 'tracing'",
        ),
        (
            "profiles:\n  logs:\n    settings:\n      dir: relative\n",
            r"c\.yaml:4:7: profiles\.logs\.settings\.dir: expected an absolute path",
        ),
        (
            "profiles:\n  logs:\n    settings:\n      colour: red\n",
            r"c\.yaml:4:7: profiles\.logs\.settings\.colour: unknown key; accepted keys: mode",
        ),
        ("profiles:\n  Bad_Name: {}\n", r"c\.yaml:2:3: profiles\.Bad_Name: a profile name must be"),
        (
            "profiles:\n  x:\n    volumes: []\n",
            r"profiles\.x: a profile needs at least one of initContainers, containers",
        ),
        (
            "profiles:\n  x:\n    containers:\n      - {name: Agent, image: i}\n",
            r"c\.yaml:4:9: profiles\.x\.containers\[0\]\.name: must be a DNS-1123 label",
        ),
        (
            "profiles:\n  x:\n    containers:\n      - name: a\n",
            r"profiles\.x\.containers\[0\]\.image: every container needs an image",
        ),
        (
            "profiles:\n  x:\n    containers:\n      - {name: a, image: i, restartPolicy: Always}\n",
            r"restartPolicy: set by sidecarkit from the mode; remove it",
        ),
        (
            "profiles:\n  x:\n    containers:\n      - {name: a, image: i, args: ['${nope}']}\n",
            r"c\.yaml:3:5: profiles\.x\.containers: uses \$\{nope\}, which is not a setting",
        ),
        (
            "profiles:\n  x:\n    containers:\n      - {name: a, image: i, ports: [{containerPort: 70000}]}\n",
            r"containerPort: must be a port number",
        ),
        (
            "profiles:\n  x:\n    settings: {p: {kind: port, default: 0}}\n    containers: [{name: a, image: i}]\n",
            r"profiles\.x\.settings\.p\.default: expected a port number",
        ),
        (
            "profiles:\n  x:\n    settings: {p: {kind: colour}}\n    containers: [{name: a, image: i}]\n",
            r"profiles\.x\.settings\.p\.kind: must be one of string",
        ),
        ("a: [1\n", r"c\.yaml:2:1: .*fix the YAML"),
    ],
)
def test_mistakes_are_located_and_explained(text: str, pattern: str) -> None:
    _fails(text, pattern)


def test_a_user_profile_substitutes_typed_settings() -> None:
    config = configfiles.parse_config(
        "profiles:\n  x:\n    settings:\n      port: {kind: port, default: 8200}\n"
        "      on: {kind: bool, default: true}\n      role: {kind: name}\n"
        "    containers:\n      - name: a\n        image: i\n        args: ['--role=${role}', '$${literal}']\n"
        "        ports: [{containerPort: '${port}'}]\n        env: [{name: ON, value: '${on}'}]\n",
        source="c.yaml",
    )
    profile = config.profiles["x"]
    assert profile.setting("role") is not None
    assert profile.setting("role").required  # type: ignore[union-attr]
    ctx = profiles.Context(mode=Mode.NATIVE, run_to_completion=False)
    parts = profile.render({"port": "9000", "on": "true", "role": "pay"}, ctx)
    (container,) = parts.sidecars
    assert container["args"] == ["--role=pay", "${literal}"]
    assert container["ports"] == [{"containerPort": 9000}]
    assert container["env"] == [{"name": "ON", "value": True}]


def test_load_config_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"cannot read config file .*nope\.yaml"):
        configfiles.load_config(str(tmp_path / "nope.yaml"))


def test_facts_file(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text(
        'kubernetesVersion: "v1.30.2"\nnamespaceLabels: {sidecarkit.io/inject: "true"}\n'
    )
    facts = configfiles.load_facts(str(path))
    assert facts.kubernetes_version == (1, 30)
    assert dict(facts.namespace_labels) == {"sidecarkit.io/inject": "true"}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            "kubernetesVersion: 1.30\n",
            r"facts\.yaml:1:1: kubernetesVersion: must be a quoted string",
        ),
        ('kubernetesVersion: "one"\n', r"kubernetes version 'one' is not a version"),
        ("cluster: x\n", r"facts\.yaml:1:1: cluster: unknown key"),
    ],
)
def test_bad_facts_are_located(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text(text)
    with pytest.raises(errors.ConfigError, match=pattern):
        configfiles.load_facts(str(path))
