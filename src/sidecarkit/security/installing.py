"""The CA in a cluster: the objects ``sidecarkit ca install`` prints.

A ServiceAccount bound to ``system:auth-delegator`` (what lets the CA create TokenReviews),
the Secret with the intermediate and the root certificate (never the root's key), a
Deployment running ``sidecarkit ca serve --token-review`` on that Secret, its Service, and a
ConfigMap with the trust bundle in every namespace whose pods use the ``mtls`` profile. Pure:
the command reads the files and prints the YAML.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["CA_PORT", "Install", "render"]

CA_PORT: Final = 15443
Json = Any

_RESTRICTED: Final[Json] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True, slots=True)
class Install:
    namespace: str
    image: str
    root_cert: bytes
    intermediate_cert: bytes
    intermediate_key: bytes
    trust_domain: str
    bundle_namespaces: tuple[str, ...] = ()
    replicas: int = 2
    ttl: str = "24h"
    audience: str = "sidecarkit-ca"
    name: str = "sidecarkit-ca"

    def __repr__(self) -> str:
        return f"Install({self.namespace}, {self.trust_domain}, key=<hidden>)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render(spec: Install) -> list[Json]:
    """Every object, in the order ``kubectl apply`` needs them."""
    name, ns = spec.name, spec.namespace
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "sidecarkit"}
    dns = [f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}", name]
    serve = [
        "sidecarkit", "ca", "serve", "--dir", "/etc/sidecarkit/ca", "--token-review",
        "--listen", f"0.0.0.0:{CA_PORT}", "--ttl", spec.ttl, "--audience", spec.audience,
    ]  # fmt: skip
    for host in dns:
        serve += ["--name", host]
    probe = {"httpGet": {"path": "/healthz", "port": CA_PORT, "scheme": "HTTPS"}}
    objects: list[Json] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": ns, "labels": labels}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{name}-{ns}-auth-delegator", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": {"sidecarkit.io/trust-domain": spec.trust_domain}},
            "type": "Opaque",
            "data": {
                "root.crt": _b64(spec.root_cert),
                "intermediate.crt": _b64(spec.intermediate_cert),
                "intermediate.key": _b64(spec.intermediate_key),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": spec.replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        # the key is readable by the group only: the container's, by fsGroup
                        "securityContext": {"fsGroup": 65532},
                        "containers": [{
                            "name": "ca",
                            "image": spec.image,
                            "command": serve,
                            "ports": [{"name": "https", "containerPort": CA_PORT}],
                            "readinessProbe": {**probe, "periodSeconds": 5},
                            "livenessProbe": {**probe, "periodSeconds": 10},
                            "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                                          "limits": {"memory": "256Mi"}},
                            "securityContext": _RESTRICTED,
                            "volumeMounts": [{"name": "ca", "mountPath": "/etc/sidecarkit/ca",
                                              "readOnly": True}],
                        }],
                        "volumes": [{"name": "ca", "secret": {"secretName": name,
                                                              "defaultMode": 0o440}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "selector": {"app.kubernetes.io/name": name},
                "ports": [{"name": "https", "port": CA_PORT, "targetPort": CA_PORT}],
            },
        },
    ]  # fmt: skip
    for bundle_ns in spec.bundle_namespaces:
        objects.append({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "sidecarkit-ca-bundle", "namespace": bundle_ns,
                         "labels": labels},
            "data": {"root.crt": spec.root_cert.decode("ascii")},
        })  # fmt: skip
    return objects
