"""The CA's certificates: a root, an intermediate, and the short-lived workload certificates.

Two tiers, as Linkerd's trust anchor and issuer: the root signs only the intermediate and can
stay offline (its key is never needed by the running CA); the intermediate signs workload
certificates and can be replaced without touching the trust bundle every proxy holds. The
intermediate's ``path_length=0`` stops anything it signs from signing further.

A workload certificate carries exactly one URI SAN, the SPIFFE ID (X.509-SVID spec), is valid
for client and server authentication (it is both ends of mTLS), and never outlives the
intermediate. It is issued for the identity the caller *proved*: the CSR only contributes its
public key, and a CSR asking for another identity is refused, never silently rewritten.

Keys are ECDSA P-256: what Istio and Linkerd use, fast to sign and verify.
No I/O here: callers read and write the PEM bytes.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecarkit.security import spiffe

__all__ = [
    "Authority",
    "CsrError",
    "Pair",
    "issue_server",
    "issue_workload",
    "load_authority",
    "new_authority",
    "new_csr",
    "new_key",
    "pem_key",
]

_SKEW = datetime.timedelta(minutes=1)
"""Certificates start this long before they are made: a peer's clock a little behind ours
must not see a certificate from the future."""


class CsrError(ValueError):
    """A certificate signing request that cannot be signed; the message says why."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status the CA answers with: 403 for another identity, else 400."""


@dataclass(frozen=True, slots=True)
class Pair:
    """A certificate (PEM, possibly followed by its chain) and its private key (PEM)."""

    cert: bytes
    key: bytes

    def __repr__(self) -> str:  # never print a key, even by accident in a log line
        return f"Pair(cert={len(self.cert)} bytes, key=<hidden>)"


@dataclass(frozen=True, slots=True)
class Authority:
    """What the running CA holds: the intermediate's certificate and key, and the root's
    certificate (the trust bundle it hands out)."""

    trust_domain: str
    intermediate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    root: x509.Certificate

    def __repr__(self) -> str:
        return f"Authority({self.trust_domain}, key=<hidden>)"

    @property
    def bundle(self) -> bytes:
        """The trust anchors, PEM: what every proxy verifies peers against."""
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def chain(self) -> bytes:
        """The intermediate, PEM: sent after a leaf so that peers can reach the root."""
        return self.intermediate.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def new_authority(
    trust_domain: str,
    *,
    root_days: int = 3650,
    intermediate_days: int = 365,
) -> tuple[Pair, Pair]:
    """A new root and an intermediate signed by it, for ``trust_domain``: (root, intermediate).

    The root's subject names the trust domain so that an operator reading a chain sees which
    mesh it belongs to; both are CAs for SPIFFE IDs of that trust domain only (name constraint
    on URIs), so a leaked intermediate cannot mint identities another mesh would accept.
    """
    spiffe.check_trust_domain(trust_domain, "trust domain")
    now = _now()
    root_key = new_key()
    root_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
        x509.NameAttribute(NameOID.COMMON_NAME, "sidecarkit root CA"),
    ])  # fmt: skip
    constraint = x509.NameConstraints(
        permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)], excluded_subtrees=None
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + datetime.timedelta(days=root_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    key = new_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
        x509.NameAttribute(NameOID.COMMON_NAME, "sidecarkit intermediate CA"),
    ])  # fmt: skip
    end = min(now + datetime.timedelta(days=intermediate_days), root.not_valid_after_utc)
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(constraint, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        Pair(root.public_bytes(pem), pem_key(root_key)),
        Pair(intermediate.public_bytes(pem), pem_key(key)),
    )


def load_authority(intermediate: Pair, root_cert: bytes, *, source: str) -> Authority:
    """The running CA from PEM bytes; ValueError names ``source`` and what is wrong."""
    try:
        cert = x509.load_pem_x509_certificate(intermediate.cert)
        root = x509.load_pem_x509_certificate(root_cert)
        key = serialization.load_pem_private_key(intermediate.key, password=None)
    except ValueError as exc:
        raise ValueError(
            f"{source}: not a PEM certificate or key ({exc}); make them with `sidecarkit ca init`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{source}: the intermediate key is not ECDSA; use `sidecarkit ca init`")
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise ValueError(f"{source}: the intermediate key does not belong to its certificate")
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError(
            f"{source}: the intermediate was not signed by the root given; "
            "give the root.crt made with it"
        ) from None
    organization = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    domain = str(organization[0].value) if organization else ""
    spiffe.check_trust_domain(domain, f"{source}: the intermediate's organization")
    return Authority(domain, cert, key, root)


def new_csr(key: ec.EllipticCurvePrivateKey, identity: spiffe.Identity | None = None) -> bytes:
    """A CSR (PEM) for ``key``, asking for ``identity`` when given."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if identity is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _check_csr(csr_pem: bytes, proven: spiffe.Identity) -> x509.CertificateSigningRequest:
    """The CSR, if its signature, key and names are acceptable; CsrError says what is not.

    ``cryptography`` raises ValueError (and for some keys UnsupportedAlgorithm) from several
    accessors of a malformed CSR, not only from loading it: every one is a refusal here.
    """
    try:
        return _checked_csr(csr_pem, proven)
    except CsrError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"csr: cannot be read ({exc}); send a PEM CSR for an ECDSA key") from None


def _checked_csr(csr_pem: bytes, proven: spiffe.Identity) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CsrError("csr: not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CsrError("csr: the signature does not match its public key")
    public = csr.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise CsrError("csr: an RSA key must have at least 2048 bits; use ECDSA P-256")
    elif not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise CsrError("csr: the key must be ECDSA, Ed25519 or RSA")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return csr
    asked = [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    if any(u != proven.uri for u in asked) or len(san) != len(asked):
        raise CsrError(
            f"csr: asks for {', '.join(asked) or 'names other than a SPIFFE ID'}, but the token "
            f"proves {proven.uri}; ask for that identity or for none",
            status=403,
        )
    return csr


def issue_workload(
    authority: Authority, csr_pem: bytes, proven: spiffe.Identity, *, ttl: float
) -> bytes:
    """The certificate (PEM, followed by the intermediate) for ``proven``'s CSR.

    ``proven`` is the identity the caller's token proved; the CSR only brings the key. Its
    lifetime is ``ttl`` seconds, cut short to the intermediate's own end.
    """
    if proven.trust_domain != authority.trust_domain:
        raise CsrError(
            f"identity {proven.uri} is not in this CA's trust domain {authority.trust_domain}",
            status=403,
        )
    csr = _check_csr(csr_pem, proven)
    now = _now()
    end = min(now + datetime.timedelta(seconds=ttl), authority.intermediate.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(authority.intermediate.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(proven.uri)]),
            critical=True,  # RFC 5280 4.2.1.6: critical when the subject is empty
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), False
        )
        .sign(authority.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + authority.chain


def issue_server(authority: Authority, names: list[str], *, days: int = 30) -> Pair:
    """A serving certificate for the CA's own HTTPS endpoint (DNS names or IP addresses)."""
    key = new_key()
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = _now()
    end = min(now + datetime.timedelta(days=days), authority.intermediate.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(authority.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), False
        )
        .sign(authority.key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM) + authority.chain, pem_key(key))
