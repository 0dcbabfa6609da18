"""A CA and a serving certificate for the webhook's Service, and reading their expiry.

``sidecarkit certs`` writes ``ca.crt``, ``ca.key``, ``tls.crt`` and ``tls.key``. Rotation keeps
the CA and reissues the serving pair (``--ca-dir``), so the ``caBundle`` in the webhook
configuration stays valid; the server picks the new files up without a restart. Keys are ECDSA
P-256; the serving certificate names the Service in every form the API server may dial.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecarkit import errors
from sidecarkit.security import authority, contexts

__all__ = [
    "Pair",
    "dns_names",
    "expiry",
    "issue",
    "load_into",
    "new_ca",
    "read_pair",
    "write_pair",
]


@dataclass(frozen=True, slots=True)
class Pair:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes


def dns_names(service: str, namespace: str) -> list[str]:
    """Every name the API server may use for ``service`` in ``namespace``."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_ca(*, common_name: str = "sidecarkit-webhook-ca", days: int = 3650) -> Pair:
    """A self-signed CA that signs serving certificates, and nothing else."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue(ca: Pair, *, names: list[str], days: int = 365) -> Pair:
    """A serving certificate for ``names`` (DNS names or IP addresses), signed by ``ca``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise errors.ConfigError(
            "the CA key is not an ECDSA key; give the one `sidecarkit certs` made"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def expiry(cert_pem: bytes) -> float:
    """When the first certificate in ``cert_pem`` expires, as a Unix timestamp."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def write_pair(pair: Pair, directory: Path, *, stem: str) -> None:
    """Write ``<stem>.crt`` and ``<stem>.key`` atomically (rename), key readable by owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    for suffix, data, mode in ((".key", pair.key, 0o600), (".crt", pair.cert, 0o644)):
        final = directory / f"{stem}{suffix}"
        temp = directory / f".{stem}{suffix}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, final)


def read_pair(directory: Path, *, stem: str) -> Pair:
    try:
        return Pair(
            (directory / f"{stem}.crt").read_bytes(), (directory / f"{stem}.key").read_bytes()
        )
    except OSError as exc:
        raise errors.ConfigError(
            f"cannot read {directory}/{stem}.crt and .key: {exc.strerror}; "
            "run `sidecarkit certs` to make them"
        ) from exc


def load_into(context: ssl.SSLContext, pair: Pair) -> None:
    """Load ``pair`` (bytes read once, together) into ``context``, or raise and leave it be.

    ``load_cert_chain`` reads files, and reading the watched paths again would race a rotation:
    the check could pass on one generation and the live context take the next one's certificate
    with the previous key. So the pair is checked and loaded from the very bytes that were read
    (``contexts.load_pair``, which the proxy uses for the same reason).
    """
    contexts.load_pair(context, authority.Pair(pair.cert, pair.key))
