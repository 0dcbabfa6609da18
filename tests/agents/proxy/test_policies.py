"""The policy core: rules as Istio's AuthorizationPolicy reads them, paths, headers, errors."""

from __future__ import annotations

from typing import Any

import pytest

from sidecarkit.agents.proxy import buckets, policies, policyfiles

FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
BATCH = "spiffe://cluster.local/ns/jobs/sa/batch"


def request(
    method: str = "GET",
    path: str = "/",
    *,
    peer: str = "",
    subject: str = "",
    headers: dict[str, tuple[str, ...]] | None = None,
) -> policies.Request:
    normal, why = policies.normal_path(path.encode())
    assert not why, why
    return policies.Request(
        method.encode(),
        normal,
        {k.encode(): tuple(v.encode() for v in vs) for k, vs in (headers or {}).items()},
        peer=peer,
        subject=subject,
    )


def policy(*rules: dict[str, Any]) -> policies.Policy:
    return policyfiles.from_mapping({"authorization": {"rules": list(rules)}}, source="policy.yaml")


def test_without_an_authorization_section_everything_is_allowed() -> None:
    p = policyfiles.from_mapping({"rate_limits": [{"rate": "10/s"}]}, source="policy.yaml")
    assert p.authorize(request()).allowed


def test_with_rules_what_no_rule_allows_is_denied_by_default() -> None:
    p = policy({"action": "allow", "paths": ["/api"]})
    assert p.authorize(request(path="/api/orders")).allowed
    decision = p.authorize(request(path="/admin"))
    assert decision == policies.Decision(False, "default")
    assert not policy().authorize(request()).allowed  # an empty rule list denies everything


def test_a_deny_rule_wins_over_an_allow_rule_listed_before_it() -> None:
    p = policy(
        {"name": "everyone", "action": "allow"},
        {"name": "no-admin", "action": "deny", "paths": ["/admin"]},
    )
    assert p.authorize(request(path="/admin/users")) == policies.Decision(False, "no-admin")
    assert p.authorize(request(path="/orders")) == policies.Decision(True, "everyone")


def test_peers_and_namespaces_come_from_the_verified_spiffe_id() -> None:
    p = policy(
        {"name": "frontend", "action": "allow", "peers": [FRONTEND]},
        {"name": "jobs", "action": "allow", "namespaces": ["jobs"], "methods": ["POST"]},
        {"name": "mesh-prefix", "action": "allow", "peers": ["spiffe://other.domain/*"]},
    )
    assert p.authorize(request(peer=FRONTEND)).rule == "frontend"
    assert p.authorize(request("POST", peer=BATCH)).rule == "jobs"
    assert not p.authorize(request("GET", peer=BATCH)).allowed
    assert p.authorize(request(peer="spiffe://other.domain/ns/a/sa/b")).rule == "mesh-prefix"
    assert not p.authorize(request(peer="")).allowed  # plaintext: no identity
    assert policies.namespace_of("spiffe://td/ns/shop/sa/x") == "shop"
    xfcc = b"By=spiffe://td/ns/a/sa/app;Hash=ab12;URI=spiffe://td/ns/shop/sa/x"
    assert policies.peer_identity(xfcc) == "spiffe://td/ns/shop/sa/x"
    assert policies.peer_identity(b"spiffe://td/ns/shop/sa/x") == "spiffe://td/ns/shop/sa/x"
    assert policies.peer_identity(b"") == ""
    assert policies.peer_identity(None) == ""
    assert policies.namespace_of("spiffe://td/sa/x") == ""


def test_every_condition_of_a_rule_must_hold_and_any_listed_value_may() -> None:
    p = policy({"action": "allow", "methods": ["GET", "HEAD"], "paths": ["/a", "/b"]})
    assert p.authorize(request("HEAD", "/b/1")).allowed
    assert not p.authorize(request("POST", "/b/1")).allowed
    assert not p.authorize(request("GET", "/c")).allowed


def test_path_prefixes_match_whole_segments() -> None:
    p = policy({"action": "allow", "paths": ["/api/"]})
    assert p.authorize(request(path="/api")).allowed
    assert p.authorize(request(path="/api/v1?x=1")).allowed
    assert not p.authorize(request(path="/apix")).allowed
    assert policy({"action": "allow", "paths": ["/"]}).authorize(request(path="/x")).allowed


