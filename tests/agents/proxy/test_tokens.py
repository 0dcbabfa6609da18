"""End-user authentication on the inbound path, with real keys, real tokens and a real JWKS
endpoint: every bad token refused with its reason in the log, claims forwarded, API keys."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecarkit.agents.proxy import tokens
from tests.agents.proxy import jwts
from tests.agents.proxy.support import (
    Backend,
    Proxy,
    connection,
    read_response,
    request,
    start_backend,
    start_proxy,
)


@pytest.fixture(scope="module")
def keys() -> dict[str, jwts.Key]:
    return {
        "rsa": jwts.Key("RS256", "rsa-1"),
        "ec": jwts.Key("ES256", "ec-1"),
        "ed": jwts.Key("EdDSA", "ed-1"),
        "rotated": jwts.Key("RS256", "rsa-2"),
    }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


@pytest.fixture
def jwks(tmp_path: Path, keys: dict[str, jwts.Key]) -> Iterator[jwts.JwksServer]:
    server = jwts.JwksServer(tmp_path / "jwks")
    server.publish(keys["rsa"], keys["ec"], keys["ed"])
    server.start()
    yield server
    server.stop()


def policy(tmp_path: Path, jwks_url: str, *, extra: str = "", skew: str = "30s") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"""
authentication:
  realm: orders
  jwt:
    - issuer: {jwts.ISSUER}
      audiences: [{jwts.AUDIENCE}]
      jwks_url: {jwks_url}
      clock_skew: {skew}
      claims_to_headers: {{sub: x-user, groups: x-groups}}
{extra}"""
    )
    return path


def start(path: Path, app: Backend, loop: str = "uvloop") -> Proxy:
    return start_proxy(
        "--policy", str(path), "--log-level", "info", inbound_app=app.address,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, loop=loop,
    )  # fmt: skip


def log_of(proxy: Proxy) -> str:
    proxy.stop()
    assert proxy.proc.stderr is not None
    return proxy.proc.stderr.read().decode()


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_tokens_of_each_algorithm_reach_the_app_with_claims_as_headers_not_the_clients(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer, keys: dict[str, jwts.Key], loop: str
) -> None:
    proxy = start(policy(tmp_path, jwks.url), app, loop)
    port = proxy.ports["inbound"]
    for name in ("rsa", "ec", "ed"):
        token = keys[name].sign(sub=f"user-{name}", groups=["admins", "ops"])
        status, _, body = request(port, "/echo", headers=bearer(token, **{"X-User": "root"}))
        assert status == 200, body
        headers = json.loads(body)["headers"]
        sent = [(k.lower(), v) for k, v in headers]
        assert ("x-user", f"user-{name}") in sent
        assert ("x-user", "root") not in sent
        assert ("x-groups", "admins,ops") in sent
        assert "authorization" not in [k for k, _ in sent]  # removed, as Istio does
    assert proxy.metric("http_authn_total", result="ok") == 3
    proxy.stop()


def test_no_credential_gets_401_with_a_bearer_challenge(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer
) -> None:
    proxy = start(policy(tmp_path, jwks.url), app)
    status, headers, _ = request(proxy.ports["inbound"], "/echo")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="orders"'
    status, headers, _ = request(proxy.ports["inbound"], "/echo", headers=bearer("abc"))
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="orders", error="invalid_token"'
    proxy.stop()


def test_every_bad_token_is_refused_with_its_reason_in_the_log(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(policy(tmp_path, jwks.url), app)
    now = int(time.time())
    rsa = keys["rsa"]
    cases = {
        "expired": (rsa.sign(exp=now - 120, iat=now - 600), "expired (exp)"),
        "not yet valid": (rsa.sign(nbf=now + 300), "not yet valid"),
        "tampered": (jwts.tampered(rsa.sign()), "bad signature"),
        "wrong audience": (rsa.sign(aud="billing-api"), "wrong audience"),
        "wrong issuer": (rsa.sign(iss="https://evil.example"), "unknown issuer 'https://evil.example'"),
        "alg none": (jwts.unsigned("rsa-1"), "alg none is refused"),
        "hs256 with public key": (jwts.hmac_with_public_key(rsa), "algorithm 'HS256' is not allowed (a shared-secret algorithm)"),
        "no exp": (rsa.sign(exp=None), 'missing claim: Token is missing the "exp" claim'),
        "key of another type": (jwts.Key("ES256", "rsa-1").sign(), "key 'rsa-1' is a RSA key, not one for ES256"),
    }  # fmt: skip
    for name, (token, _) in cases.items():
        status, headers, _ = request(proxy.ports["inbound"], "/echo", headers=bearer(token))
        assert status == 401, name
        assert "www-authenticate" in headers
    assert not any(b"GET /echo" in conn for conn in app.received())
    for reason in ("expired", "not_yet_valid", "signature", "audience", "issuer", "algorithm",
                   "claims", "key_mismatch"):  # fmt: skip
        assert proxy.metric("http_authn_refused_total", reason=reason) >= 1, reason
    assert proxy.metric("http_authn_refused_total") == len(cases)
    log = log_of(proxy)
    for name, (_, reason) in cases.items():
        assert f"refused 401 authn: {reason}" in log, name
    assert rsa.sign() not in log


def test_an_unknown_kid_fetches_the_key_set_again_and_an_outage_refuses_it(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(policy(tmp_path, jwks.url), app)
    port = proxy.ports["inbound"]
    assert request(port, "/echo", headers=bearer(keys["rsa"].sign()))[0] == 200
    time.sleep(tokens.REFETCH_EVERY + 0.2)  # the start-up fetch no longer counts as recent
    jwks.publish(keys["rsa"], keys["rotated"])  # the issuer rotates its key
    assert request(port, "/echo", headers=bearer(keys["rotated"].sign()))[0] == 200
    time.sleep(tokens.REFETCH_EVERY + 0.2)
    jwks.stop()  # the issuer is down, and a token names a key nobody has seen
    stranger = jwts.Key("RS256", "rsa-3")
    status, headers, _ = request(port, "/echo", headers=bearer(stranger.sign()))
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert request(port, "/echo", headers=bearer(keys["rsa"].sign()))[0] == 200  # last good keys
    assert proxy.metric("policy_key_errors_total") >= 1
    log = log_of(proxy)
    assert "refused 401 authn: unknown kid 'rsa-3'; key set unavailable: http://127.0.0.1:" in log


def test_a_cached_token_is_refused_once_it_expires(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(policy(tmp_path, jwks.url, skew="0s"), app)
    exp = int(time.time()) + 5  # room for the first request on a busy machine
    token = keys["ec"].sign(exp=exp)
    assert request(proxy.ports["inbound"], "/echo", headers=bearer(token))[0] == 200
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    assert request(proxy.ports["inbound"], "/echo", headers=bearer(token))[0] == 401
    assert "refused 401 authn: expired (exp)" in log_of(proxy)


def test_api_keys_are_checked_against_salted_hashes_from_a_file(
    tmp_path: Path, app: Backend
) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(
        "# name sha256:salt:hash\n"
        + tokens.hash_line("ci-bot", "k-123", os.urandom(16)) + "\n"
        + tokens.hash_line("reporting", "k-456", os.urandom(16)) + "\n"
    )  # fmt: skip
    path = tmp_path / "policy.yaml"
    path.write_text(f"authentication:\n  api_keys:\n    file: {keyfile}\n")
    assert "k-123" not in keyfile.read_text()
    proxy = start(path, app)
    port = proxy.ports["inbound"]
    status, _, body = request(port, "/echo", headers={"X-Api-Key": "k-456", "X-Api-Key-Name": "x"})
    assert status == 200
    sent = [(k.lower(), v) for k, v in json.loads(body)["headers"]]
    assert ("x-api-key-name", "reporting") in sent
    assert ("x-api-key-name", "x") not in sent
    assert "x-api-key" not in [k for k, _ in sent]
    assert request(port, "/echo", headers={"X-Api-Key": "k-999"})[0] == 401
    assert request(port, "/echo")[0] == 401
    assert "refused 401 authn: unknown API key" in log_of(proxy)


def _malformed(rng: random.Random, good: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \t!~{}\"'%"
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 300)))
    if kind == 1:  # a good token with bytes changed
        chars = list(good)
        for _ in range(rng.randrange(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        return "".join(chars)
    if kind == 2:  # parts cut, repeated or dropped
        parts = good.split(".")
        rng.shuffle(parts)
        return ".".join(parts[: rng.randrange(1, 5)] * rng.randrange(1, 3))
    if kind == 3:  # valid base64 of junk JSON
        pieces = ['{"alg":', '"kid":', "[]", "null", '{"iss":1}', "1e999", '"\\ud800"', "{"]
        return ".".join(jwts._b64("".join(rng.choices(pieces, k=3)).encode()) for _ in range(3))
    if kind == 4:
        return good[: rng.randrange(len(good))]
    return good + "." + "A" * rng.randrange(1, 2000)


def test_ten_thousand_malformed_tokens_get_401s_never_a_5xx_or_a_crash(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(policy(tmp_path, jwks.url), app)
    rng = random.Random(18)
    good = keys["ed"].sign()
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + 300
    sent = 0
    with connection(proxy.ports["inbound"], timeout=30) as s:
        while sent < 10_000 and time.monotonic() < deadline:
            batch = [_malformed(rng, good) for _ in range(50)]
            s.sendall(b"".join(
                b"GET /echo HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n"
                % token.strip(" \t").encode() for token in batch
            ))  # fmt: skip
            for _ in batch:
                status = read_response(s)[0]
                statuses[status] = statuses.get(status, 0) + 1
            sent += len(batch)
    assert sent == 10_000
    assert not [code for code in statuses if code >= 500], statuses
    assert set(statuses) <= {200, 400, 401}, statuses
    assert statuses.get(401, 0) > 9_900
    assert proxy.proc.poll() is None
    assert request(proxy.ports["inbound"], "/echo", headers=bearer(good))[0] == 200
    log = log_of(proxy)
    assert "Traceback" not in log
    assert "more like it not logged" in log  # a flood of refusals does not flood the log


def test_a_burst_of_refusals_is_summed_up_in_the_log_once_it_stops(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer
) -> None:
    """Refusals past the log's ten a second are counted and reported on the next tick, even
    when no refusal follows the burst: every one is either logged or summed up."""
    proxy = start(policy(tmp_path, jwks.url), app)
    with connection(proxy.ports["inbound"], timeout=30) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x.y.z\r\n\r\n" * 40)
        assert [read_response(s)[0] for _ in range(40)] == [401] * 40
    time.sleep(2.5)  # the summary comes on the tick after the burst's second is over
    log = log_of(proxy)
    logged = len(re.findall(r"refused 401 authn: .*request_id=", log))
    summed = sum(int(n) for n in re.findall(r"(\d+) more like it not logged", log))
    assert logged <= 20, log  # at most ten a second: the burst took at most two seconds
    assert summed > 0, log
    assert logged + summed == 40, log


def test_removing_a_key_from_a_key_file_revokes_its_cached_tokens(
    tmp_path: Path, app: Backend, keys: dict[str, jwts.Key]
) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [keys["rsa"].jwk, keys["ed"].jwk]}))
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"authentication:\n  jwt:\n    - issuer: {jwts.ISSUER}\n      jwks_file: {jwks_file}\n"
        "authorization:\n  rules:\n    - {action: allow, subjects: [alice]}\n"
    )
    proxy = start(path, app)
    port = proxy.ports["inbound"]
    leaked = keys["rsa"].sign()
    assert request(port, "/echo", headers=bearer(leaked))[0] == 200
    assert request(port, "/echo", headers=bearer(keys["ed"].sign(sub="bob")))[0] == 403
    jwks_file.write_text(json.dumps({"keys": [keys["ed"].jwk]}))
    deadline = time.monotonic() + 10
    while request(port, "/echo", headers=bearer(leaked))[0] == 200:
        assert time.monotonic() < deadline, "the removed key's token is still accepted"
        time.sleep(0.2)
    assert request(port, "/echo", headers=bearer(keys["ed"].sign()))[0] == 200
    assert "refused 401 authn: unknown kid 'rsa-1'" in log_of(proxy)


def test_requests_pipelined_behind_one_waiting_for_its_key_are_answered_in_order(
    tmp_path: Path, app: Backend, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(policy(tmp_path, jwks.url), app)
    time.sleep(tokens.REFETCH_EVERY + 0.2)  # the start-up fetch no longer counts as recent
    jwks.publish(keys["rsa"], keys["rotated"])
    fresh, known = keys["rotated"].sign(sub="new"), keys["rsa"].sign(sub="old")
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(
            b"GET /echo HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n"
            b"GET /echo HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n"
            b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n" % (fresh.encode(), known.encode())
        )
        first, second, third = (read_response(s) for _ in range(3))
    assert (first[0], second[0], third[0]) == (200, 200, 401)
    users = [{k.lower(): v for k, v in json.loads(r[2])["headers"]}["x-user"]
             for r in (first, second)]  # fmt: skip
    assert users == ["new", "old"]
    assert proxy.metric("requests_in_flight") == 0
    proxy.stop()


def test_a_rate_limit_keyed_by_subject_counts_each_user_apart(tmp_path: Path, app: Backend) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(
        tokens.hash_line("ci-bot", "k-1", os.urandom(16)) + "\n"
        + tokens.hash_line("reporting", "k-2", os.urandom(16)) + "\n"
    )  # fmt: skip
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"authentication:\n  api_keys:\n    file: {keyfile}\n"
        "rate_limits:\n  - {name: per-user, key: subject, rate: 1/m, burst: 1}\n"
    )
    proxy = start(path, app)
    port = proxy.ports["inbound"]
    first = [request(port, "/ok", headers={"X-Api-Key": "k-1"})[0] for _ in range(2)]
    second = [request(port, "/ok", headers={"X-Api-Key": "k-2"})[0] for _ in range(2)]
    assert first == second == [200, 429]
    assert proxy.metric("http_ratelimit_limited_total", limit="per-user") == 2
    assert "refused 429 ratelimit: limit per-user; method=GET path='/ok'" in log_of(proxy)


def test_a_claim_header_the_token_lacks_cannot_be_supplied_by_the_client(
    tmp_path: Path, app: Backend, keys: dict[str, jwts.Key]
) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [keys["ed"].jwk]}))
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"authentication:\n  jwt:\n    - issuer: {jwts.ISSUER}\n      jwks_file: {jwks_file}\n"
        "      claims_to_headers: {groups: x-groups}\n"
        "authorization:\n  rules:\n    - {name: admins, action: allow, headers: {x-groups: admin}}\n"
    )
    proxy = start(path, app)
    port = proxy.ports["inbound"]
    plain_user = keys["ed"].sign()  # no groups claim
    forged = bearer(plain_user, **{"X-Groups": "admin"})
    assert request(port, "/echo", headers=forged)[0] == 403
    admin = bearer(keys["ed"].sign(groups=["admin"]))
    assert request(port, "/echo", headers=admin)[0] == 200
    proxy.stop()
