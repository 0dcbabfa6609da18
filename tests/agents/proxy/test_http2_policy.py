"""The policy on an HTTP/2 (gRPC) inbound port: the same stages as on HTTP/1.1, per stream.

The app is a real grpcio server (``grpcbackend.py``); callers are grpcio channels, or an ``h2``
client on a plain socket where a test needs what a gRPC channel will not send (an ambiguous
path, a malformed token, hundreds of streams at once). Refusals to gRPC calls are
trailers-only answers with the gRPC status the HTTP one stands for, as Envoy sends them.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from sidecarkit.agents.proxy import tokens
from tests.agents.proxy import jwts, support
from tests.agents.proxy.support import Proxy, start_proxy
from tests.agents.proxy.test_http2 import App, _channel, _outbound, _unary, start_app
from tests.agents.proxy.test_tokens import _malformed


@pytest.fixture(scope="module")
def keys() -> dict[str, jwts.Key]:
    return {"rsa": jwts.Key("RS256", "rsa-1"), "rotated": jwts.Key("RS256", "rsa-2")}


@pytest.fixture
def app() -> Iterator[App]:
    backend = start_app("app")
    yield backend
    backend.proc.kill()
    backend.proc.wait(10)


@pytest.fixture
def jwks(tmp_path: Path, keys: dict[str, jwts.Key]) -> Iterator[jwts.JwksServer]:
    server = jwts.JwksServer(tmp_path / "jwks")
    server.publish(keys["rsa"])
    server.start()
    yield server
    server.stop()


def start(tmp_path: Path, app: App, policy: str) -> Proxy:
    (tmp_path / "policy.yaml").write_text(policy)
    config = tmp_path / "proxy.yaml"
    config.write_text(f"inbound:\n  app: {app.address}\n  protocol: http2\n")
    return start_proxy(
        "--policy", str(tmp_path / "policy.yaml"), "--log-level", "info",
        config=config, inbound_app=app.address,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def log_of(proxy: Proxy) -> str:
    proxy.stop()
    assert proxy.proc.stderr is not None
    return proxy.proc.stderr.read().decode()


def authentication(jwks_url: str, extra: str = "") -> str:
    return (
        "authentication:\n  realm: orders\n  jwt:\n"
        f"    - issuer: {jwts.ISSUER}\n      audiences: [{jwts.AUDIENCE}]\n"
        f"      jwks_url: {jwks_url}\n"
        "      claims_to_headers: {sub: x-user, groups: x-groups}\n" + extra
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# -- a plain HTTP/2 client -------------------------------------------------------------------
@dataclass
class Answer:
    status: int = 0
    head: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: bool = False

    @property
    def grpc_status(self) -> str | None:
        return self.trailers.get("grpc-status", self.head.get("grpc-status"))


GRPC = (("content-type", "application/grpc"), ("te", "trailers"))


def grpc_message(data: bytes) -> bytes:
    return b"\0" + len(data).to_bytes(4, "big") + data


def exchange(
    port: int, calls: Sequence[tuple[str, tuple[tuple[str, str], ...], bytes]], timeout: float = 30
) -> list[Answer]:
    """Each (path, headers, body) as a POST on its own stream of one h2c connection (at most
    a hundred at once); the answers in the same order."""
    assert len(calls) <= 100
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    answers: dict[int, Answer] = {}
    order = []
    with support.connection(port, timeout) as s:
        for path, headers, body in calls:
            sid = conn.get_next_available_stream_id()
            head = [(":method", "POST"), (":scheme", "http"), (":authority", "app"),
                    (":path", path), *headers]  # fmt: skip
            conn.send_headers(sid, head, end_stream=not body)
            if body:
                conn.send_data(sid, body, end_stream=True)
            answers[sid] = Answer()
            order.append(sid)
        s.sendall(conn.data_to_send())
        open_ = set(order)
        deadline = time.monotonic() + timeout
        while open_ and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                sid = getattr(event, "stream_id", 0)
                if isinstance(event, h2.events.ResponseReceived):
                    fields = {k.decode(): v.decode() for k, v in event.headers}
                    answers[sid].status = int(fields.pop(":status"))
                    answers[sid].head = fields
                elif isinstance(event, h2.events.DataReceived):
                    answers[sid].body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.TrailersReceived):
                    answers[sid].trailers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.StreamEnded):
                    open_.discard(sid)
                elif isinstance(event, h2.events.StreamReset):
                    answers[sid].reset = True
                    open_.discard(sid)
            s.sendall(conn.data_to_send())
    assert not open_, f"{len(open_)} streams unanswered in {timeout} s"
    return [answers[sid] for sid in order]


def one(
    port: int, path: str, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
) -> Answer:
    return exchange(port, [(path, headers, body)])[0]


# -- authentication --------------------------------------------------------------------------
def test_a_valid_jwt_reaches_the_grpc_app_with_its_claims_and_without_the_token_or_forged_claims(
    tmp_path: Path, app: App, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(tmp_path, app, authentication(jwks.url))
    token = keys["rsa"].sign(sub="alice", groups=["admins", "ops"])
    metadata = (*bearer(token), ("x-user", "root"), ("x-groups", "everyone"))
    with _channel(proxy.ports["inbound"]) as channel:
        unary = _unary(channel)
        assert unary(b"hello", metadata=metadata, timeout=10) == b"app:hello"
        # the app answers the first value of the header it is asked about: the client's
        # x-user came first, so "alice" here means the client's "root" was removed
        assert unary(b"meta:x-user", metadata=metadata, timeout=10) == b"alice"
        assert unary(b"meta:x-groups", metadata=metadata, timeout=10) == b"admins,ops"
        assert unary(b"meta:authorization", metadata=metadata, timeout=10) == b""
        stream = channel.stream_stream("/test.Echo/Stream")
        assert list(stream(iter([b"1", b"2"]), metadata=metadata, timeout=10)) == [
            b"app:1", b"app:2"
        ]  # fmt: skip
    assert proxy.metric("http_authn_total", result="ok", direction="inbound") == 5
    assert proxy.metric("response_total", direction="inbound", grpc_status="0") == 5
    assert "Traceback" not in log_of(proxy)


def test_bad_tokens_on_grpc_calls_are_unauthenticated_with_the_reason_in_the_log(
    tmp_path: Path, app: App, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(tmp_path, app, authentication(jwks.url))
    port = proxy.ports["inbound"]
    now = int(time.time())
    rsa = keys["rsa"]
    cases = {
        "expired": (rsa.sign(exp=now - 120, iat=now - 600), "expired (exp)"),
        "tampered": (jwts.tampered(rsa.sign()), "bad signature"),
        "alg none": (jwts.unsigned("rsa-1"), "alg none is refused"),
        "hs256 with the public key": (jwts.hmac_with_public_key(rsa), "algorithm 'HS256'"),
    }
    with _channel(port) as channel:
        for name, (token, _) in cases.items():
            with pytest.raises(grpc.RpcError) as caught:
                _unary(channel)(b"x", metadata=bearer(token), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
        with pytest.raises(grpc.RpcError) as caught:
            _unary(channel)(b"x", timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details() == "authentication required"
    # on the wire: trailers-only, HTTP 200 with grpc-status 16 and the challenge (as Envoy)
    answer = one(port, "/test.Echo/Unary", (*GRPC, *bearer("abc")), grpc_message(b"x"))
    assert (answer.status, answer.grpc_status) == (200, "16")
    assert answer.head["www-authenticate"] == 'Bearer realm="orders", error="invalid_token"'
    # to a client that is not gRPC: the HTTP status itself, as on HTTP/1.1
    answer = one(port, "/test.Echo/Unary")
    assert answer.status == 401
    assert answer.head["www-authenticate"] == 'Bearer realm="orders"'
    assert answer.body == b"authentication required\n"
    assert proxy.metric("http_authn_refused_total", direction="inbound") == len(cases) + 3
    assert proxy.metric("response_total", direction="inbound", grpc_status="16") == len(cases) + 2
    assert proxy.metric("request_total", direction="inbound", endpoint=app.address) == 0
    log = log_of(proxy)
    for name, (_, reason) in cases.items():
        assert f"refused 401 authn: {reason}" in log, name
    assert "method=POST path='/test.Echo/Unary'" in log
    assert rsa.sign() not in log


def test_a_token_with_a_new_kid_waits_for_the_key_set_and_then_reaches_the_app(
    tmp_path: Path, app: App, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(tmp_path, app, authentication(jwks.url))
    port = proxy.ports["inbound"]
    time.sleep(tokens.REFETCH_EVERY + 0.2)  # the start-up fetch no longer counts as recent
    jwks.publish(keys["rsa"], keys["rotated"])  # the issuer rotates its key
    fresh, known = keys["rotated"].sign(sub="new"), keys["rsa"].sign(sub="old")
    calls = [("/test.Echo/Unary", (*GRPC, *bearer(token)), grpc_message(b"meta:x-user"))
             for token in (fresh, known, fresh)]  # fmt: skip
    calls.append(("/test.Echo/Unary", GRPC, grpc_message(b"x")))
    answers = exchange(port, calls)
    assert [a.grpc_status for a in answers] == ["0", "0", "0", "16"]
    assert [a.body[5:] for a in answers[:3]] == [b"new", b"old", b"new"]
    time.sleep(tokens.REFETCH_EVERY + 0.2)
    jwks.stop()  # the issuer is down, and a token names a key nobody has seen
    stranger = jwts.Key("RS256", "rsa-3").sign()
    answer = one(port, "/test.Echo/Unary", (*GRPC, *bearer(stranger)), grpc_message(b"x"))
    assert answer.grpc_status == "16"
    assert proxy.metric("requests_in_flight", direction="inbound") == 0
    log = log_of(proxy)
    assert "refused 401 authn: unknown kid 'rsa-3'; key set unavailable: http://127.0.0.1:" in log


def test_while_a_call_waits_for_a_key_set_others_on_its_connection_go_on_and_it_can_be_cancelled(
    tmp_path: Path, app: App, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(tmp_path, app, authentication(jwks.url))
    time.sleep(tokens.REFETCH_EVERY + 0.2)  # the start-up fetch no longer counts as recent
    jwks.stop()
    with socket.socket() as silent:  # the issuer's address accepts but never answers
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", jwks.port))
        silent.listen(8)
        stranger = jwts.Key("RS256", "rsa-9").sign()
        with _channel(proxy.ports["inbound"]) as channel:
            unary = _unary(channel)
            assert unary(b"warm", metadata=bearer(keys["rsa"].sign()), timeout=10) == b"app:warm"
            cancelled = unary.future(b"x", metadata=bearer(stranger), timeout=30)
            waiting = unary.future(b"y", metadata=bearer(stranger), timeout=30)
            deadline = time.monotonic() + 10
            while proxy.metric("requests_in_flight", direction="inbound") < 2:
                assert time.monotonic() < deadline, "the calls did not reach the proxy"
                time.sleep(0.05)
            # the fetch hangs: a call with a known key on the same connection is not held up
            assert unary(b"z", metadata=bearer(keys["rsa"].sign()), timeout=10) == b"app:z"
            cancelled.cancel()
            with pytest.raises(grpc.RpcError) as caught:
                waiting.result()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the fetch timed out
    assert proxy.metric("requests_in_flight", direction="inbound") == 0
    assert proxy.metric("request_total", direction="inbound", endpoint=app.address) == 2
    log = log_of(proxy)
    assert "refused 401 authn: unknown kid 'rsa-9'" in log
    assert "Traceback" not in log


def test_a_thousand_malformed_tokens_on_http2_get_401s_never_a_5xx_or_a_crash(
    tmp_path: Path, app: App, jwks: jwts.JwksServer, keys: dict[str, jwts.Key]
) -> None:
    proxy = start(tmp_path, app, authentication(jwks.url))
    port = proxy.ports["inbound"]
    rng = random.Random(18)
    good = keys["rsa"].sign()
    statuses: dict[tuple[int, str | None], int] = {}
    for _ in range(20):
        batch = [_malformed(rng, good).strip(" \t") or "x" for _ in range(50)]
        calls = [("/test.Echo/Unary", (*GRPC, *bearer(token)), grpc_message(b"x"))
                 for token in batch]  # fmt: skip
        for answer in exchange(port, calls):
            assert not answer.reset
            key = (answer.status, answer.grpc_status)
            statuses[key] = statuses.get(key, 0) + 1
    assert sum(statuses.values()) == 1000
    assert not [status for status, _ in statuses if status >= 500], statuses
    assert set(statuses) <= {(200, "0"), (200, "16")}, statuses
    assert statuses[(200, "16")] > 990
    assert proxy.proc.poll() is None
    answer = one(port, "/test.Echo/Unary", (*GRPC, *bearer(good)), grpc_message(b"x"))
    assert answer.grpc_status == "0"
    log = log_of(proxy)
    assert "Traceback" not in log
    assert "more like it not logged" in log


def test_an_api_key_on_a_grpc_call_is_replaced_by_its_name_and_a_wrong_one_is_unauthenticated(
    tmp_path: Path, app: App
) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(tokens.hash_line("reporting", "k-456", b"0123456789abcdef") + "\n")
    proxy = start(tmp_path, app, f"authentication:\n  api_keys:\n    file: {keyfile}\n")
    metadata = (("x-api-key", "k-456"), ("x-api-key-name", "forged"))
    with _channel(proxy.ports["inbound"]) as channel:
        unary = _unary(channel)
        assert unary(b"meta:x-api-key-name", metadata=metadata, timeout=10) == b"reporting"
        assert unary(b"meta:x-api-key", metadata=metadata, timeout=10) == b""
        with pytest.raises(grpc.RpcError) as caught:
            unary(b"x", metadata=(("x-api-key", "k-999"),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "refused 401 authn: unknown API key" in log_of(proxy)


# -- authorization ---------------------------------------------------------------------------
RULES = """
authorization:
  rules:
    - name: calls
      action: allow
      methods: [POST]
      paths: [/test.Echo/Unary]
    - name: no-admin
      action: deny
      paths: [/test.Admin]
