"""The certificates ``sidecarkit install`` prints: kept from the last run, renewed before expiry.

A new CA on every run would make GitOps show drift on each render and would invalidate the
``caBundle`` the API server holds. So ``install`` takes what it printed before (the two Secrets,
from a manifest file or ``kubectl get secret -o yaml``) or a ``sidecarkit certs`` directory, and:

- keeps the CA, so the ``caBundle`` stays the same bytes;
- keeps the serving certificate while it names the Service, was issued by that CA and is valid
  for longer than ``renew_before``; otherwise issues a new one from the kept CA (which needs
  the CA key), so the API server, which trusts the CA, never sees a failed handshake;
- keeps trusting other CAs found in the old bundle until they expire.

Same input, same bytes: nothing here reads the clock except to decide whether to renew.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import serialization

from sidecarkit import errors
from sidecarkit.k8s import manifests
from sidecarkit.webhook import certificates, installing

__all__ = ["Kept", "Prepared", "check_url", "from_directory", "from_manifests", "prepare"]


@dataclass(frozen=True, slots=True)
class Kept:
    """Certificates from an earlier install; ``key`` fields are empty where unknown."""

    ca: certificates.Pair
    serving: certificates.Pair | None
    bundle: bytes
    """The caBundle in use (may hold more CAs than ``ca``)."""
    source: str


@dataclass(frozen=True, slots=True)
class Prepared:
    ca: certificates.Pair
    serving: certificates.Pair
    bundle: bytes
    renewed: str | None = None
    """Why a new serving certificate was issued, for the user; None if kept or new."""


def _secret_data(obj: Mapping[str, Any], key: str, source: str) -> bytes:
    data = obj.get("data") or {}
    value = data.get(key) if isinstance(data, Mapping) else None
    if value is None:
        return b""
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        name = (obj.get("metadata") or {}).get("name")
        raise errors.ConfigError(
            f"{source}: Secret {name} data.{key} is not base64 ({exc}); "
            "give the Secret as `kubectl get secret -o yaml` prints it"
        ) from exc


def _objects(text: str, source: str) -> Iterable[Mapping[str, Any]]:
    try:
        documents = manifests.load_stream(text, source=source)
    except errors.ManifestError as exc:
        raise errors.ConfigError(str(exc)) from exc
    for document in documents:
        data = document.data
        if not isinstance(data, Mapping):
            continue
        if data.get("kind") == "List" and isinstance(data.get("items"), list):
            yield from (i for i in data["items"] if isinstance(i, Mapping))
        else:
            yield data


def from_manifests(path: Path) -> Kept:
    """The Secrets ``install`` printed, from ``path`` (its whole output will do)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {source}: {exc.strerror}") from exc
    secrets = {
        str((o.get("metadata") or {}).get("name")): o
        for o in _objects(text, source)
        if o.get("kind") == "Secret"
    }
    tls, ca = secrets.get(installing.TLS_SECRET), secrets.get(installing.CA_SECRET)
    if tls is None and ca is None:
        raise errors.ConfigError(
            f"{source}: no Secret {installing.TLS_SECRET} or {installing.CA_SECRET}; give the "
            f"output of an earlier `sidecarkit install`, or `kubectl get secret -n NAMESPACE "
            f"{installing.TLS_SECRET} {installing.CA_SECRET} -o yaml`"
        )
    bundle = _secret_data(tls, "ca.crt", source) if tls is not None else b""
    if ca is not None:
        ca_pair = certificates.Pair(
            _secret_data(ca, "tls.crt", source), _secret_data(ca, "tls.key", source)
        )
    else:
        ca_pair = certificates.Pair(_first_pem(bundle), b"")
    serving = None
    if tls is not None:
        serving = certificates.Pair(
            _secret_data(tls, "tls.crt", source), _secret_data(tls, "tls.key", source)
        )
    if not ca_pair.cert:
        raise errors.ConfigError(f"{source}: no CA certificate in the Secrets")
    return Kept(ca_pair, serving, bundle or ca_pair.cert, source)


