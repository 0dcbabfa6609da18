"""A changed ``authentication`` in the policy file applies without a restart: new issuers,
key set URLs and API key files are read first, and tokens cached under the old settings are
not accepted any more."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecarkit.agents.proxy import tokens
from tests.agents.proxy import jwts
from tests.agents.proxy.support import Backend, Proxy, request, start_backend, start_proxy

OTHER_ISSUER = "https://login.example.test"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


def _start(path: Path, app: Backend) -> Proxy:
    return start_proxy(
        "--policy", str(path), "--log-level", "info", inbound_app=app.address,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _replace(path: Path, text: str) -> None:
    """Replaced whole, as a ConfigMap's symlink swap does."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    fresh.rename(path)


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_new_issuers_key_urls_and_api_key_files_apply_and_removed_issuers_tokens_are_revoked(
    tmp_path: Path, app: Backend
) -> None:
    first, second = jwts.Key("RS256", "rsa-1"), jwts.Key("EdDSA", "ed-1")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [first.jwk]}))
    server = jwts.JwksServer(tmp_path / "jwks")
    server.publish(second)
    server.start()
    keyfile = tmp_path / "keys"
    keyfile.write_text(tokens.hash_line("ci-bot", "k-123", os.urandom(16)) + "\n")
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"authentication:\n  jwt:\n    - issuer: {jwts.ISSUER}\n      jwks_file: {jwks_file}\n"
    )
    proxy = _start(path, app)
    port = proxy.ports["inbound"]
    old = first.sign(sub="alice")
    assert request(port, "/echo", headers=_bearer(old))[0] == 200  # verified and cached
    assert request(port, "/echo", headers={"X-Api-Key": "k-123"})[0] == 401
    _replace(
        path,
        f"authentication:\n  realm: login\n  jwt:\n    - issuer: {OTHER_ISSUER}\n"
        f"      jwks_url: {server.url}\n      claims_to_headers: {{sub: x-user}}\n"
        f"  api_keys:\n    file: {keyfile}\n",
    )
    _until(
        lambda: request(port, "/echo", headers=_bearer(old))[0] == 401,
        "the removed issuer's cached token is still accepted",
    )
    status, _, body = request(port, "/echo", headers=_bearer(second.sign(iss=OTHER_ISSUER)))
    assert status == 200, body  # its key set was fetched from the new URL
    sent = [(k.lower(), v) for k, v in json.loads(body)["headers"]]
    assert ("x-user", "alice") in sent
    assert request(port, "/echo", headers={"X-Api-Key": "k-123"})[0] == 200
    status, headers, _ = request(port, "/echo")
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="login"')
    assert proxy.metric("policy_reloads_total", result="ok") == 1
    log = _log(proxy)
    server.stop()
    assert f"refused 401 authn: unknown issuer '{jwts.ISSUER}'" in log
    assert "authentication changed: 1 issuer(s) (0 kept with their keys), API keys on" in log
    assert "restart" not in log


def test_a_cached_token_is_checked_again_against_a_changed_audience(
    tmp_path: Path, app: Backend
) -> None:
    key = jwts.Key("ES256", "ec-1")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.jwk]}))
    provider = (
        f"authentication:\n  jwt:\n    - issuer: {jwts.ISSUER}\n      jwks_file: {jwks_file}\n"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(provider + f"      audiences: [{jwts.AUDIENCE}]\n")
    proxy = _start(path, app)
    port = proxy.ports["inbound"]
    token = key.sign()
    assert request(port, "/echo", headers=_bearer(token))[0] == 200
    _replace(path, provider + "      audiences: [billing-api]\n")
    _until(
        lambda: request(port, "/echo", headers=_bearer(token))[0] == 401,
        "a token for the old audience is still accepted from the cache",
    )
    assert request(port, "/echo", headers=_bearer(key.sign(aud="billing-api")))[0] == 200
    log = _log(proxy)
    assert "authentication changed: 1 issuer(s) (1 kept with their keys)" in log
    assert "refused 401 authn: wrong audience" in log


def test_authentication_added_to_a_running_policy_is_enforced(tmp_path: Path, app: Backend) -> None:
    key = jwts.Key("RS256", "rsa-1")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.jwk]}))
    path = tmp_path / "policy.yaml"
    path.write_text("authorization:\n  rules:\n    - {action: allow, paths: [/echo]}\n")
    proxy = _start(path, app)
    port = proxy.ports["inbound"]
    assert request(port, "/echo")[0] == 200
    _replace(
        path,
        f"authentication:\n  jwt:\n    - issuer: {jwts.ISSUER}\n      jwks_file: {jwks_file}\n"
        "authorization:\n  rules:\n    - {action: allow, paths: [/echo], subjects: [alice]}\n",
    )
    _until(lambda: request(port, "/echo")[0] == 401, "the new authentication is not enforced")
    assert request(port, "/echo", headers=_bearer(key.sign(sub="alice")))[0] == 200
    assert request(port, "/echo", headers=_bearer(key.sign(sub="bob")))[0] == 403
    _replace(path, "authorization:\n  rules:\n    - {action: allow, paths: [/echo]}\n")
    _until(lambda: request(port, "/echo")[0] == 200, "the removed authentication still applies")
    proxy.stop()


def _log(proxy: Proxy) -> str:
    proxy.stop()
    assert proxy.proc.stderr is not None
    return proxy.proc.stderr.read().decode()
