"""SPIFFE IDs for Kubernetes workloads: ``spiffe://<trust-domain>/ns/<namespace>/sa/<account>``.

The shape is Istio's and Linkerd's, so policies and dashboards written for them read ours. An
ID is checked strictly (SPIFFE ID spec: lower-case trust domain of letters, digits, ``-._``;
path segments of letters, digits, ``-._``; no empty, ``.`` or ``..`` segment; no query,
fragment, port or user info) because it is compared byte for byte by authorization policies:
two spellings of one identity would be a hole.

No I/O here: certificates come in as ``cryptography`` objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # cryptography is loaded when a certificate is read, not by the settings
    from cryptography import x509

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "Identity",
    "check_trust_domain",
    "from_certificate",
    "from_service_account_user",
    "identity",
    "parse",
    "uris",
]

DEFAULT_TRUST_DOMAIN: Final = "cluster.local"
"""Istio's default, so a mesh that did not pick one reads the same IDs."""

_TRUST_DOMAIN: Final = re.compile(r"^[a-z0-9._-]{1,255}$")
_SEGMENT: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
"""Namespaces and ServiceAccount names are DNS subdomains / labels in Kubernetes."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One workload's identity: a ServiceAccount in a namespace, in a trust domain."""

    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


def check_trust_domain(value: str, where: str) -> str:
    """``value`` when it is a valid trust domain, else ValueError naming ``where``."""
    if not _TRUST_DOMAIN.match(value) or value.strip(".") != value:
        raise ValueError(
            f"{where}: {value!r} is not a trust domain; use lower-case letters, digits, '.', "
            "'-' and '_', such as cluster.local or prod.example.com"
        )
    return value


def _names(namespace: str, account: str, where: str) -> None:
    for kind, value in (("namespace", namespace), ("service account", account)):
        if not _DNS_LABEL.match(value):
            raise ValueError(
                f"{where}: {value!r} is not a Kubernetes {kind} name "
                "(lower-case letters, digits, '-' and '.')"
            )


def identity(
    trust_domain: str, namespace: str, account: str, *, where: str = "identity"
) -> Identity:
    """An ``Identity`` from its parts, each checked."""
    check_trust_domain(trust_domain, where)
    _names(namespace, account, where)
    return Identity(trust_domain, namespace, account)


def parse(uri: str, *, where: str = "SPIFFE ID") -> Identity:
    """The identity in a ``spiffe://td/ns/<ns>/sa/<sa>`` URI; ValueError names ``where``."""
    prefix = "spiffe://"
    if not uri.startswith(prefix):
        raise ValueError(f"{where}: {uri!r} is not a SPIFFE ID; it must start with spiffe://")
    rest = uri[len(prefix) :]
    domain, slash, path = rest.partition("/")
    if not slash or any(c in rest for c in "?#@:%"):
        raise ValueError(
            f"{where}: {uri!r} is not a workload SPIFFE ID; write "
            "spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT"
        )
    check_trust_domain(domain, where)
    parts = path.split("/")
    if (
        len(parts) != 4
        or parts[0] != "ns"
        or parts[2] != "sa"
        or not all(_SEGMENT.match(p) and p not in (".", "..") for p in parts)
    ):
        raise ValueError(
            f"{where}: {uri!r} names no workload; write "
            "spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT"
        )
    _names(parts[1], parts[3], where)
    return Identity(domain, parts[1], parts[3])


def from_service_account_user(username: str, trust_domain: str) -> Identity | None:
    """The identity of a TokenReview's ``system:serviceaccount:<ns>:<sa>`` user, else None
    (a person's or a node's token proves no workload identity)."""
    parts = username.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        return None
    try:
        return identity(trust_domain, parts[2], parts[3], where="TokenReview user")
    except ValueError:
        return None


def uris(cert: x509.Certificate) -> list[str]:
    """The URI SANs of ``cert`` (none when it has no SAN extension)."""
    from cryptography import x509  # noqa: PLC0415

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def from_certificate(cert: x509.Certificate) -> Identity | None:
    """The one SPIFFE ID in ``cert``'s URI SAN, or None when it has none, several, or a
    malformed one (the SPIFFE X.509-SVID spec allows exactly one)."""
    found = [u for u in uris(cert) if u.startswith("spiffe://")]
    if len(found) != 1:
        return None
    try:
        return parse(found[0])
    except ValueError:
        return None
