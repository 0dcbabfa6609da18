"""TLS settings of the proxy: its workload identity, mTLS per port, TLS termination.

In the YAML (``--config``)::

    identity:                          # this workload's certificate, for mTLS
      trust_bundle: /var/run/sidecarkit/ca/root.crt   # the mesh's root(s): required
      trust_domain: cluster.local
      ca: https://sidecarkit-ca.sidecarkit.svc:15443   # get it from `sidecarkit ca serve`,
      token: /var/run/secrets/sidecarkit/token         #   proving who we are with this token
      # cert: /etc/identity/tls.crt    # or: files someone else rotates (csi-driver), reloaded
      # key: /etc/identity/tls.key
    inbound:
      mtls: strict                     # off | permissive (plaintext too) | strict (mTLS only)
      tls:                             # or: terminate TLS for clients outside the mesh
        certificates:                  # the first is the default; SNI picks by the names
          - {cert: /etc/tls/a/tls.crt, key: /etc/tls/a/tls.key}   # in each certificate
        min_version: "1.2"             # or "1.3"
        alpn: [http/1.1]
    upstreams:
      - name: payments
        mtls: true                     # its endpoints have a sidecar: originate mTLS
        peer: spiffe://cluster.local/ns/shop/sa/payments   # and only to this identity

Pure: paths are checked for shape here and read by ``securing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sidecarkit.security import spiffe

__all__ = [
    "MTLS_MODES",
    "Certificate",
    "Identity",
    "Termination",
    "check",
    "identity_from",
    "identity_mapping",
    "termination_from",
    "termination_mapping",
]

MTLS_MODES: Final = ("off", "permissive", "strict")
"""As Istio's PeerAuthentication: ``permissive`` takes mTLS and plaintext on the port (the
way to migrate a namespace), ``strict`` refuses plaintext."""

_ALPN: Final = ("h2", "http/1.1", "http/1.0")
"""What the HTTP listeners speak; offering h2 would make clients speak a protocol we don't."""


@dataclass(frozen=True, slots=True)
class Identity:
    trust_bundle: str
    """PEM file of the trust anchors (the CA's ``root.crt``): peers and the CA are checked
    against it."""
    trust_domain: str = spiffe.DEFAULT_TRUST_DOMAIN
    """Peers must have a SPIFFE ID in this trust domain."""
    ca: str | None = None
    """``https://`` URL of ``sidecarkit ca serve``: the certificate is fetched at start and
    renewed at half-life."""
    token: str | None = None
    """The token file sent to the CA (a projected ServiceAccount token or a bootstrap one)."""
    cert: str | None = None
    """Instead of ``ca``: certificate chain file, reloaded when it changes."""
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Termination:
    certificates: tuple[Certificate, ...]
    """The first serves clients that send no SNI or a name no certificate has."""
    min_version: str = "1.2"
    """``1.2`` or ``1.3``; nothing older is ever spoken."""
    alpn: tuple[str, ...] = ("http/1.1",)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys, not {type(value).__name__}")
    return value