@pytest.mark.parametrize(
    ("target", "normal"),
    [
        ("/a//b/", b"/a/b/"),
        ("/%61dmin", b"/admin"),
        ("/a?x=/../..", b"/a"),
        ("/admin;jsessionid=1", b"/admin"),
        ("/admin%3Bx/users", b"/admin/users"),
        ("/", b"/"),
    ],
)
def test_paths_are_decoded_and_slashes_merged_before_matching(target: str, normal: bytes) -> None:
    assert policies.normal_path(target.encode()) == (normal, "")


@pytest.mark.parametrize(
    "target",
    ["/api/../admin", "/api/%2e%2e/admin", "/api/..;/admin", "/./admin", "/api%2Fadmin",
     "/a%5cb", "/a\\b", "/a%zz", "/a%00b", "*", "http://x/"],
)  # fmt: skip
def test_ambiguous_paths_are_refused_not_guessed(target: str) -> None:
    normal, why = policies.normal_path(target.encode())
    assert normal == b""
    assert why


def test_a_denied_path_cannot_be_reached_by_encoding_it() -> None:
    p = policy({"action": "allow"}, {"name": "admin", "action": "deny", "paths": ["/admin"]})
    assert p.authorize(request(path="/%61dmin")).rule == "admin"
    assert p.authorize(request(path="//admin")).rule == "admin"
    assert p.authorize(request(path="/admin;jsessionid=1")).rule == "admin"
    assert p.authorize(request(path="/admin%3B/x")).rule == "admin"


def test_a_repeated_header_neither_earns_an_allow_nor_dodges_a_deny() -> None:
    p = policy(
        {"name": "acme", "action": "allow", "headers": {"x-tenant": ["acme", "beta-*"]}},
        {"name": "debug", "action": "deny", "headers": {"X-Debug": "1"}},
    )
    assert p.authorize(request(headers={"x-tenant": ("acme",)})).allowed
    assert p.authorize(request(headers={"x-tenant": ("beta-7",)})).allowed
    assert not p.authorize(request(headers={"x-tenant": ("acme", "evil")})).allowed
    assert not p.authorize(request(headers={})).allowed
    decision = p.authorize(request(headers={"x-tenant": ("acme",), "x-debug": ("0", "1")}))
    assert decision.rule == "debug"


def test_subjects_name_authenticated_users_and_star_means_any() -> None:
    p = policy(
        {"name": "alice", "action": "allow", "subjects": ["alice"], "methods": ["DELETE"]},
        {"name": "users", "action": "allow", "subjects": ["*"], "methods": ["GET"]},
    )
    assert p.authorize(request("DELETE", subject="alice")).allowed
    assert not p.authorize(request("DELETE", subject="bob")).allowed
    assert p.authorize(request("GET", subject="bob")).allowed
    assert not p.authorize(request("GET", subject="")).allowed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"authorisation": {}}, "authorisation: unknown key; the keys here are authentication"),
        ({"authorization": {"rules": [{"action": "permit"}]}},
         "authorization.rules[0].action: 'permit' is unknown; use allow or deny"),
        ({"authorization": {"rules": [{"action": "allow", "path": ["/a"]}]}},
         "authorization.rules[0].path: unknown key"),
        ({"authorization": {"rules": [{"action": "allow", "paths": ["/a/../b"]}]}},
         "authorization.rules[0].paths[0]: '/a/../b' is not a plain path"),
        ({"authorization": {"rules": [{"action": "allow", "headers": {"bad name": "x"}}]}},
         "is not an HTTP header name"),
        ({"rate_limits": [{"rate": "fast"}]}, "rate_limits[0].rate: 'fast' is not a rate; write e.g. 100/s"),
        ({"rate_limits": [{"rate": "5/s", "key": "ip"}]}, "rate_limits[0].key: 'ip' is unknown"),
        ({"rate_limits": [{"rate": "5/s", "burst": 0}]}, "rate_limits[0].burst: must be a number of at least 1"),
        ({"authentication": {"jwt": [{"issuer": "i"}]}},
         "authentication.jwt[0]: give exactly one of jwks_url: URL or jwks_file: PATH"),
        ({"authentication": {"jwt": [{"issuer": "i", "jwks_file": "f", "algorithms": ["HS256"]}]}},
         "authentication.jwt[0].algorithms: 'HS256' is not accepted; use public-key algorithms"),
        ({"authentication": {"jwt": [{"issuer": "i", "jwks_file": "f", "algorithms": ["none"]}]}},
         "'none' is not accepted"),
        ({"authentication": {"api_keys": {"header": "x-key"}}}, "authentication.api_keys.file: missing"),
        ({"authorization": {"rules": [{"action": "allow", "ports": ["http"]}]}},
         "authorization.rules[0].ports[0]: 'http' is not a port number such as 8080"),
        ({"authorization": {"rules": [{"action": "allow", "ports": [70000]}]}},
         "authorization.rules[0].ports[0]: 70000 is not a port number"),
        ({"outbound": {"authorization": {"rules": [{"action": "allow", "ports": [80]}]}}},
         "outbound.authorization.rules[0].ports: ports are the proxy's inbound ports"),
    ],
)  # fmt: skip
def test_a_bad_policy_names_the_key_and_the_fix(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"^policy\.yaml: ") as caught:
        policyfiles.from_mapping(data, source="policy.yaml")
    assert message in str(caught.value)


