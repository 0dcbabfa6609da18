"""TLS contexts for the sidecar: termination, mTLS both ways, and the verified peer identity.

* Every context speaks TLS 1.2 and 1.3 only (older versions have known attacks and no client
  in a cluster needs them) with OpenSSL's default cipher list for those versions.
* Certificates are loaded from bytes read once (``load_pair``), never by re-opening the
  watched files: a rotation caught half way would otherwise pair one generation's certificate
  with the next one's key. Loading into a live context changes only the handshakes that come
  after it; connections already up keep the certificate they started with, so a rotation
  drops nothing.
* mTLS verifies the peer's chain against the trust bundle (not a host name: a pod IP has no
  name) and then its SPIFFE ID (``peer_identity``): one URI SAN, in our trust domain.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sidecarkit.security import authority, spiffe

__all__ = [
    "check_pair",
    "client_context",
    "load_bundle",
    "load_pair",
    "peer_identity",
    "server_context",
    "why",
]


def why(exc: BaseException) -> str:
    """An exception as a log line wants it: ``SSLError("x")`` prints as ``('x',)`` otherwise."""
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def server_context(*, alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    """A server context: TLS 1.2/1.3, ALPN, no client certificate asked (yet)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def client_context(bundle: bytes | None = None) -> ssl.SSLContext:
    """A client context for mTLS toward another sidecar: the chain is verified against
    ``bundle``; the host name is not checked (the SPIFFE ID is, after the handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    if bundle is not None:
        load_bundle(context, bundle)
    return context


def load_bundle(context: ssl.SSLContext, bundle: bytes) -> None:
    """Trust the CA certificates in ``bundle`` (PEM); ssl.SSLError when there are none."""
    try:
        context.load_verify_locations(cadata=bundle.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ssl.SSLError(f"the trust bundle is not PEM: {exc}") from exc


def check_pair(pair: authority.Pair) -> x509.Certificate:
    """The leaf of ``pair``, after checking that the key belongs to it."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert)
        key = serialization.load_pem_private_key(pair.key, password=None)
    except ValueError as exc:
        raise ssl.SSLError(f"certificate or key is not PEM: {exc}") from exc
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise ssl.SSLError("the key does not belong to the certificate (a rotation half done?)")
    return cert


def load_pair(context: ssl.SSLContext, pair: authority.Pair) -> x509.Certificate:
    """Load ``pair`` into ``context`` from memory, or raise ssl.SSLError and leave it be.

    ``load_cert_chain`` only reads files: the bytes go through an anonymous in-memory file
    (``memfd``), which also works on a read-only root filesystem and never puts the key on a
    disk. Returns the leaf certificate.
    """
    cert = check_pair(pair)
    data = pair.key + b"\n" + pair.cert
    try:
        fd = os.memfd_create("sidecarkit-tls", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux: a private temporary file
        with tempfile.NamedTemporaryFile(prefix="sidecarkit-tls-") as f:
            f.write(data)
            f.flush()
            context.load_cert_chain(f.name)
        return cert
    try:
        os.write(fd, data)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return cert


def peer_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None, trust_domain: str
) -> tuple[spiffe.Identity | None, bytes]:
    """The verified peer's SPIFFE identity and its certificate (DER), or (None, reason).

    Called after a handshake that verified the chain: this adds what chain verification does
    not check: exactly one SPIFFE ID, in ``trust_domain``.
    """
    der = None
    if ssl_object is not None:
        with contextlib.suppress(ValueError):
            der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None, b"no client certificate"
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None, b"an unreadable certificate"
    who = spiffe.from_certificate(cert)
    if who is None:
        return None, b"a certificate without one SPIFFE ID"
    if who.trust_domain != trust_domain:
        return None, b"an identity from trust domain %s" % who.trust_domain.encode()
    return who, der
