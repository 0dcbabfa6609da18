"""Real keys and real tokens for the proxy's authentication tests, and a JWKS server.

Keys are made with ``cryptography``, tokens signed with PyJWT, as an identity provider does.
The JWKS endpoint is Python's own ``http.server`` serving a directory: a key set is a static
JSON document at a URL, which is all an identity provider's ``jwks_uri`` is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.agents.proxy.support import STARTED, free_port

ISSUER = "https://auth.example.test"
AUDIENCE = "orders-api"


class Key:
    def __init__(self, alg: str, kid: str) -> None:
        self.alg = alg
        self.kid = kid
        self.private: Any
        if alg == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algo: Any = jwt.algorithms.RSAAlgorithm
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            algo = jwt.algorithms.ECAlgorithm
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            algo = jwt.algorithms.OKPAlgorithm
        self.jwk: dict[str, Any] = {**algo.to_jwk(self.private.public_key(), as_dict=True)}
        self.jwk.update(kid=kid, use="sig")

    def public_pem(self) -> bytes:
        data: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return data

    def sign(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(kid: str, **claims: Any) -> str:
    """A token with ``alg: none`` and an empty signature."""
    header = _b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, **claims}
    return f"{header}.{_b64(json.dumps(body).encode())}."


def hmac_with_public_key(key: Key) -> str:
    """HS256 "signed" with the issuer's public key as the HMAC secret: the algorithm-confusion
    attack on verifiers that take the algorithm from the token."""
    header = _b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600}
    signing = f"{header}.{_b64(json.dumps(body).encode())}"
    mac = hmac.new(key.public_pem(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(mac)}"


def tampered(token: str) -> str:
    """The same signature over a payload that now says ``sub: admin``."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


class JwksServer:
    """``python -m http.server`` serving ``jwks.json`` from a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def publish(self, *keys: Key) -> None:
        path = self.root / "jwks.json"
        path.with_suffix(".tmp").write_text(json.dumps({"keys": [k.jwk for k in keys]}))
        path.with_suffix(".tmp").rename(path)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        STARTED.append(self.proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the JWKS server did not start in 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
