"""End-user authentication: bearer JWTs and API keys, checked before the app sees a request.

A JWT is verified with PyJWT (signatures by ``cryptography``; nothing hand-written here):

1. The header's ``alg`` must be one of the issuer's ``algorithms``, which can only be
   public-key ones: ``none`` and every ``HS*`` are refused before a key is looked at, so a
   token "signed" with the public key as an HMAC secret (algorithm confusion) never gets to a
   verifier. The key must fit the algorithm too (``kty``, ``crv``, and its own ``alg`` when it
   names one): PyJWT binds a ``PyJWK`` to one algorithm and refuses a token claiming another.
2. The issuer is picked by the (not yet trusted) ``iss``; the key by ``kid`` from that
   issuer's key set. An unknown ``kid`` asks the shell to fetch the key set again (keys
   rotate) unless it did so in the last ``REFETCH_EVERY`` seconds; if the key is still
   missing, or the key set cannot be had, the token is refused and the log says why.
3. ``exp`` is required; ``exp``, ``nbf`` and ``iat`` are checked with ``clock_skew`` of
   leeway; ``iss`` must match and ``aud`` must name one of ``audiences`` (when given).

A verified token is cached by its SHA-256 until it expires (at most ``CACHE_SIZE`` tokens,
oldest out first), so a client sending the same token again costs a hash and a dict lookup,
not a signature check. The cache holds digests, never tokens.

API keys are compared against salted SHA-256 hashes from a file (``NAME sha256:SALT:HASH``
lines, hex), so the file, usually a mounted Secret, does not hold the keys themselves. API
keys are long random strings, not passwords: a slow password hash would buy nothing but
latency.

No network I/O here: key sets arrive through ``KeySet.load`` from the shell.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import jwt
import orjson

from sidecarkit.agents.proxy import policies

__all__ = ["CACHE_SIZE", "REFETCH_EVERY", "Authenticator", "KeyFile", "KeySet", "Outcome"]

CACHE_SIZE: Final = 10_000
REFETCH_EVERY: Final = 5.0
"""Seconds between key-set fetches caused by unknown ``kid`` values: a client sending random
``kid`` values must not turn the proxy into a load generator against the issuer."""

TRIES_WITHOUT_KID: Final = 4
"""Keys a token without ``kid`` is tried against: a large key set must not let one token cost
dozens of signature checks."""

OK: Final = 0
NONE: Final = 1
REFUSED: Final = 2
PENDING: Final = 3

_KTY: Final = {"RS": ("RSA",), "PS": ("RSA",), "ES": ("EC",), "Ed": ("OKP",)}
_CURVE: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_sha256: Final = hashlib.sha256
_SAFE: Final = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


class Outcome:
    """What authentication made of a request."""

    __slots__ = (
        "add", "error", "expires", "fields", "issuer", "kind", "reason", "strip", "subject",
    )  # fmt: skip

    def __init__(
        self,
        kind: int,
        *,
        reason: str = "",
        error: str = "invalid_token",
        subject: str = "",
        fields: tuple[tuple[bytes, bytes], ...] = (),
        strip: frozenset[bytes] = frozenset(),
        expires: float = 0.0,
        issuer: str = "",
    ) -> None:
        self.kind = kind
        self.reason = reason
        """For the log and the metrics: why a credential was refused."""
        self.error = error
        """The RFC 6750 error code for WWW-Authenticate."""
        self.subject = subject
        self.fields = fields
        """Fields for the app (verified claims, the API key's name), lower-case names."""
        self.add = b"".join(b"%s: %s\r\n" % pair for pair in fields)
        """The same as header lines."""
        self.strip = strip
        """Header names removed from what the client sent: the credential when not kept, and
        every name only the proxy may set (``Authenticator.always_strip``)."""
        self.expires = expires
        self.issuer = issuer


_NO_CREDENTIAL: Final = Outcome(NONE, reason="no credential", error="")


class KeySet:
    """One issuer's current keys, replaced whole by each good load; the last good set stays
    when a fetch fails."""

    __slots__ = ("error", "fetched", "keys", "loaded", "source", "wanted")

    def __init__(self, source: str) -> None:
        self.source = source
        self.keys: list[dict[str, Any]] = []
        self.loaded = False
        self.error = "not fetched yet"
        self.fetched = -1e9
        """Monotonic time of the last attempt (good or bad)."""
        self.wanted = False
        """An unknown ``kid`` was seen: the shell should fetch now."""

    def load(self, document: bytes, now: float) -> str:
        """Take a JWKS document; returns "" or what is wrong with it (the old keys stay)."""
        self.fetched = now
        try:
            data = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            self.error = f"{self.source}: not JSON: {exc}"
            return self.error
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            self.error = f'{self.source}: not a JWKS document ({{"keys": [...]}})'
            return self.error
        self.keys = [k for k in keys if k.get("use", "sig") == "sig" and k.get("kty") != "oct"]
        self.loaded = True
        self.error = ""
        return ""

    def failed(self, problem: str, now: float) -> None:
        self.fetched = now
        self.error = problem

    def find(self, kid: str | None, alg: str) -> tuple[list[jwt.PyJWK], str]:
        """The keys a token with ``kid`` and ``alg`` may be checked with, or why there is none."""
        family = _KTY.get(alg[:2], ())
        found = []
        wrong = ""
        for jwk in self.keys:
            if kid is not None and jwk.get("kid") != kid:
                continue
            if jwk.get("kty") not in family or _CURVE.get(alg, jwk.get("crv")) != jwk.get("crv"):
                wrong = f"key {kid!r} is a {jwk.get('kty')} key, not one for {alg}"
                continue
            if "alg" in jwk and jwk["alg"] != alg:
                wrong = f"key {kid!r} is for {jwk['alg']}, the token says {alg}"
                continue
            try:
                found.append(jwt.PyJWK(jwk, algorithm=alg))
            except jwt.PyJWTError as exc:
                wrong = f"key {kid!r} is unusable: {exc}"
        return found, wrong


class KeyFile:
    """API keys: ``NAME sha256:SALT:HASH`` lines (hex), ``#`` comments."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes, bytes]] = []

    def load(self, text: str, source: str) -> str:
        """Take the file's text; returns "" or the first bad line (the old keys stay)."""
        entries = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, digest = line.partition(" ")
            scheme, _, rest = digest.strip().partition(":")
            salt, _, hashed = rest.partition(":")
            try:
                entry = (name, bytes.fromhex(salt), bytes.fromhex(hashed))
            except ValueError:
                entry = ("", b"", b"")
            if scheme != "sha256" or not entry[0] or len(entry[2]) != 32 or not entry[1]:
                return (
                    f"{source}:{number}: expected NAME sha256:SALT:HASH in hex "
                    "(make one with: python -m sidecarkit.agents.proxy.tokens NAME)"
                )
            entries.append(entry)
        self.entries = entries
        return ""

    def name_of(self, key: bytes) -> str:
        """The name of ``key``, or "" when no entry matches (every entry is tried, so the time
        taken does not say which one came close)."""
        name = ""
        for entry_name, salt, hashed in self.entries:
            if hmac.compare_digest(hashlib.sha256(salt + key).digest(), hashed):
                name = entry_name
        return name


def hash_line(name: str, key: str, salt: bytes) -> str:
    """A key-file line for ``key`` under ``name``."""
    digest = hashlib.sha256(salt + key.encode()).hexdigest()
    return f"{name} sha256:{salt.hex()}:{digest}"


class Authenticator:
    """Checks the credentials of one request against the policy's ``authentication``."""

    def __init__(
        self,
        spec: policies.Authentication,
        *,
        keysets: Mapping[str, KeySet],
        keyfile: KeyFile | None,
        wall: Any = time.time,
    ) -> None:
        self.spec = spec
        self.providers = {p.issuer: p for p in spec.jwt}
        self.keysets = keysets
        self.keyfile = keyfile
        self.wall = wall
        self.cache: dict[bytes, Outcome] = {}
        self.key_cache: dict[bytes, str] = {}
        """API key digest -> name; cleared when the key file changes."""
        strip = {h.encode() for p in spec.jwt for _, h in p.claims_to_headers}
        if spec.api_keys is not None:
            strip.add(spec.api_keys.name_header.encode())
        self.always_strip = frozenset(strip)
        """Headers only the proxy may set: whatever a client sent in them is removed."""
        self.key_header = spec.api_keys.header.encode() if spec.api_keys else b""

    def authenticate(self, headers: Mapping[bytes, tuple[bytes, ...]]) -> Outcome:
        auth = headers.get(b"authorization", ())
        jwt_outcome = None
        if self.providers and auth:
            if len(auth) > 1:
                return Outcome(REFUSED, reason="more than one Authorization header",
                               error="invalid_request")  # fmt: skip
            scheme, _, token = auth[0].partition(b" ")
            if scheme.lower() == b"bearer":
                jwt_outcome = self._jwt(token.strip())
                if jwt_outcome.kind != OK:
                    return jwt_outcome
        key_outcome = None
        if self.keyfile is not None:
            keys = headers.get(self.key_header, ())
            if keys:
                key_outcome = self._api_key(keys)
                if key_outcome.kind != OK:
                    return key_outcome
        if jwt_outcome is None:
            return key_outcome or _NO_CREDENTIAL
        if key_outcome is None:
            return jwt_outcome
        return Outcome(
            OK,
            subject=jwt_outcome.subject,
            fields=jwt_outcome.fields + key_outcome.fields,
            strip=jwt_outcome.strip | key_outcome.strip,
            issuer=jwt_outcome.issuer,
        )

    def _api_key(self, keys: tuple[bytes, ...]) -> Outcome:
        if len(keys) > 1:
            return Outcome(REFUSED, reason="more than one API key header", error="invalid_request")
        assert self.keyfile is not None
        assert self.spec.api_keys is not None
        digest = hashlib.sha256(keys[0]).digest()
        name = self.key_cache.get(digest)
        if name is None:
            name = self.keyfile.name_of(keys[0])
            if not name:
                return Outcome(REFUSED, reason="unknown API key")
            if len(self.key_cache) >= CACHE_SIZE:
                self.key_cache.clear()
            self.key_cache[digest] = name
        header = self.spec.api_keys.name_header.encode()
        return Outcome(
            OK,
            subject=name,
            fields=((header, name.encode()),),
            strip=self.always_strip | {self.key_header},
        )

    def _jwt(self, token: bytes) -> Outcome:
        digest = _sha256(token).digest()
        now = self.wall()
        hit = self.cache.get(digest)
        if hit is not None:
            if hit.expires > now:
                return hit
            del self.cache[digest]
        outcome = self._verify(token, now, time.monotonic())
        if outcome.kind == OK:
            cache = self.cache
            if len(cache) >= CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[digest] = outcome
        return outcome

    def _verify(self, token: bytes, now: float, monotonic: float) -> Outcome:
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            return Outcome(REFUSED, reason=f"malformed token: {exc}")
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            return Outcome(REFUSED, reason="malformed token: alg or kid is not a string")
        if alg.lower() == "none":
            return Outcome(REFUSED, reason="alg none is refused")
        iss = claims.get("iss")
        provider = self.providers.get(iss) if isinstance(iss, str) else None
        if provider is None:
            return Outcome(REFUSED, reason=f"unknown issuer {str(iss)[:100]!r}")
        if alg not in provider.algorithms:
            why = " (a shared-secret algorithm)" if alg.startswith("HS") else ""
            return Outcome(REFUSED, reason=f"algorithm {alg[:20]!r} is not allowed{why}")
        keyset = self.keysets[provider.issuer]
        keys, wrong = keyset.find(kid, alg)
        if not keys:
            if wrong:
                return Outcome(REFUSED, reason=wrong)
            if monotonic - keyset.fetched >= REFETCH_EVERY:
                keyset.wanted = True
                return Outcome(PENDING, issuer=provider.issuer)
            state = f"key set unavailable: {keyset.error}" if keyset.error else "not in key set"
            return Outcome(REFUSED, reason=f"unknown kid {str(kid)[:100]!r}; {state}")
        problem = ""
        for key in keys[:TRIES_WITHOUT_KID]:  # with a kid there is one; without, a few at most
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=[alg],
                    audience=list(provider.audiences) or None,
                    issuer=provider.issuer,
                    leeway=provider.clock_skew,
                    options={"require": ["exp"], "verify_aud": bool(provider.audiences)},
                )
                break
            except jwt.PyJWTError as exc:
                problem = _why(exc)
        else:
            return Outcome(REFUSED, reason=problem)
        return self._accepted(provider, claims, now)

    def _accepted(
        self, provider: policies.JwtProvider, claims: dict[str, Any], now: float
    ) -> Outcome:
        add = []
        for claim, header in provider.claims_to_headers:
            if claim not in claims:
                continue
            value = claims[claim]
            if isinstance(value, str):
                text = value.encode()
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                text = ",".join(value).encode()
            else:
                text = orjson.dumps(value)
            if _SAFE.match(text):
                add.append((header.encode(), text))
        strip = self.always_strip | (
            frozenset() if provider.forward_token else frozenset((b"authorization",))
        )
        exp = float(claims["exp"])
        subject = claims.get("sub")
        return Outcome(
            OK,
            subject=subject if isinstance(subject, str) else "",
            fields=tuple(add),
            strip=strip,
            expires=min(exp + provider.clock_skew, now + 86400.0),
            issuer=provider.issuer,
        )


def _why(exc: Exception) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "expired (exp)"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return f"not yet valid ({exc})"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"wrong audience: {exc}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"wrong issuer: {exc}"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim: {exc}"
    return f"invalid token: {exc}"


if __name__ == "__main__":  # pragma: no cover - a helper for writing key files
    import os
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m sidecarkit.agents.proxy.tokens NAME < key  (prints a line)")
    print(hash_line(sys.argv[1], sys.stdin.read().strip(), os.urandom(16)))
