"""TLS settings: mTLS modes, identity sources and termination, with errors that say the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ruamel.yaml import YAML

from sidecarkit.agents.proxy import discovery, heads
from sidecarkit.agents.proxy import settings as proxy_settings

IDENTITY = {"trust_bundle": "/ca/root.crt", "ca": "https://ca:15443", "token": "/t"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inbound": {"mtls": "strict"}}, "inbound.mtls: strict needs this workload's certificate"),
        ({"inbound": {"mtls": "sometimes"}}, "inbound.mtls: 'sometimes' is unknown; use one of off, permissive, strict"),
        ({"identity": {"ca": "https://ca"}}, "identity.trust_bundle: missing"),
        ({"identity": {"trust_bundle": "/r", "ca": "http://ca", "token": "/t"}}, "must be an https:// URL"),
        ({"identity": {"trust_bundle": "/r"}}, "give either ca:"),
        ({"identity": {"trust_bundle": "/r", "ca": "https://ca", "cert": "/c", "key": "/k"}}, "give either ca:"),
        ({"identity": {**IDENTITY, "trust_domain": "Not A Domain"}}, "identity.trust_domain: 'Not A Domain' is not a trust domain"),
        ({"identity": IDENTITY, "inbound": {"mtls": "strict", "tls": {"certificates": [{"cert": "/c", "key": "/k"}]}}},
         "a port takes either mTLS from the mesh (mtls:) or TLS from outside"),
        ({"inbound": {"tls": {"certificates": []}}}, "inbound.tls.certificates: give a list of {cert: FILE, key: FILE}"),
        ({"inbound": {"tls": {"certificates": [{"cert": "/c"}]}}}, "inbound.tls.certificates[0].key: give the path of a file"),
        ({"inbound": {"tls": {"certificates": [{"cert": "/c", "key": "/k"}], "min_version": "1.0"}}},
         "inbound.tls.min_version: '1.0'; use 1.2 or 1.3"),
        ({"inbound": {"tls": {"certificates": [{"cert": "/c", "key": "/k"}], "alpn": ["h2"]}}},
         "inbound[0].tls.alpn: h2 needs protocol: http2 on this port"),
        ({"upstreams": [{"name": "a", "listen": 1, "endpoints": ["x:1"], "mtls": True}]},
         "upstreams[a].mtls: needs this workload's certificate"),
        ({"identity": IDENTITY, "upstreams": [{"name": "a", "listen": 1, "endpoints": ["x:1"], "mtls": True, "peer": "spiffe://cluster.local/ns/a"}]},
         "upstreams[0].peer: 'spiffe://cluster.local/ns/a' names no workload"),
    ],
)  # fmt: skip
def test_bad_tls_settings_name_the_key_and_the_fix(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"^proxy\.yaml: ") as caught:
        proxy_settings.from_mapping(data, source="proxy.yaml")
    assert message in str(caught.value)


def test_tls_settings_round_trip_through_the_dry_run_mapping() -> None:
    data = {
        "identity": IDENTITY,
        "inbound": {"listen": 15006, "app": "127.0.0.1:8080", "mtls": "permissive"},
        "upstreams": [{"name": "a", "listen": 15001, "endpoints": ["10.0.0.1:8080"], "mtls": True,
                       "peer": "spiffe://cluster.local/ns/shop/sa/a"}],
    }  # fmt: skip
    settings = proxy_settings.from_mapping(data, source="proxy.yaml")
    again = proxy_settings.from_mapping(proxy_settings.to_mapping(settings), source="dry-run")
    assert again == settings
    assert settings.inbound is not None
    assert settings.inbound.mtls == "permissive"


def test_a_client_sent_x_forwarded_client_cert_never_reaches_the_app() -> None:
    headers = [(b"Host", b"a"), (b"X-Forwarded-Client-Cert", b"URI=spiffe://evil/ns/a/sa/b")]
    plain = heads.build_request(
        b"GET", b"/", "1.1", headers, client=b"10.0.0.9", forwarded=True, host=None
    )
    assert b"spiffe://evil" not in plain.head
    meshed = heads.build_request(
        b"GET", b"/", "1.1", headers, client=b"10.0.0.9", forwarded=True, host=None,
        peer=b"URI=spiffe://cluster.local/ns/shop/sa/client",
    )  # fmt: skip
    assert meshed.head.lower().count(b"x-forwarded-client-cert") == 1
    assert (
        b"x-forwarded-client-cert: URI=spiffe://cluster.local/ns/shop/sa/client\r\n" in meshed.head
    )
    outbound = heads.build_request(
        b"GET", b"/", "1.1", headers, client=b"10.0.0.9", forwarded=False, host=None
    )
    assert b"spiffe://evil" in outbound.head  # the next proxy's inbound removes it


def test_the_mtls_flags_make_the_identity_and_the_inbound_mode() -> None:
    argv = [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--dry-run",
            "--inbound", "15006", "--app", "127.0.0.1:8080", "--mtls", "strict",
            "--identity-ca", "https://ca.test:15443", "--identity-token", "/var/run/token",
            "--trust-bundle", "/etc/ca/root.crt"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    shown = YAML(typ="safe").load(done.stdout)
    assert shown["inbound"]["mtls"] == "strict"
    assert shown["identity"] == {
        "trust_bundle": "/etc/ca/root.crt",
        "trust_domain": "cluster.local",
        "ca": "https://ca.test:15443",
        "token": "/var/run/token",
    }
    lone = subprocess.run([*argv[:5], "--mtls", "strict"], capture_output=True, text=True,
                          check=False, timeout=30)  # fmt: skip
    assert lone.returncode == 3
    assert "--mtls: there is no inbound port" in lone.stderr


def test_inbound_as_a_list_gives_each_port_its_own_mode_and_round_trips() -> None:
    data = {
        "identity": IDENTITY,
        "inbound": [
            {"listen": 15006, "app": "127.0.0.1:8080", "mtls": "strict"},
            {"listen": 15007, "app": "127.0.0.1:9090", "mtls": "permissive"},
        ],
    }
    settings = proxy_settings.from_mapping(data, source="proxy.yaml")
    assert settings.inbound is not None
    assert settings.inbound.mtls == "strict"
    assert [(i.app[1], i.mtls) for i in settings.more_inbound] == [(9090, "permissive")]
    again = proxy_settings.from_mapping(proxy_settings.to_mapping(settings), source="dry-run")
    assert again == settings
    clash = {"inbound": [{"listen": 15006}, {"listen": 15006, "app": 9090}]}
    with pytest.raises(ValueError, match=r"inbound\[1\]\.listen: 0\.0\.0\.0:15006 is also"):
        proxy_settings.from_mapping(clash, source="proxy.yaml")
    bad = {"inbound": [{"listen": 15006}, {"listen": 15007, "mtls": "strict"}]}
    with pytest.raises(ValueError, match=r"inbound\[1\]\.mtls: strict needs"):
        proxy_settings.from_mapping(bad, source="proxy.yaml")


def test_an_endpoints_file_line_may_mark_mtls_or_plaintext_and_nothing_else() -> None:
    text = "10.0.0.7:8080 mtls\n10.0.0.8:8080   plaintext # no sidecar\n10.0.0.9:8080\n"
    assert discovery.parse_marked(text, source="eps") == [
        (("10.0.0.7", 8080), "mtls"),
        (("10.0.0.8", 8080), "plaintext"),
        (("10.0.0.9", 8080), None),
    ]
    with pytest.raises(ValueError, match=r"eps:2: 'tls' after the address is unknown"):
        discovery.parse_marked("10.0.0.7:8080\n10.0.0.8:8080 tls\n", source="eps")


def test_a_proxy_without_tls_settings_never_loads_the_tls_code() -> None:
    """cryptography and the TLS modules cost every pod about 12 MB; only TLS users pay it."""
    code = (
        "import sys\n"
        "from sidecarkit.agents.proxy import command, running, settings\n"
        "s = settings.from_mapping({'inbound': {'app': 8080}}, source='x')\n"
        "running.Agent(s)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cryptography', "
        "'sidecarkit.agents.proxy.securing', 'sidecarkit.agents.proxy.terminating'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "[]"
