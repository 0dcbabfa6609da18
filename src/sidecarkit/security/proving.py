"""How a caller proves who it is to the CA: a bootstrap token, or a ServiceAccount token.

* **Bootstrap tokens** are for running outside a cluster (``sidecarkit run``, a laptop, CI):
  ``sidecarkit ca token`` makes a random token for one namespace/ServiceAccount and appends
  only its SHA-256 to the tokens file (``sha256:<hex> <namespace>/<account>`` a line), so the
  file the CA reads grants nothing to whoever reads it.
* **ServiceAccount tokens** are what a pod has: a projected token with the CA's audience is
  sent to the API server's TokenReview API, which says whether it is valid (signature, expiry,
  audience, and for bound tokens that the pod still exists) and whose it is
  (``system:serviceaccount:<ns>:<sa>``). The CA believes the API server, not the token's claims.

Both answer an ``Identity`` or a ``Refusal`` whose reason goes to the CA's log and the caller;
neither logs the token.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecarkit.security import spiffe

__all__ = [
    "BootstrapTokens",
    "Refusal",
    "TokenReviewer",
    "TokensFile",
    "hash_token",
    "token_line",
]


class Refusal(Exception):
    """The token proves nothing; the message says why (and never contains the token)."""


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_line(token: str, namespace: str, account: str) -> str:
    """The tokens file line that grants ``token`` the identity namespace/account."""
    return f"{hash_token(token)} {namespace}/{account}\n"


@dataclass(frozen=True, slots=True)
class BootstrapTokens:
    """Token hashes and the identities they prove, read from a tokens file."""

    trust_domain: str
    grants: tuple[tuple[str, spiffe.Identity], ...]

    @classmethod
    def read(cls, path: Path, trust_domain: str) -> BootstrapTokens:
        """The grants in ``path``; ValueError names the file, the line and the fix."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the tokens file {path}: {exc}") from exc
        grants = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            digest, _, who = line.partition(" ")
            namespace, slash, account = who.strip().partition("/")
            where = f"{path}:{number}"
            if not digest.startswith("sha256:") or len(digest) != 71 or not slash:
                raise ValueError(
                    f"{where}: write 'sha256:<64 hex digits> NAMESPACE/SERVICE-ACCOUNT'; "
                    "`sidecarkit ca token` writes such lines"
                )
            grants.append((digest, spiffe.identity(trust_domain, namespace, account, where=where)))
        return cls(trust_domain, tuple(grants))

    def prove(self, token: str) -> spiffe.Identity:
        digest = hash_token(token)
        found = None
        for known, who in self.grants:  # compare every one: no early exit to time
            if hmac.compare_digest(known, digest):
                found = who
        if found is None:
            raise Refusal("the bootstrap token is not in the tokens file")
        return found


class TokensFile:
    """A tokens file, re-read when it changes, so that ``sidecarkit ca token`` takes effect
    without restarting the CA. A file that became unreadable or invalid keeps the last good
    grants (and the reason is logged by the caller)."""

    def __init__(self, path: Path, trust_domain: str) -> None:
        self.path = path
        self.trust_domain = trust_domain
        try:
            self.stamp = self._stamp()
        except OSError as exc:
            raise ValueError(
                f"cannot read the tokens file {path}: {exc.strerror}; `sidecarkit ca token "
                f"--tokens {path}` makes it"
            ) from None
        self.tokens = BootstrapTokens.read(path, trust_domain)

    def _stamp(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> tuple[BootstrapTokens, str | None]:
        """The grants in force, and why a changed file was not taken (None when it was)."""
        try:
            stamp = self._stamp()
            if stamp != self.stamp:
                self.tokens = BootstrapTokens.read(self.path, self.trust_domain)
                self.stamp = stamp
        except (OSError, ValueError) as exc:
            return self.tokens, f"{exc}; keeping the tokens read before"
        return self.tokens, None


class TokenReviewer:
    """Checks ServiceAccount tokens with the API server's TokenReview API (lightkube)."""

    def __init__(self, client: Any, *, audience: str, trust_domain: str) -> None:
        self.client = client
        """A ``lightkube.AsyncClient`` whose user may create TokenReviews
        (``system:auth-delegator``)."""
        self.audience = audience
        self.trust_domain = trust_domain

    async def prove(self, token: str) -> spiffe.Identity:
        from lightkube import ApiError  # noqa: PLC0415 - only in cluster mode
        from lightkube.models.authentication_v1 import TokenReviewSpec  # noqa: PLC0415
        from lightkube.resources.authentication_v1 import TokenReview  # noqa: PLC0415

        review = TokenReview(spec=TokenReviewSpec(token=token, audiences=[self.audience]))
        try:
            answer = await self.client.create(review)
        except ApiError as exc:
            raise Refusal(f"the TokenReview API refused the review: {exc.status.message}") from None
        except Exception as exc:  # network: the caller may retry
            raise Refusal(
                f"the TokenReview API could not be reached: {type(exc).__name__}"
            ) from None
        status = answer.status
        if status is None or not status.authenticated:
            error = (status.error if status is not None else None) or "not authenticated"
            raise Refusal(f"the API server did not accept the token: {_no_token(error, token)}")
        if self.audience not in (status.audiences or []):
            raise Refusal(f"the token is not for audience {self.audience!r}")
        username = status.user.username if status.user is not None else ""
        who = spiffe.from_service_account_user(username or "", self.trust_domain)
        if who is None:
            raise Refusal(f"the token belongs to {username!r}, not to a ServiceAccount")
        return who


def _no_token(message: str, token: str) -> str:
    """An API server's error text, with the token cut out should it quote it."""
    return message.replace(token, "<token>") if token else message
