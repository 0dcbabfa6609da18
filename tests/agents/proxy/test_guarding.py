"""The policy on the proxy's inbound path: 403s, 400s for ambiguous paths, counted and logged
decisions, peer identities no header can forge, and rate limits under a burst."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.proxy.support import (
    Backend,
    Proxy,
    connection,
    read_response,
    request,
    start_backend,
    start_proxy,
)

POLICY = """
authorization:
  rules:
    - name: reads
      action: allow
      methods: [GET, HEAD]
      paths: [/api, /echo]
    - name: no-admin
      action: deny
      paths: [/api/admin]
    - name: tenant-acme-writes
      action: allow
      methods: [POST]
      headers: {x-tenant: acme}
    - name: frontend
      action: allow
      peers: [spiffe://cluster.local/ns/shop/sa/frontend]
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


@pytest.fixture(params=["uvloop", "asyncio"])
def proxy(app: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """The policy on uvloop and on the stdlib loop: the data path must work on both."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    p = start_proxy(
        "--policy", str(policy), "--log-level", "info", "--drain-grace", "1s",
        inbound_app=app.address, stdout=subprocess.DEVNULL, loop=request.param,
    )  # fmt: skip
    yield p
    p.stop()


def test_requests_the_rules_allow_reach_the_app_and_the_rest_get_403(proxy: Proxy) -> None:
    port = proxy.ports["inbound"]
    status, _, body = request(port, "/echo")
    assert status == 200
    assert json.loads(body)["target"] == "/echo"
    status, _, body = request(port, "/api/admin/users")
    assert (status, body) == (403, b"forbidden by policy (no-admin)\n")
    assert request(port, "/other")[0] == 403
    assert request(port, "/echo", method="POST", body=b"x")[0] == 403
    assert request(port, "/echo", method="POST", body=b"x", headers={"X-Tenant": "acme"})[0] == 200


def test_a_403_keeps_the_connection_and_pipelined_requests_answer_in_order(proxy: Proxy) -> None:
    with connection(proxy.ports["inbound"]) as s:
        s.sendall(
            b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /secret HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        assert [read_response(s)[0] for _ in range(3)] == [200, 403, 200]


@pytest.mark.parametrize(
    "target", ["/echo/../api/admin", "/echo/%2e%2e/api/admin", "/echo/..;/admin", "/api%2Fadmin"]
)
def test_an_ambiguous_path_is_refused_before_any_rule(
    proxy: Proxy, app: Backend, target: str
) -> None:
    status, _, body = request(proxy.ports["inbound"], target)
    assert status == 400
    assert b"path" in body
    assert not any(target.encode() in conn for conn in app.received())


def test_a_peer_identity_sent_by_the_client_is_not_believed(proxy: Proxy) -> None:
    """Only the mTLS stage's verified certificate names a peer; headers claiming one do not."""
    port = proxy.ports["inbound"]
    frontend = "spiffe://cluster.local/ns/shop/sa/frontend"
    forged = {
        "X-Sidecarkit-Peer-Identity": frontend,
        "X-Forwarded-Client-Cert": f"By=spiffe://cluster.local/ns/shop/sa/app;URI={frontend}",
    }
    assert request(port, "/other", headers=forged)[0] == 403
    assert request(port, "/echo", headers=forged)[0] == 200  # allowed by another rule


def test_decisions_are_counted_on_the_admin_endpoint_and_denials_logged(
    app: Backend, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    proxy = start_proxy(
        "--policy", str(policy), "--log-level", "info", inbound_app=app.address,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    port = proxy.ports["inbound"]
    for _ in range(3):
        request(port, "/echo")
    for _ in range(2):
        request(port, "/api/admin")
    request(port, "/nope")
    assert proxy.metric("http_authz_allow_total", rule="reads", direction="inbound") == 3
    assert proxy.metric("http_authz_deny_total", rule="no-admin") == 2
    assert proxy.metric("http_authz_deny_total", rule="default") == 1
    assert proxy.metric("response_total", status_code="403") == 3
    proxy.stop()
    assert proxy.proc.stderr is not None
    log = proxy.proc.stderr.read().decode()
    assert "refused 403 authz: rule no-admin; method=GET path='/api/admin'" in log
    assert "refused 403 authz: rule default; method=GET path='/nope'" in log


@pytest.mark.parametrize(
    ("policy_text", "where", "message"),
    [
        ("authorization:\n  rules:\n    - action: permit\n", ["--inbound", "127.0.0.1:0", "--app", "127.0.0.1:1"],
         "authorization.rules[0].action: 'permit' is unknown; use allow or deny"),
        ("rate_limits: [{rate: 1/s}]\n", ["--upstream", "a=15001=127.0.0.1:1"],
         "a policy guards the inbound listener; give --inbound and --app"),
    ],
)  # fmt: skip
def test_a_bad_policy_file_stops_the_proxy_with_the_key_and_the_fix(
    tmp_path: Path, policy_text: str, where: list[str], message: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    out = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", *where, "--policy", str(policy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 3
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_a_burst_is_admitted_at_the_configured_rate_within_two_percent(
    app: Backend, tmp_path: Path
) -> None:
    rate, burst = 200, 100
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"rate_limits:\n  - name: per-client\n    key: client_ip\n    rate: {rate}/s\n"
        f"    burst: {burst}\n"
    )
    proxy = start_proxy("--policy", str(policy), inbound_app=app.address)
    admitted = limited = 0
    refusal: dict[str, str] = {}
    # A pipelined batch (under PIPELINE_DEPTH) is decided at once as it arrives, before the
    # app answers. Once a request of a batch was refused, the bucket was empty then: every
    # token due since the start went to an admitted request. So the window ends when the last
    # batch with a refusal was sent, and the count is the admitted up to it. Neither the time
    # the answers take nor a gap between batches (a loaded box: the bucket refills more than
    # a batch takes, and a window ending at the last batch would expect those tokens) moves it.
    end = 0.0
    admitted_by_end = 0
    with connection(proxy.ports["inbound"], timeout=30) as s:
        started = sent = time.monotonic()
        while sent - started < 3.0 and admitted + limited < 200_000:
            sent = time.monotonic()
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n" * 20)
            refused_here = False
            for _ in range(20):
                status, headers, _ = read_response(s)
                if status == 200:
                    admitted += 1
                else:
                    assert status == 429
                    limited += 1
                    refusal = headers
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
    assert refusal["retry-after"] == "1"
    assert refusal["ratelimit-limit"] == str(burst)
    assert refusal["ratelimit-remaining"] == "0"
    assert refusal["ratelimit-policy"] == f"{burst};w=1"
    assert 1 <= int(refusal["ratelimit-reset"]) <= 1
    assert proxy.metric("http_ratelimit_limited_total", limit="per-client") == limited
    proxy.stop()


def test_each_value_of_a_header_key_has_its_own_bucket(app: Backend, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rate_limits:\n  - name: per-tenant\n    key: header:x-tenant\n    rate: 1/m\n    burst: 2\n"
    )
    proxy = start_proxy("--policy", str(policy), inbound_app=app.address)
    port = proxy.ports["inbound"]
    acme = [request(port, "/ok", headers={"X-Tenant": "acme"})[0] for _ in range(3)]
    globex = [request(port, "/ok", headers={"X-Tenant": "globex"})[0] for _ in range(3)]
    assert acme == globex == [200, 200, 429]
    assert request(port, "/ok")[0] == 200  # no header: this limit does not apply
    assert request(port, "/a/../ok")[0] == 200  # no rule reads paths: nothing to confuse
    status, headers, _ = request(port, "/ok", headers={"X-Tenant": "acme"})
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["ratelimit-policy"] == "2;w=120"
    proxy.stop()


def test_a_changed_policy_file_applies_without_a_restart_and_a_bad_one_keeps_the_last(
    app: Backend, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("authorization:\n  rules:\n    - {action: allow, paths: [/echo]}\n")
    proxy = start_proxy(
        "--policy", str(policy), "--log-level", "info", inbound_app=app.address,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    port = proxy.ports["inbound"]
    assert request(port, "/other")[0] == 403
    fresh = tmp_path / "fresh.yaml"  # replaced whole, as a ConfigMap's symlink swap does
    fresh.write_text("authorization:\n  rules:\n    - {action: allow, paths: [/other]}\n")
    fresh.rename(policy)
    deadline = time.monotonic() + 15
    while request(port, "/other")[0] != 200:
        assert time.monotonic() < deadline, "the new policy was not applied"
        time.sleep(0.2)
    assert request(port, "/echo")[0] == 403
    policy.write_text("authorization:\n  rules:\n    - {action: permit}\n")
    deadline = time.monotonic() + 15
    while proxy.metric("policy_reloads_total", result="error") < 1:
        assert time.monotonic() < deadline, "the bad policy was not noticed"
        time.sleep(0.2)
    assert request(port, "/other")[0] == 200  # the last good policy stays
    assert proxy.metric("policy_reloads_total", result="ok") == 1
    proxy.stop()
    assert proxy.proc.stderr is not None
    log = proxy.proc.stderr.read().decode()
    assert "policy reloaded from" in log
    assert "authorization.rules[0].action: 'permit' is unknown" in log
    assert "the last good policy stays" in log


def test_a_proxy_without_a_policy_loads_no_jwt_or_crypto_library() -> None:
    """Every megabyte the sidecar holds is a megabyte of each pod (~12 MB for these two)."""
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys\nfrom sidecarkit.agents.proxy import command, running\n"
         "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_admitted_responses_carry_the_ratelimit_fields_of_the_limit_closest_to_running_out(
    app: Backend, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rate_limits:\n"
        "  - {name: roomy, key: client_ip, rate: 1/m, burst: 10, headers: true}\n"
        "  - {name: tight, key: client_ip, rate: 1/m, burst: 3, headers: true}\n"
        "  - {name: silent, key: client_ip, rate: 1/m, burst: 5}\n"
    )
    proxy = start_proxy("--policy", str(policy), inbound_app=app.address)
    port = proxy.ports["inbound"]
    answers = [request(port, "/ok") for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    fields = [{k: v for k, v in h.items() if k.startswith("ratelimit")} for _, h, _ in answers]
    assert [f["ratelimit-remaining"] for f in fields] == ["2", "1", "0", "0"]
    assert {f["ratelimit-limit"] for f in fields} == {"3"}
    assert {f["ratelimit-policy"] for f in fields} == {"3;w=180"}
    assert 60 <= int(fields[0]["ratelimit-reset"]) <= 180
    assert answers[0][2] == b"ok %d" % app.port  # the body is the app's, untouched
    proxy.stop()