"""


def test_a_call_no_rule_allows_is_permission_denied_and_an_ambiguous_path_gets_400(
    tmp_path: Path, app: App
) -> None:
    proxy = start(tmp_path, app, RULES)
    port = proxy.ports["inbound"]
    with _channel(port) as channel:
        assert _unary(channel)(b"hi", timeout=10) == b"app:hi"
        with pytest.raises(grpc.RpcError) as caught:
            list(channel.stream_stream("/test.Echo/Stream")(iter([b"1"]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == "forbidden by policy (default)"
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/test.Admin/Drop")(b"x", timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert one(port, "/test.Admin/Drop", body=b"x").status == 403
    for path in ("/test.Echo/Unary/../../test.Admin/Drop", "/test.Echo/%2e%2e/Unary",
                 "/test.Echo%2FUnary"):  # fmt: skip
        answer = one(port, path, body=b"x")
        assert answer.status == 400, path
        assert b"path" in answer.body
        assert one(port, path, GRPC, grpc_message(b"x")).grpc_status == "13"  # INTERNAL
    assert proxy.metric("http_authz_allow_total", rule="calls", direction="inbound") == 1
    assert proxy.metric("http_authz_deny_total", rule="default") == 1
    assert proxy.metric("http_authz_deny_total", rule="no-admin") == 2
    assert proxy.metric("request_total", direction="inbound", endpoint=app.address) == 1
    log = log_of(proxy)
    assert "refused 403 authz: rule default; method=POST path='/test.Echo/Stream'" in log
    assert "refused 403 authz: rule no-admin; method=POST path='/test.Admin/Drop'" in log
    assert "refused 400 path:" in log


def test_a_changed_policy_file_applies_to_new_grpc_calls_without_a_restart(
    tmp_path: Path, app: App
) -> None:
    proxy = start(tmp_path, app, RULES)
    port = proxy.ports["inbound"]
    with _channel(port) as channel:
        assert _unary(channel)(b"before", timeout=10) == b"app:before"
        fresh = tmp_path / "fresh.yaml"
        fresh.write_text(RULES.replace("/test.Echo/Unary", "/test.Echo/Stream"))
        fresh.rename(tmp_path / "policy.yaml")
        deadline = time.monotonic() + 15
        code = None
        while code is None:
            try:
                _unary(channel)(b"x", timeout=10)
            except grpc.RpcError as error:
                code = error.code()
            else:
                assert time.monotonic() < deadline, "the changed policy was not applied"
                time.sleep(0.2)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        stream = channel.stream_stream("/test.Echo/Stream")
        assert list(stream(iter([b"1"]), timeout=10)) == [b"app:1"]
    assert proxy.metric("policy_reloads_total", result="ok") == 1
    assert proxy.stop() == 0


def test_a_shadow_rule_on_http2_is_counted_and_logged_but_lets_the_call_through(
    tmp_path: Path, app: App
) -> None:
    proxy = start(
        tmp_path, app,
        "authorization:\n  rules:\n    - {name: all, action: allow}\n"
        "    - {name: no-unary, action: deny, paths: [/test.Echo/Unary], shadow: true}\n",
    )  # fmt: skip
    with _channel(proxy.ports["inbound"]) as channel:
        assert _unary(channel)(b"hi", timeout=10) == b"app:hi"
    assert proxy.metric("http_authz_shadow_deny_total", rule="no-unary") == 1
    assert "shadow: rule no-unary would refuse 403; method=POST" in log_of(proxy)


# -- rate limits -----------------------------------------------------------------------------
def test_a_burst_of_grpc_calls_is_admitted_at_the_configured_rate_within_two_percent(
    tmp_path: Path, app: App
) -> None:
    rate, burst = 100, 400
    proxy = start(
        tmp_path, app,
        f"rate_limits:\n  - name: per-client\n    key: client_ip\n    rate: {rate}/s\n"
        f"    burst: {burst}\n",
    )  # fmt: skip
    port = proxy.ports["inbound"]
    admitted = limited = 0
    refusal = Answer()
    calls = [("/test.Echo/Unary", GRPC, grpc_message(b"x"))] * 100  # one exchange's most
    # each batch is decided as it arrives, before the app answers; a batch with a refusal found
    # the bucket empty, every token due since the start taken: the window ends when the last
    # such batch was sent (a slow batch before the last one leaves tokens unused, which a
    # window ending at the last batch would expect to see taken)
    end = 0.0
    admitted_by_end = 0
    started = sent = time.monotonic()
    while sent - started < 3.0 and admitted + limited < 100_000:
        sent = time.monotonic()
        refused_here = False
        for answer in exchange(port, calls):
            if answer.grpc_status == "0":
                admitted += 1
            else:
                assert (answer.status, answer.grpc_status) == (200, "8"), answer
                limited += 1
                refusal = answer
                refused_here = True
        if refused_here:
            end, admitted_by_end = sent, admitted
    elapsed = end - started  # from the first batch to the last one that found it empty
    expected = burst + rate * elapsed
    print(f"admitted {admitted_by_end}, expected {expected:.0f}, refused {limited} in "
          f"{elapsed:.2f} s")  # fmt: skip
    assert limited > admitted  # it was a burst: far more asked than allowed
    assert elapsed > 2.0  # the window is most of the run
    assert abs(admitted_by_end - expected) <= 0.02 * expected
    assert refusal.head["grpc-message"] == "rate limit per-client exceeded"
    assert refusal.head["retry-after"] == "1"
    assert refusal.head["ratelimit-limit"] == str(burst)
    assert refusal.head["ratelimit-remaining"] == "0"
    assert refusal.head["ratelimit-policy"] == f"{burst};w=4"
    assert proxy.metric("http_ratelimit_limited_total", limit="per-client") == limited
    # the bucket is empty: plain HTTP/2 requests get the 429 itself
    answers = exchange(port, [("/test.Echo/Unary", GRPC, grpc_message(b"x"))] * 40
                       + [("/test.Echo/Unary", (), b"x")] * 10)  # fmt: skip
    refused = [a for a in answers[40:] if a.status == 429]  # a token may come due meanwhile
    assert len(refused) >= 5
    assert {a.head["retry-after"] for a in refused} == {"1"}
    codes: set[grpc.StatusCode] = set()
    with _channel(port) as channel:  # and a gRPC client sees RESOURCE_EXHAUSTED
        for _ in range(10):  # the channel's setup may let the bucket refill on a loaded box
            futures = [_unary(channel).future(b"x", timeout=10) for _ in range(100)]
            codes |= {f.exception().code() for f in futures if f.exception() is not None}
            if grpc.StatusCode.RESOURCE_EXHAUSTED in codes:
                break
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert "Traceback" not in log_of(proxy)


def test_admitted_grpc_calls_carry_the_ratelimit_fields_when_the_limit_asks_for_them(
    tmp_path: Path, app: App
) -> None:
    proxy = start(
        tmp_path, app,
        "rate_limits:\n  - {name: per-client, key: client_ip, rate: 1/m, burst: 5, headers: true}\n",
    )  # fmt: skip
    answers = exchange(proxy.ports["inbound"], [("/test.Echo/Unary", GRPC, grpc_message(b"x"))] * 2)
    assert [a.grpc_status for a in answers] == ["0", "0"]
    assert sorted(a.head["ratelimit-remaining"] for a in answers) == ["3", "4"]
    assert {a.head["ratelimit-limit"] for a in answers} == {"5"}
    assert proxy.stop() == 0


def test_a_policy_and_an_http2_port_start_together() -> None:
    from sidecarkit.agents.proxy import settings as proxy_settings  # noqa: PLC0415

    data = {"inbound": {"protocol": "http2", "listen": "127.0.0.1:1"}, "policy": "/p.yaml"}
    settings = proxy_settings.from_mapping(data, source="proxy.yaml")
    assert settings.policy == "/p.yaml"


def test_refusals_on_http2_are_logged_with_their_request_id(tmp_path: Path, app: App) -> None:
    proxy = start(tmp_path, app, RULES)
    answer = one(proxy.ports["inbound"], "/nope", (("x-request-id", "call-42"),), b"x")
    assert answer.status == 403
    assert re.search(r"refused 403 authz: rule default; method=POST path='/nope' .*"
                     r"request_id=call-42", log_of(proxy))  # fmt: skip


# -- outbound --------------------------------------------------------------------------------
def test_outbound_rules_and_limits_decide_the_apps_grpc_calls_to_an_http2_upstream(
    tmp_path: Path, app: App
) -> None:
    (tmp_path / "policy.yaml").write_text(
        "outbound:\n  authorization:\n    rules:\n"
        "      - {name: echo-unary, action: allow, upstreams: [echo], paths: [/test.Echo/Unary]}\n"
        "  rate_limits:\n"
        "    - {name: to-echo, key: upstream, upstreams: [echo], rate: 1/m, burst: 3}\n"
    )
    proxy = _outbound(tmp_path, [app.address], f"policy: {tmp_path / 'policy.yaml'}\n")
    codes = []
    with _channel(proxy.ports["echo"]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(channel.stream_stream("/test.Echo/Stream")(iter([b"1"]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for _ in range(4):
            try:
                codes.append(_unary(channel)(b"x", timeout=10))
            except grpc.RpcError as error:
                codes.append(error.code())
    assert codes == [b"app:x", b"app:x", b"app:x", grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert proxy.metric("http_authz_deny_total", direction="outbound", rule="default") == 1
    assert proxy.metric("http_ratelimit_limited_total", upstream="echo", limit="to-echo") == 1
    assert proxy.metric("request_total", direction="outbound", endpoint=app.address) == 3
    assert proxy.stop() == 0
