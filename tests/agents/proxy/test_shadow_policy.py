"""Shadow (dry-run) rules and limits: evaluated on real traffic, counted and logged as they
would decide, and never refusing anything (Envoy's ``shadow_rules``, Istio's dry-run)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecarkit.agents.proxy import policies, policyfiles
from tests.agents.proxy.support import Backend, Proxy, request, start_backend, start_proxy


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Backend]:
    backend = start_backend(tmp_path / "app")
    yield backend
    backend.kill()


def _proxy(app: Backend, tmp_path: Path, text: str) -> Proxy:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    return start_proxy(
        "--policy", str(policy), "--log-level", "info", inbound_app=app.address,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _log(proxy: Proxy) -> str:
    proxy.stop()
    assert proxy.proc.stderr is not None
    return proxy.proc.stderr.read().decode()


def test_an_authorization_section_in_shadow_mode_refuses_nothing_but_counts_and_logs_denials(
    app: Backend, tmp_path: Path
) -> None:
    proxy = _proxy(
        app,
        tmp_path,
        "authorization:\n  shadow: true\n  rules:\n"
        "    - {name: reads, action: allow, methods: [GET]}\n"
        "    - {name: no-admin, action: deny, paths: [/admin]}\n",
    )
    port = proxy.ports["inbound"]
    assert request(port, "/ok")[0] == 200
    assert request(port, "/admin")[0] == 200
    assert request(port, "/ok", method="POST", body=b"x")[0] == 200
    assert request(port, "/ok/../admin")[0] == 200  # a shadow path rule refuses no path either
    assert any(b"/admin" in conn for conn in app.received())
    assert proxy.metric("http_authz_shadow_deny_total", rule="ambiguous-path") == 1
    assert proxy.metric("http_authz_shadow_allow_total", rule="reads") == 1
    assert proxy.metric("http_authz_shadow_deny_total", rule="no-admin") == 1
    assert proxy.metric("http_authz_shadow_deny_total", rule="default") == 1
    assert proxy.metric("http_authz_deny_total") == 0
    assert proxy.metric("response_total", status_code="403") == 0
    log = _log(proxy)
    assert "shadow: rule no-admin would refuse 403; method=GET path='/admin'" in log
    assert "shadow: rule default would refuse 403; method=POST path='/ok'" in log
    assert "shadow: would refuse 400 (the path has a . or .. segment); method=GET" in log
    assert "refused 4" not in log


def test_a_shadow_rule_beside_enforced_ones_is_tried_while_they_decide(
    app: Backend, tmp_path: Path
) -> None:
    proxy = _proxy(
        app,
        tmp_path,
        "authorization:\n  rules:\n"
        "    - {name: reads, action: allow, methods: [GET]}\n"
        "    - {name: lock-reports, action: deny, paths: [/reports], shadow: true}\n",
    )
    port = proxy.ports["inbound"]
    assert request(port, "/reports/2024")[0] == 200  # the shadow deny does not decide
    assert request(port, "/ok", method="POST", body=b"x")[0] == 403  # the enforced rules do
    assert proxy.metric("http_authz_shadow_deny_total", rule="lock-reports") == 1
    assert proxy.metric("http_authz_allow_total", rule="reads") == 1
    assert proxy.metric("http_authz_deny_total", rule="default") == 1
    log = _log(proxy)
    assert "shadow: rule lock-reports would refuse 403; method=GET path='/reports/2024'" in log
    assert "refused 403 authz: rule default; method=POST" in log


def test_a_shadow_rate_limit_counts_what_it_would_refuse_and_admits_everything(
    app: Backend, tmp_path: Path
) -> None:
    proxy = _proxy(
        app,
        tmp_path,
        "rate_limits:\n"
        "  - {name: trial, key: client_ip, rate: 1/m, burst: 2, shadow: true}\n"
        "  - {name: real, key: client_ip, rate: 1/m, burst: 4}\n",
    )
    port = proxy.ports["inbound"]
    assert [request(port, "/ok")[0] for _ in range(5)] == [200, 200, 200, 200, 429]
    assert proxy.metric("http_ratelimit_shadow_limited_total", limit="trial") == 3
    assert proxy.metric("http_ratelimit_limited_total", limit="real") == 1
    assert proxy.metric("http_ratelimit_limited_total", limit="trial") == 0
    log = _log(proxy)
    assert "shadow: limit trial would refuse 429; method=GET path='/ok'" in log


def test_when_every_rule_is_a_shadow_one_nothing_is_enforced() -> None:
    """Not an empty rule list, which would deny everything: the section is only being tried."""
    policy = policyfiles.from_mapping(
        {"authorization": {"rules": [{"action": "allow", "paths": ["/a"], "shadow": True}]}},
        source="p.yaml",
    )
    other = policies.Request(b"GET", b"/b", {})
    assert policy.authorize(other).allowed
    assert not policy.audit(other).allowed
    assert policy.audit(policies.Request(b"GET", b"/a", {})).allowed


@pytest.mark.parametrize(
    ("policy_text", "message"),
    [
        ("authorization:\n  shadow: maybe\n  rules: [{action: allow}]\n",
         "authorization.shadow: 'maybe' is not true or false"),
        ("authorization:\n  shadow: true\n  rules: []\n",
         "authorization.shadow: there are no rules to try"),
        ("rate_limits:\n  - {rate: 1/s, shadow: 1}\n",
         "rate_limits[0].shadow: 1 is not true or false"),
    ],
)  # fmt: skip
def test_a_bad_shadow_setting_stops_the_proxy_with_the_key(
    tmp_path: Path, policy_text: str, message: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    out = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--inbound", "127.0.0.1:0",
         "--app", "127.0.0.1:3", "--policy", str(policy), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 3
    assert message in out.stderr
    assert "Traceback" not in out.stderr
