"""The policy's ``outbound:`` section: which upstreams, methods and paths the app may call, and
how often, on the outbound listeners and in HTTP-proxy mode."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.proxy.support import Backend, free_port, request, start_backend, start_proxy

EGRESS = """
outbound:
  authorization:
    rules:
      - name: payments-reads
        action: allow
        upstreams: [payments]
        methods: [GET]
        paths: [/ok]
      - name: search-anything
        action: allow
        upstreams: [search]
      - name: no-search-admin
        action: deny
        upstreams: [search]
        paths: [/admin]
  rate_limits:
    - name: to-search
      key: upstream
      upstreams: [search]
      rate: 1/m
      burst: 3
"""


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, Backend]]:
    started = {name: start_backend(tmp_path / name) for name in ("payments", "search")}
    yield started
    for backend in started.values():
        backend.kill()


def test_outbound_listeners_let_the_app_call_only_what_the_outbound_rules_allow(
    backends: dict[str, Backend], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EGRESS)
    proxy = start_proxy(
        "--policy", str(policy),
        upstreams={name: b.address for name, b in backends.items()},
    )  # fmt: skip
    pay, search = proxy.ports["payments"], proxy.ports["search"]
    assert request(pay, "/ok")[0] == 200
    status, _, body = request(pay, "/ok", method="POST", body=b"x")
    assert (status, body) == (403, b"forbidden by policy (default)\n")
    assert request(pay, "/other")[0] == 403
    assert request(search, "/admin")[0] == 403
    assert [request(search, "/ok")[0] for _ in range(4)] == [200, 200, 200, 429]
    assert not any(b"POST" in conn or b"/other" in conn for conn in backends["payments"].received())
    assert not any(b"/admin" in conn for conn in backends["search"].received())
    assert proxy.metric("http_authz_deny_total", direction="outbound", rule="default") == 2
    assert proxy.metric("http_authz_deny_total", upstream="search", rule="no-search-admin") == 1
    assert proxy.metric("http_ratelimit_limited_total", limit="to-search") == 1
    proxy.stop()


def test_in_http_proxy_mode_the_outbound_rules_see_the_upstream_the_authority_names(
    backends: dict[str, Backend], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EGRESS)
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "upstreams:\n"
        + "".join(f"  - {{name: {n}, endpoints: [{b.address}]}}\n" for n, b in backends.items())
    )
    port = free_port()
    proxy = start_proxy("--http-proxy", f"127.0.0.1:{port}", "--policy", str(policy), config=config)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
    )
    with opener.open("http://payments/ok", timeout=10) as r:
        assert r.read() == b"ok %d" % backends["payments"].port
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open("http://payments/other", timeout=10)
    assert caught.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open("http://search/admin", timeout=10)
    assert caught.value.code == 403
    with opener.open("http://search/ok", timeout=10) as r:
        assert r.status == 200
    assert proxy.metric("http_authz_allow_total", rule="search-anything") == 1
    assert proxy.metric("http_authz_deny_total", direction="outbound") == 2
    proxy.stop()


def test_an_outbound_section_added_to_the_policy_file_applies_without_a_restart(
    backends: dict[str, Backend], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("outbound: {}\n")
    proxy = start_proxy(
        "--policy", str(policy), upstreams={"payments": backends["payments"].address}
    )
    port = proxy.ports["payments"]
    assert request(port, "/other")[0] == 200  # no rules yet: everything passes
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(EGRESS)
    fresh.rename(policy)
    deadline = time.monotonic() + 15
    while request(port, "/other")[0] != 403:
        assert time.monotonic() < deadline, "the outbound rules were not applied"
        time.sleep(0.2)
    assert request(port, "/ok")[0] == 200
    proxy.stop()


@pytest.mark.parametrize(
    ("policy_text", "message"),
    [
        ("outbound:\n  authorization:\n    rules:\n      - {action: allow, peers: [x]}\n",
         "outbound.authorization.rules[0].peers: outbound requests come from the app itself"),
        ("outbound:\n  rate_limits:\n    - {key: subject, rate: 1/s}\n",
         "outbound.rate_limits[0].key: 'subject' is unknown here; use one of upstream, "
         "client_ip, header:NAME"),
        ("authorization:\n  rules:\n    - {action: allow, upstreams: [payments]}\n",
         "authorization.rules[0].upstreams: inbound requests all go to the app; put rules on "
         "upstreams under outbound:"),
        ("outbound:\n  authentication: {}\n",
         "outbound.authentication: unknown key; the keys here are authorization, rate_limits"),
    ],
)  # fmt: skip
def test_an_outbound_rule_on_what_cannot_be_known_stops_the_proxy_with_the_fix(
    tmp_path: Path, policy_text: str, message: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    out = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--upstream",
         "payments=127.0.0.1:1=127.0.0.1:2", "--inbound", "127.0.0.1:0", "--app", "127.0.0.1:3",
         "--policy", str(policy), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 3
    assert message in out.stderr
    assert "Traceback" not in out.stderr