def test_a_port_sees_the_rules_for_it_and_default_deny_is_the_whole_policys() -> None:
    p = policy(
        {"name": "reads", "action": "allow", "methods": ["GET"], "ports": [8080]},
        {"name": "db", "action": "allow", "peers": [FRONTEND], "ports": [5432]},
        {"name": "no-batch", "action": "deny", "peers": [BATCH]},
    )
    web, db, other = p.on_port(8080), p.on_port(5432), p.on_port(9000)
    assert web.authorize(request("GET")) == policies.Decision(True, "reads")
    assert not web.authorize(request("GET", peer=BATCH)).allowed  # a rule on every port
    assert web.authorize(request("POST", peer=FRONTEND)) == policies.Decision(False, "default")
    assert db.authorize(request("GET")) == policies.Decision(False, "default")
    assert db.authorize(request("POST", peer=FRONTEND)) == policies.Decision(True, "db")
    assert other.authorize(request("GET", peer=FRONTEND)) == policies.Decision(False, "default")
    unscoped = policy({"action": "allow", "peers": [FRONTEND]})
    assert unscoped.on_port(8080) is unscoped  # nothing to drop: the same compiled policy
    limited = policyfiles.from_mapping(
        {"rate_limits": [{"name": "db", "rate": "5/s", "ports": [5432]}, {"rate": "9/s"}]},
        source="policy.yaml",
    )
    assert [x.name for x in limited.on_port(5432).rate_limits] == ["db", "rate_limits[1]"]
    assert [x.name for x in limited.on_port(8080).rate_limits] == ["rate_limits[1]"]
    assert limited.on_port(8080).authorize(request()).allowed  # no rules: nothing enforced


def test_a_port_whose_rules_are_all_shadow_ones_follows_the_rest_of_the_file() -> None:
    shadow_only = policy({"name": "try", "action": "deny", "ports": [5432], "shadow": True})
    assert shadow_only.on_port(5432).authorize(request()).allowed  # nothing is enforced
    assert not shadow_only.on_port(5432).audit(request()).allowed
    mixed = policy(
        {"name": "try", "action": "allow", "ports": [5432], "shadow": True},
        {"name": "web", "action": "allow", "ports": [8080]},
    )
    assert not mixed.on_port(5432).authorize(request()).allowed  # "web" is enforced: deny
    assert mixed.on_port(5432).audit(request()) == policies.Decision(True, "try")


def test_rate_limits_are_scoped_by_method_and_path() -> None:
    p = policyfiles.from_mapping(
        {"rate_limits": [
            {"name": "all", "rate": "100/s"},
            {"name": "writes", "rate": "6000/m", "methods": ["POST"], "paths": ["/orders"]},
        ]},
        source="policy.yaml",
    )  # fmt: skip
    assert [x.name for x in p.limits_for(request("POST", "/orders/1"))] == ["all", "writes"]
    assert [x.name for x in p.limits_for(request("GET", "/orders/1"))] == ["all"]
    assert p.rate_limits[1].rate == 100.0
    assert p.rate_limits[1].burst == 100.0  # default: one second's worth


def test_a_token_bucket_admits_its_burst_then_its_rate() -> None:
    table = buckets.Buckets(rate=10.0, burst=5.0)
    admitted = sum(1 for i in range(1000) if table.take(b"k", i * 0.001) == 0.0)
    assert admitted == 5 + 9  # burst, then 10/s over 0.999 s
    wait = table.take(b"k", 0.999)
    assert 0.0 < wait <= 0.1
    assert table.take(b"other", 0.999) == 0.0  # another key has its own bucket
    table.sweep(10.0)
    assert table.table == {}  # full buckets are forgotten


def test_a_token_bucket_table_does_not_grow_past_its_bound() -> None:
    table = buckets.Buckets(rate=1.0, burst=1.0, max_keys=100)
    for i in range(1000):
        table.take(b"%d" % i, 0.0)
    assert len(table.table) <= 101
