"""The workload's side of the CA: make a key, send a CSR with a token, keep what comes back.

The key is made in the sidecar's memory and never leaves it (Linkerd's and Istio's agents do
the same). The token is read from its file on every request, because a projected
ServiceAccount token is rotated by the kubelet. Blocking I/O (``urllib``): the proxy calls this
in a worker thread, once a certificate's half-life.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sidecarkit.security import authority, contexts, spiffe

__all__ = ["FetchError", "Issued", "fetch", "from_pair"]


class FetchError(Exception):
    """The CA could not be asked or refused; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A workload certificate in use: the pair to serve and when to renew it."""

    pair: authority.Pair
    identity: spiffe.Identity | None
    not_before: float
    not_after: float
    received: float
    """Unix times; ``received`` is when it came (``not_before`` is set back for clock skew)."""

    @property
    def renew_at(self) -> float:
        """Half-life, as Istio's and Linkerd's agents: a CA outage of up to half the lifetime
        (12 h for the default 24 h) passes unnoticed."""
        start = max(self.received, self.not_before)
        return start + (self.not_after - start) / 2


def from_pair(pair: authority.Pair) -> Issued:
    """What a pair read from files holds (the ``cert``/``key`` mode, a csi-driver's files)."""
    cert = contexts.check_pair(pair)
    return Issued(
        pair,
        spiffe.from_certificate(cert),
        cert.not_valid_before_utc.timestamp(),
        cert.not_valid_after_utc.timestamp(),
        time.time(),
    )


def fetch(url: str, token_file: Path, *, bundle: bytes, timeout: float = 10.0) -> Issued:
    """A new key and a certificate for it from the CA at ``url`` (verified against
    ``bundle``), proving identity with the token in ``token_file``."""
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise FetchError(f"cannot read the token file {token_file}: {exc}") from exc
    if not token:
        raise FetchError(f"the token file {token_file} is empty")
    key = authority.new_key()
    body = json.dumps({"csr": authority.new_csr(key).decode()}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/certificates",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cadata=bundle.decode("ascii", "replace"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            data = json.loads(answer.read(1 << 20))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read(4096)).get("error", "")
        except (ValueError, AttributeError):
            reason = ""
        raise FetchError(f"the CA at {url} refused ({exc.code}): {reason or exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot reach the CA at {url}: {exc}") from None
    chain = data.get("certificate_chain") if isinstance(data, dict) else None
    if not isinstance(chain, str):
        raise FetchError(f"the CA at {url} answered without a certificate_chain")
    pair = authority.Pair(chain.encode(), authority.pem_key(key))
    try:
        issued = from_pair(pair)
    except ssl.SSLError as exc:
        raise FetchError(f"the CA at {url} answered with an unusable certificate: {exc}") from None
    if issued.identity is None:
        raise FetchError(f"the CA at {url} answered with a certificate without a SPIFFE ID")
    return issued
