"""The manifests ``sidecarkit install`` prints: everything the webhook needs in a cluster.

Two webhooks in one MutatingWebhookConfiguration carry the opt-in rule in their selectors, so
the API server never sends a pod that did not opt in:

- ``object.sidecarkit.io`` (path ``/inject``): pods labelled ``sidecarkit.io/inject: "true"``
  in namespaces that carry no ``sidecarkit.io/inject`` label;
- ``namespace.sidecarkit.io`` (path ``/inject/namespace``): pods not labelled ``"false"`` in
  namespaces labelled ``"true"``.

A namespace labelled ``"false"`` matches neither. Our own namespace and the system ones are
excluded by name. Because only opted-in pods are sent, ``failurePolicy: Fail`` is safe: an
outage blocks only pods that would otherwise start without the sidecars they asked for.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

from sidecarkit.injection import policy

__all__ = ["Install", "namespace_object", "render", "with_ca"]

NAME: Final = "sidecarkit-webhook"
TLS_SECRET: Final = "sidecarkit-webhook-tls"
CA_SECRET: Final = "sidecarkit-webhook-ca"
"""The CA's certificate and key: mounted by nothing, read by the next ``install`` to keep it."""
PORT: Final = 8443
CONFIG_MAP: Final = "sidecarkit-config"
SYSTEM_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")
Json = Any


@dataclass(frozen=True, slots=True)
class Install:
    """What to install; the CLI maps its options one to one onto these."""

    image: str
    """Image of the webhook (the one sidecarkit image)."""
    namespace: str = "sidecarkit-system"
    """Namespace the webhook runs in; excluded from injection."""
    config_yaml: str = ""
    """Injection config for the ConfigMap; empty means the built-in profiles."""
    cert_manager: bool = False
    """Let cert-manager issue the certificate and inject the CA bundle."""
    ca_pem: bytes = b""
    """CA certificate for ``caBundle`` (without cert-manager)."""
    tls_cert_pem: bytes = b""
    """Serving certificate for the Secret (without cert-manager)."""
    tls_key_pem: bytes = b""
    """Its key (without cert-manager)."""
    ca_key_pem: bytes = b""
    """The CA's key, kept in its own Secret so the next install can renew the serving pair."""
    url: str = ""
    """Where the API server reaches a webhook running outside the cluster: then only the
    MutatingWebhookConfiguration is printed, with ``clientConfig.url`` (``/inject`` and
    ``/inject/namespace`` appended) and the ``caBundle``."""
    priority_class: str = ""
    """priorityClassName of the webhook's pods; empty: the cluster's default."""
    apiserver_cidrs: tuple[str, ...] = ()
    """Where the API server's calls come from; given, a NetworkPolicy admits only them."""
    replicas: int = 2
    """Webhook replicas; with Fail policy, more than one keeps pod creation going."""
    namespace_lookup: bool = False
    """Read namespace labels from the API server; adds the RBAC for it."""
    timeout_seconds: int = 5
    """How long the API server waits for an answer (1-30); injection takes milliseconds."""


def _labels(component: str = "webhook") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "sidecarkit",
    }


def _meta(name: str, namespace: str | None = None, **extra: Json) -> Json:
    meta: dict[str, Json] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = _labels()
    meta.update(extra)
    return meta


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def namespace_object(name: str) -> Json:
    """A namespace of sidecarkit's own: never injected, and held to the *restricted* Pod
    Security Standard, which everything sidecarkit runs passes."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **_labels(),
                policy.INJECT_LABEL: "false",
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }


def with_ca(objects: list[Json], ca_objects: list[Json], *, webhook_namespace: str) -> list[Json]:
    """The webhook's objects with the workload CA's (``security.installing.render``) before the
    MutatingWebhookConfiguration, which stays last; with the CA's namespace first when it is
    not the webhook's."""
    spaces = {o["metadata"]["namespace"] for o in ca_objects if o["kind"] == "Deployment"}
    added = [namespace_object(ns) for ns in sorted(spaces - {webhook_namespace})]
    return [*objects[:-1], *added, *ca_objects, *objects[-1:]]


def render(spec: Install) -> list[Json]:
    """Every object, in the order ``kubectl apply`` should create them."""
    ns = spec.namespace
    if spec.url:
        return [_webhook_configuration(spec)]
    objects: list[Json] = [
        namespace_object(ns),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(NAME, ns),
            "automountServiceAccountToken": spec.namespace_lookup,
        },
    ]
    if spec.namespace_lookup:
        objects += _rbac(ns)
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(CONFIG_MAP, ns),
            "data": {"config.yaml": spec.config_yaml or _DEFAULT_CONFIG},
        }
    )
    if spec.cert_manager:
        objects += _cert_manager(ns)
    else:
        if spec.ca_key_pem:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": _meta(CA_SECRET, ns),
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": _b64(spec.ca_pem), "tls.key": _b64(spec.ca_key_pem)},
                }
            )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(TLS_SECRET, ns),
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": _b64(spec.tls_cert_pem),
                    "tls.key": _b64(spec.tls_key_pem),
                    "ca.crt": _b64(spec.ca_pem),
                },
            }
        )
    objects += [
        _deployment(spec),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(NAME, ns),
            # One replica may always go, even when it is the only one: a budget that blocks
            # a drain blocks node upgrades, and an unready pod never blocks one either.
            "spec": {
                "maxUnavailable": 1,
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
                "selector": {"matchLabels": _selector()},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(NAME, ns),
            "spec": {
                "selector": _selector(),
                "ports": [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}],
            },
        },
    ]
    if spec.apiserver_cidrs:
        objects.append(_network_policy(spec))
    objects.append(_webhook_configuration(spec))
    return objects


