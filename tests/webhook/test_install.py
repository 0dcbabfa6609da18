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
from sidecarkit.webhook import certificates
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
    secret = _of_kind(objects, "Secret", "sidecarkit-webhook-tls")
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


def _install_text(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(cli.cli, ["install", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


def _of_kind(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"]))


def _tls_dir(directory: Path, *, days: int, with_ca_key: bool = True) -> certificates.Pair:
    ca = certificates.new_ca()
    certificates.write_pair(ca, directory, stem="ca")
    if not with_ca_key:
        (directory / "ca.key").unlink()
    names = certificates.dns_names("sidecarkit-webhook", "sidecarkit-system")
    certificates.write_pair(certificates.issue(ca, names=names, days=days), directory, stem="tls")
    return ca


def test_install_keeps_the_ca_and_prints_the_same_bytes_again(tmp_path: Path) -> None:
    ca = _tls_dir(tmp_path / "tls", days=365)
    first, _ = _install_text("--tls-dir", str(tmp_path / "tls"))
    saved = tmp_path / "installed.yaml"
    saved.write_text(first)
    again, _ = _install_text("--keep-certs", str(saved))
    assert again == first, "an install from its own output must not drift"
    assert _install_text("--keep-certs", str(saved))[0] == first
    objects = [pods.plain(d.data) for d in manifests.load_stream(first, source="install")]
    config = _of_kind(objects, "MutatingWebhookConfiguration")
    assert base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]) == ca.cert
    ca_secret = _of_kind(objects, "Secret", "sidecarkit-webhook-ca")
    assert base64.b64decode(ca_secret["data"]["tls.key"]) == ca.key
    schema.validate(ca_secret)


def test_a_serving_certificate_near_expiry_is_renewed_from_the_kept_ca(tmp_path: Path) -> None:
    ca = _tls_dir(tmp_path / "tls", days=10)
    old = (tmp_path / "tls" / "tls.crt").read_bytes()
    text, stderr = _install_text("--tls-dir", str(tmp_path / "tls"))
    assert "issued a new serving certificate" in stderr
    objects = [pods.plain(d.data) for d in manifests.load_stream(text, source="install")]
    secret = _of_kind(objects, "Secret", "sidecarkit-webhook-tls")
    new = base64.b64decode(secret["data"]["tls.crt"])
    assert new != old
    cert = x509.load_pem_x509_certificate(new)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert))
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 300
    config = _of_kind(objects, "MutatingWebhookConfiguration")
    assert base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]) == ca.cert


def test_renewal_without_the_ca_key_is_an_error_that_says_what_to_give(tmp_path: Path) -> None:
    _tls_dir(tmp_path / "tls", days=10, with_ca_key=False)
    result = CliRunner().invoke(cli.cli, ["install", "--tls-dir", str(tmp_path / "tls")])
    assert result.exit_code != 0
    assert "expires" in result.stderr
    assert "ca.key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("replicas", ["1", "2"])
def test_the_disruption_budget_never_blocks_a_drain(replicas: str) -> None:
    budget = _of_kind(_install("--replicas", replicas), "PodDisruptionBudget")
    assert "minAvailable" not in budget["spec"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_a_network_policy_admits_only_the_api_server_to_the_webhook_port() -> None:
    assert not [o for o in _install() if o["kind"] == "NetworkPolicy"]
    objects = _install("--apiserver-cidr", "10.0.0.10/32", "--apiserver-cidr", "10.0.0.11/32")
    policy_ = _of_kind(objects, "NetworkPolicy")
    schema.validate(policy_)
    deployment = _of_kind(objects, "Deployment")
    assert policy_["spec"]["podSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy_["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy_["spec"]["ingress"]
    assert rule["from"] == [
        {"ipBlock": {"cidr": "10.0.0.10/32"}},
        {"ipBlock": {"cidr": "10.0.0.11/32"}},
    ]
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]


def test_a_priority_class_can_be_given() -> None:
    deployment = _of_kind(_install("--priority-class", "system-cluster-critical"), "Deployment")
    schema.validate(deployment)
    assert deployment["spec"]["template"]["spec"]["priorityClassName"] == (
        "system-cluster-critical"
    )
    assert "priorityClassName" not in _of_kind(_install(), "Deployment")["spec"]["template"]["spec"]


def test_cert_manager_issues_the_serving_certificate_from_a_ca_issuer() -> None:
    objects = _install("--cert-manager")
    serving = _of_kind(objects, "Certificate", "sidecarkit-webhook")
    issuer = _of_kind(objects, "Issuer", serving["spec"]["issuerRef"]["name"])
    assert "selfSigned" not in issuer["spec"]
    ca_secret = issuer["spec"]["ca"]["secretName"]
    ca = next(
        o for o in objects if o["kind"] == "Certificate" and o["spec"]["secretName"] == ca_secret
    )
    assert ca["spec"]["isCA"] is True
    assert "selfSigned" in _of_kind(objects, "Issuer", ca["spec"]["issuerRef"]["name"])["spec"]
    config = _of_kind(objects, "MutatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "sidecarkit-system/sidecarkit-webhook"
    )


def test_url_mode_prints_only_the_webhook_configuration_with_the_url(tmp_path: Path) -> None:
    ca = _tls_dir(tmp_path / "tls", days=365)
    objects = _install("--url", "https://127.0.0.1:8443/", "--tls-dir", str(tmp_path / "tls"))
    (config,) = objects
    schema.validate(config)
    paths = {}
    for webhook in config["webhooks"]:
        client = webhook["clientConfig"]
        assert "service" not in client
        assert base64.b64decode(client["caBundle"]) == ca.cert
        paths[webhook["name"]] = client["url"]
    assert paths == {
        "object.sidecarkit.io": "https://127.0.0.1:8443/inject",
        "namespace.sidecarkit.io": "https://127.0.0.1:8443/inject/namespace",
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "https://127.0.0.1:8443"], "--tls-dir"),
        (["--url", "http://127.0.0.1:8443", "--tls-dir", "TLS"], "https://"),
        (["--url", "https://127.0.0.1/x?y=1", "--tls-dir", "TLS"], "query"),
    ],
)
def test_url_mode_errors_say_what_to_fix(tmp_path: Path, args: list[str], says: str) -> None:
    _tls_dir(tmp_path / "tls", days=365)
    args = [str(tmp_path / "tls") if a == "TLS" else a for a in args]
    result = CliRunner().invoke(cli.cli, ["install", *args])
    assert result.exit_code != 0
    assert says in result.stderr
    assert "Traceback" not in result.stderr