def _known(data: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise ValueError(f"{where}.{key}: unknown key; the keys here are {', '.join(allowed)}")


def _path(value: Any, where: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not text or isinstance(value, bool | int | float):
        raise ValueError(f"{where}: give the path of a file, such as /etc/tls/tls.crt")
    return text


def identity_from(data: Any, where: str = "identity") -> Identity:
    data = _mapping(data, where)
    _known(data, where, ("trust_bundle", "trust_domain", "ca", "token", "cert", "key"))
    if not data.get("trust_bundle"):
        raise ValueError(
            f"{where}.trust_bundle: missing; give the CA's root certificate file "
            "(root.crt from `sidecarkit ca init`)"
        )
    domain = spiffe.check_trust_domain(
        str(data.get("trust_domain", spiffe.DEFAULT_TRUST_DOMAIN)), f"{where}.trust_domain"
    )
    ca = data.get("ca")
    files = data.get("cert") is not None or data.get("key") is not None
    if bool(ca) == files:
        raise ValueError(
            f"{where}: give either ca: (a `sidecarkit ca serve` URL) with token:, "
            "or cert: and key: (files someone else rotates)"
        )
    if ca:
        if not str(ca).startswith("https://"):
            raise ValueError(f"{where}.ca: {ca!r} must be an https:// URL")
        return Identity(
            _path(data["trust_bundle"], f"{where}.trust_bundle"),
            domain,
            ca=str(ca).rstrip("/"),
            token=_path(data.get("token"), f"{where}.token"),
        )
    return Identity(
        _path(data["trust_bundle"], f"{where}.trust_bundle"),
        domain,
        cert=_path(data.get("cert"), f"{where}.cert"),
        key=_path(data.get("key"), f"{where}.key"),
    )


def mtls_mode(value: Any, where: str) -> str:
    mode = {True: "strict", False: "off"}.get(value, value) if isinstance(value, bool) else value
    mode = str(mode).strip().lower()
    if mode not in MTLS_MODES:
        raise ValueError(f"{where}: {value!r} is unknown; use one of {', '.join(MTLS_MODES)}")
    return mode


def peer_id(value: Any, where: str) -> str:
    return spiffe.parse(str(value), where=where).uri


def termination_from(data: Any, where: str) -> Termination:
    data = _mapping(data, where)
    _known(data, where, ("certificates", "min_version", "alpn"))
    items = data.get("certificates")
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(
            f"{where}.certificates: give a list of {{cert: FILE, key: FILE}}, the default first"
        )
    certificates = []
    for index, raw in enumerate(items):
        here = f"{where}.certificates[{index}]"
        item = _mapping(raw, here)
        _known(item, here, ("cert", "key"))
        certificates.append(
            Certificate(
                _path(item.get("cert"), f"{here}.cert"), _path(item.get("key"), f"{here}.key")
            )
        )
    version = str(data.get("min_version", "1.2")).strip()
    if version not in ("1.2", "1.3"):
        raise ValueError(
            f"{where}.min_version: {version!r}; use 1.2 or 1.3 (older is never spoken)"
        )
    alpn_value = data.get("alpn", ["http/1.1"])
    alpn = tuple(
        str(a) for a in (alpn_value if isinstance(alpn_value, list | tuple) else [alpn_value])
    )
    for name in alpn:
        if name not in _ALPN:
            raise ValueError(
                f"{where}.alpn: {name!r} is not spoken here; the proxy serves {', '.join(_ALPN)}"
            )
    return Termination(tuple(certificates), version, alpn)


def check(
    *,
    identity: Identity | None,
    inbound: tuple[str, Termination | None] | None,
    upstreams: list[tuple[str, bool]],
    where: str = "inbound",
) -> None:
    """What cannot work across keys: mTLS without a certificate, both mTLS and TLS on a port."""
    if inbound is not None and inbound[0] != "off":
        if identity is None:
            raise ValueError(
                f"{where}.mtls: {inbound[0]} needs this workload's certificate; give "
                "identity: (ca: and token:, or cert: and key:) or --identity-ca and "
                "--identity-token with --trust-bundle"
            )
        if inbound[1] is not None:
            raise ValueError(
                f"{where}: a port takes either mTLS from the mesh (mtls:) or TLS from outside "
                "clients (tls:); give one"
            )
    for name, mtls in upstreams:
        if mtls and identity is None:
            raise ValueError(
                f"upstreams[{name}].mtls: needs this workload's certificate; give identity:"
            )


def identity_mapping(identity: Identity) -> dict[str, Any]:
    return {
        key: value
        for key, value in (
            ("trust_bundle", identity.trust_bundle),
            ("trust_domain", identity.trust_domain),
            ("ca", identity.ca),
            ("token", identity.token),
            ("cert", identity.cert),
            ("key", identity.key),
        )
        if value is not None
    }


def termination_mapping(tls: Termination) -> dict[str, Any]:
    return {
        "certificates": [{"cert": c.cert, "key": c.key} for c in tls.certificates],
        "min_version": tls.min_version,
        "alpn": list(tls.alpn),
    }