def _network_policy(spec: Install) -> Json:
    """Only the API server may reach the webhook port (kubelet probes come from the node,
    which network plugins let through to its own pods)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(NAME, spec.namespace),
        "spec": {
            "podSelector": {"matchLabels": _selector()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": cidr}} for cidr in spec.apiserver_cidrs],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    }


_DEFAULT_CONFIG: Final = (
    "# sidecarkit injection config: see docs/injection.md\n"
    "apiVersion: sidecarkit.io/v1alpha1\nkind: InjectionConfig\nmode: native\n"
    "defaultProfiles: [logs, metrics]\n"
)


def _selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME}


def _rbac(ns: str) -> list[Json]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(f"{NAME}-namespace-reader"),
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(f"{NAME}-namespace-reader"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{NAME}-namespace-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}],
        },
    ]


def _cert_manager(ns: str) -> list[Json]:
    """A CA of our own issued by a self-signed Issuer, a CA Issuer on it, and the serving
    certificate from that: renewing the serving certificate keeps the CA, so the caBundle
    cert-manager injects stays valid across renewals (a self-signed leaf would change it)."""
    key = {"algorithm": "ECDSA", "size": 256}
    return [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": _meta(f"{NAME}-selfsigned", ns),
            "spec": {"selfSigned": {}},
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": _meta(CA_SECRET, ns),
            "spec": {
                "isCA": True,
                "commonName": "sidecarkit-webhook-ca",
                "secretName": CA_SECRET,
                "duration": "87600h",
                "renewBefore": "720h",
                "privateKey": {**key, "rotationPolicy": "Never"},
                "issuerRef": {"kind": "Issuer", "name": f"{NAME}-selfsigned"},
            },
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": _meta(f"{NAME}-ca", ns),
            "spec": {"ca": {"secretName": CA_SECRET}},
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": _meta(NAME, ns),
            "spec": {
                "secretName": TLS_SECRET,
                "dnsNames": [f"{NAME}.{ns}.svc", f"{NAME}.{ns}.svc.cluster.local"],
                "duration": "2160h",
                "renewBefore": "720h",
                "privateKey": {**key, "rotationPolicy": "Always"},
                "issuerRef": {"kind": "Issuer", "name": f"{NAME}-ca"},
            },
        },
    ]


def _deployment(spec: Install) -> Json:
    probe = {"httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"}}
    container = {
        "name": "webhook",
        "image": spec.image,
        "command": [
            "sidecarkit",
            "webhook",
            "--config",
            "/etc/sidecarkit/config/config.yaml",
            "--tls-cert",
            "/etc/sidecarkit/tls/tls.crt",
            "--tls-key",
            "/etc/sidecarkit/tls/tls.key",
            "--shutdown-delay",
            "5s",
            "--grace",
            "15s",
            *(["--namespace-lookup"] if spec.namespace_lookup else []),
        ],
        "ports": [{"name": "https", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            # The main process, and under huge pods the worker that decides them.
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/sidecarkit/config", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/sidecarkit/tls", "readOnly": True},
            # The worker process for large reviews starts through a socket in /tmp.
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod: dict[str, Json] = {
        "serviceAccountName": NAME,
        "automountServiceAccountToken": spec.namespace_lookup,
    }
    if spec.priority_class:
        pod["priorityClassName"] = spec.priority_class
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME, spec.namespace),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": _selector()},
            "template": {
                "metadata": {"labels": {**_labels(), policy.INJECT_LABEL: "false"}},
                "spec": {
                    **pod,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": _selector()},
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": CONFIG_MAP}},
                        {"name": "tls", "secret": {"secretName": TLS_SECRET}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }


def _webhook_configuration(spec: Install) -> Json:
    excluded = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": [spec.namespace, *SYSTEM_NAMESPACES],
    }

    def webhook(name: str, path: str, namespaces: Json, objects: Json) -> Json:
        client: dict[str, Json] = (
            {"url": spec.url + path}
            if spec.url
            else {"service": {"name": NAME, "namespace": spec.namespace, "path": path, "port": 443}}
        )
        if not spec.cert_manager:
            client["caBundle"] = _b64(spec.ca_pem)
        return {
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": client,
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                    "scope": "Namespaced",
                }
            ],
            "namespaceSelector": {"matchExpressions": [namespaces, excluded]},
            "objectSelector": {"matchExpressions": [objects]},
            "matchConditions": [
                {
                    # Mirror pods belong to the kubelet, which recreates them from its own files.
                    "name": "not-a-mirror-pod",
                    "expression": "!has(object.metadata.annotations) || "
                    "!('kubernetes.io/config.mirror' in object.metadata.annotations)",
                }
            ],
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": spec.timeout_seconds,
        }

    label = policy.INJECT_LABEL
    annotations = (
        {"cert-manager.io/inject-ca-from": f"{spec.namespace}/{NAME}"}
        if spec.cert_manager
        else None
    )
    metadata = _meta("sidecarkit")
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [
            webhook(
                "object.sidecarkit.io",
                "/inject",
                {"key": label, "operator": "NotIn", "values": ["true", "false"]},
                {"key": label, "operator": "In", "values": ["true"]},
            ),
            webhook(
                "namespace.sidecarkit.io",
                "/inject/namespace",
                {"key": label, "operator": "In", "values": ["true"]},
                {"key": label, "operator": "NotIn", "values": ["false"]},
            ),
        ],
    }
