"""``sidecarkit install``: schema-valid in both modes, a stable shape, and selectors that
implement the opt-in rule exactly.

Set ``SIDECARKIT_REFRESH_GOLDEN=1`` to rewrite ``tests/webhook/install/*.yaml``.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509

from sidecarkit import cli
from sidecarkit.injection import Facts, policy
from sidecarkit.k8s import manifests
from tests.support import pods, schema

GOLDEN = Path(__file__).parent / "install"
MODES = {"self-signed": [], "cert-manager": ["--cert-manager"], "lookup": ["--namespace-lookup"]}


def _install(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli.cli, ["install", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return [pods.plain(d.data) for d in manifests.load_stream(result.stdout, source="install")]


@pytest.mark.parametrize("mode", list(MODES))
def test_every_object_validates_against_the_1_33_schema(mode: str) -> None:
    objects = _install(*MODES[mode])
    kinds = [o["kind"] for o in objects]
    for obj in objects:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            assert obj["kind"] in ("Issuer", "Certificate")
            assert obj["spec"], obj
            continue
        schema.validate(obj)
    for kind in (
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "MutatingWebhookConfiguration",
    ):
        assert kind in kinds
    assert ("ClusterRole" in kinds) == (mode == "lookup")
    assert ("Certificate" in kinds) == (mode == "cert-manager")
    assert ("Secret" in kinds) == (mode != "cert-manager")


def _normalised(objects: list[dict[str, Any]]) -> str:
    text = manifests.dump_objects(objects)
    return re.sub(r"[A-Za-z0-9+/]{60,}={0,2}", "<base64>", text)


@pytest.mark.parametrize("mode", list(MODES))
def test_the_shape_matches_the_golden_file(mode: str) -> None:
    text = _normalised(_install(*MODES[mode]))
    golden = GOLDEN / f"{mode}.yaml"
    if os.environ.get("SIDECARKIT_REFRESH_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_ca_bundle_verifies_the_serving_certificate() -> None:
    objects = _install()
    secret = next(o for o in objects if o["kind"] == "Secret")
    config = next(o for o in objects if o["kind"] == "MutatingWebhookConfiguration")
    ca = x509.load_pem_x509_certificate(
        base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])
    )
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "sidecarkit-webhook.sidecarkit-system.svc" in names.get_values_for_type(x509.DNSName)


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize(
    ("pod", "namespace"), list(itertools.product([None, "true", "false"], repeat=2))
)
def test_the_selectors_send_exactly_the_opted_in_pods(
    pod: str | None, namespace: str | None
) -> None:
    config = next(o for o in _install() if o["kind"] == "MutatingWebhookConfiguration")
    pod_labels = {} if pod is None else {policy.INJECT_LABEL: pod}
    ns_labels = {"kubernetes.io/metadata.name": "shop"} | (
        {} if namespace is None else {policy.INJECT_LABEL: namespace}
    )
    called = [
        w
        for w in config["webhooks"]
        if _matches(w["namespaceSelector"], ns_labels) and _matches(w["objectSelector"], pod_labels)
    ]
    opted_in = policy.opt_in(pod_labels, Facts(namespace_labels=ns_labels), target="Pod/x") is None
    assert len(called) == (1 if opted_in else 0)
    if called:
        path = called[0]["clientConfig"]["service"]["path"]
        facts_from_path = {policy.INJECT_LABEL: "true"} if path == "/inject/namespace" else {}
        assert (
            policy.opt_in(pod_labels, Facts(namespace_labels=facts_from_path), target="Pod/x")
            is None
        )


def test_system_namespaces_and_our_own_are_never_sent() -> None:
    config = next(
        o
        for o in _install("--namespace", "injector")
        if o["kind"] == "MutatingWebhookConfiguration"
    )
    for webhook in config["webhooks"]:
        for ns in ("injector", "kube-system"):
            labels = {"kubernetes.io/metadata.name": ns, policy.INJECT_LABEL: "true"}
            assert not _matches(webhook["namespaceSelector"], labels)
