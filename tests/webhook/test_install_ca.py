"""``sidecarkit install --ca-dir``: the workload CA of ``sidecarkit ca`` rendered with the
webhook, as the same objects ``sidecarkit ca install`` prints, schema-valid and the same bytes
on every run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from sidecarkit import cli
from sidecarkit.webhook import certificates
from tests.security.support import init_ca
from tests.support import schema


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("install-ca")
    ca = init_ca(base / "ca")
    tls = base / "tls"
    webhook_ca = certificates.new_ca()
    certificates.write_pair(webhook_ca, tls, stem="ca")
    names = certificates.dns_names("sidecarkit-webhook", "sidecarkit-system")
    pair = certificates.issue(webhook_ca, names=names, days=365)
    certificates.write_pair(pair, tls, stem="tls")
    return ca, tls


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in YAML(typ="safe").load_all(text) if doc]


def test_install_with_the_ca_prints_what_ca_install_prints_in_its_own_namespace(
    dirs: tuple[Path, Path],
) -> None:
    ca, tls = dirs
    code, text, err = _run(
        "install", "--tls-dir", str(tls), "--ca-dir", str(ca), "--ca-bundle-namespace", "shop"
    )
    assert code == 0, err
    objects = _objects(text)
    for obj in objects:
        schema.validate(obj)
    ca_objects = [o for o in objects if o["metadata"].get("name") == "sidecarkit-ca"]
    assert [o["kind"] for o in ca_objects] == [
        "ServiceAccount", "Secret", "Deployment", "Service",
    ]  # fmt: skip
    assert all(o["metadata"]["namespace"] == "sidecarkit" for o in ca_objects)
    spaces = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    assert spaces == ["sidecarkit-system", "sidecarkit"]
    ca_space = next(o for o in objects if o["kind"] == "Namespace" and o is not objects[0])
    assert ca_space["metadata"]["labels"]["sidecarkit.io/inject"] == "false"
    # The very objects of `sidecarkit ca install`, byte for byte, in the same stream.
    code, alone, err = _run(
        "ca", "install", "--dir", str(ca), "--namespace", "sidecarkit", "--bundle-namespace", "shop"
    )
    assert code == 0, err
    assert alone in text
    assert objects[-1]["kind"] == "MutatingWebhookConfiguration"
    root_key = (ca / "root.key").read_text()
    assert re.sub(r"\s", "", root_key)[30:60] not in re.sub(r"\s", "", text)


def test_install_with_the_ca_prints_the_same_bytes_every_time(dirs: tuple[Path, Path]) -> None:
    ca, tls = dirs
    args = ("install", "--tls-dir", str(tls), "--ca-dir", str(ca))
    first, second = _run(*args), _run(*args)
    assert first[0] == 0, first[2]
    assert first == second


def test_the_ca_in_the_webhooks_namespace_adds_no_second_namespace(
    dirs: tuple[Path, Path],
) -> None:
    ca, tls = dirs
    code, text, err = _run(
        "install", "--tls-dir", str(tls), "--ca-dir", str(ca),
        "--ca-namespace", "sidecarkit-system",
    )  # fmt: skip
    assert code == 0, err
    objects = _objects(text)
    assert [o["kind"] for o in objects].count("Namespace") == 1
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "sidecarkit-ca"
    )
    assert deployment["metadata"]["namespace"] == "sidecarkit-system"


def test_a_missing_ca_directory_is_an_error_naming_it_and_ca_init(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, tls = dirs
    code, text, err = _run("install", "--tls-dir", str(tls), "--ca-dir", str(tmp_path / "none"))
    assert code != 0
    assert text == ""
    assert str(tmp_path / "none") in err
    assert "sidecarkit ca init" in err
    assert "Traceback" not in err


def test_url_mode_prints_the_cas_namespace_since_no_webhook_namespace_is_printed(
    dirs: tuple[Path, Path],
) -> None:
    ca, tls = dirs
    code, text, err = _run(
        "install", "--url", "https://192.0.2.7:8443", "--tls-dir", str(tls),
        "--ca-dir", str(ca), "--ca-namespace", "sidecarkit-system",
    )  # fmt: skip
    assert code == 0, err
    kinds = [o["kind"] for o in _objects(text)]
    assert kinds[0] == "Namespace"
    assert "Deployment" in kinds
    assert kinds[-1] == "MutatingWebhookConfiguration"