def from_directory(directory: Path) -> Kept:
    """``ca.crt`` (and ``ca.key`` if there), ``tls.crt`` and ``tls.key`` from ``directory``."""

    def read(name: str, *, required: bool) -> bytes:
        try:
            return (directory / name).read_bytes()
        except FileNotFoundError:
            if required:
                raise errors.ConfigError(
                    f"{directory}/{name} is missing; make the directory with `sidecarkit certs`"
                ) from None
            return b""
        except OSError as exc:
            raise errors.ConfigError(f"cannot read {directory}/{name}: {exc.strerror}") from exc

    ca = certificates.Pair(read("ca.crt", required=True), read("ca.key", required=False))
    cert, key = read("tls.crt", required=False), read("tls.key", required=False)
    serving = certificates.Pair(cert, key) if cert and key else None
    return Kept(ca, serving, ca.cert, str(directory))


def _first_pem(bundle: bytes) -> bytes:
    marker = b"-----END CERTIFICATE-----"
    end = bundle.find(marker)
    return bundle[: end + len(marker)] + b"\n" if end >= 0 else b""


def _certs(pem: bytes, source: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise errors.ConfigError(f"{source}: not a PEM certificate ({exc})") from exc


def _renewal_reason(
    kept: Kept, names: list[str], now: datetime.datetime, renew_before: datetime.timedelta
) -> str | None:
    """Why the kept serving certificate cannot stay, or None if it can."""
    if kept.serving is None or not kept.serving.cert or not kept.serving.key:
        return "no serving certificate was kept"
    cert = _certs(kept.serving.cert, kept.source)[0]
    ca = _certs(kept.ca.cert, kept.source)[0]
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return "the serving certificate was not issued by the kept CA"
    expires = cert.not_valid_after_utc
    if expires - now < renew_before:
        return f"the serving certificate expires {expires:%Y-%m-%d}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the serving certificate names no Service"
    if not set(names) <= set(san.get_values_for_type(x509.DNSName)):
        return "the serving certificate does not name the Service in this namespace"
    return None


def prepare(
    kept: Kept | None,
    names: list[str],
    *,
    now: datetime.datetime | None = None,
    renew_before: datetime.timedelta = datetime.timedelta(days=30),
) -> Prepared:
    """The CA, serving pair and caBundle to print: kept where possible, else renewed or new."""
    if kept is None:
        ca = certificates.new_ca()
        return Prepared(ca, certificates.issue(ca, names=names), ca.cert)
    now = now or datetime.datetime.now(datetime.UTC)
    reason = _renewal_reason(kept, names, now, renew_before)
    bundle = _bundle(kept, now)
    if reason is None:
        assert kept.serving is not None
        return Prepared(kept.ca, kept.serving, bundle)
    if not kept.ca.key:
        raise errors.ConfigError(
            f"{kept.source}: {reason}, and the CA key is not there to issue a new one; give "
            f"the Secret {installing.CA_SECRET} (or ca.key in the --tls-dir directory)"
        )
    return Prepared(kept.ca, certificates.issue(kept.ca, names=names), bundle, reason)


def _bundle(kept: Kept, now: datetime.datetime) -> bytes:
    """The kept CA first, then any other CA of the old bundle that has not expired."""
    out = [kept.ca.cert.strip() + b"\n"]
    ca = _certs(kept.ca.cert, kept.source)[0]
    for cert in _certs(kept.bundle, kept.source) if kept.bundle else []:
        if cert != ca and cert.not_valid_after_utc > now:
            out.append(cert.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)


def check_url(url: str) -> str:
    """``url`` if the API server can call it (https, a host, no query, fragment or user)."""
    parts = urllib.parse.urlsplit(url)
    problem = None
    if parts.scheme != "https":
        problem = "must start with https://"
    elif not parts.hostname:
        problem = "names no host"
    elif parts.query or parts.fragment or parts.username or parts.password:
        problem = "may not carry a query, a fragment or user info"
    if problem:
        raise errors.ConfigError(
            f"--url {url!r} {problem}; the API server needs https://HOST[:PORT][/PATH], and "
            "the webhook's /inject and /inject/namespace are appended to it"
        )
    return url.rstrip("/")
