"""Authorization on L4 (``protocol: tcp``) inbound ports: after the mTLS handshake, the
policy's rules decide each connection by the peer's verified SPIFFE ID and its namespace.
Real CA, real workload certificates, real handshakes, a real backend that counts what it
was sent."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecarkit.security import contexts, workload
from tests.agents.proxy.support import Proxy, free_port, request, start_backend, start_proxy
from tests.security.support import CaProcess, init_ca, new_token, running_ca

FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
ACCOUNTS = (("shop", "db"), ("shop", "frontend"), ("shop", "intruder"), ("public", "frontend"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaProcess]:
    directory = init_ca(tmp_path_factory.mktemp("l4authz") / "ca")
    for namespace, account in ACCOUNTS:
        token = new_token(directory, namespace, account)
        (directory.parent / f"{namespace}-{account}.token").write_text(token)
    with running_ca(directory) as process:
        yield process


@pytest.fixture(scope="module")
def clients(ca: CaProcess) -> dict[str, ssl.SSLContext]:
    """A client context per workload identity (``namespace/account``)."""
    out = {}
    for namespace, account in ACCOUNTS[1:]:
        issued = workload.fetch(
            ca.url, ca.directory.parent / f"{namespace}-{account}.token", bundle=ca.bundle
        )
        context = contexts.client_context(ca.bundle)
        contexts.load_pair(context, issued.pair)
        out[f"{namespace}/{account}"] = context
    return out


class CountingEcho:
    """Sends back every chunk it reads; counts the connections it accepted and the bytes it
    was sent, so a test can tell that nothing reached it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while chunk := conn.recv(1 << 16):
                with self.lock:
                    self.received += len(chunk)
                conn.sendall(chunk)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def app() -> Iterator[CountingEcho]:
    server = CountingEcho()
    yield server
    server.close()


def _identity(ca: CaProcess) -> str:
    return (
        "identity:\n"
        f"  trust_bundle: {ca.directory / 'root.crt'}\n"
        f"  ca: {ca.url}\n"
        f"  token: {ca.directory.parent / 'shop-db.token'}\n"
    )


def _proxy(tmp_path: Path, ca: CaProcess, app: CountingEcho, rules: str) -> tuple[Proxy, int]:
    port = free_port()
    config = tmp_path / "proxy.yaml"
    config.write_text(
        _identity(ca) + f"inbound:\n  listen: 127.0.0.1:{port}\n  app: 127.0.0.1:{app.port}\n"
        "  protocol: tcp\n  mtls: strict\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(rules)
    proxy = start_proxy(
        "--policy", str(policy), "--log-level", "info", config=config,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return proxy, port


def _log(proxy: Proxy) -> str:
    proxy.stop()
    assert proxy.proc.stderr is not None
    return proxy.proc.stderr.read().decode()


def _exchange(port: int, context: ssl.SSLContext, payload: bytes) -> bytes:
    """What comes back for ``payload`` over mTLS; b"" (or less) when the proxy closes."""
    got = b""
    raw = socket.create_connection(("127.0.0.1", port), 10)
    with contextlib.suppress(OSError), context.wrap_socket(raw) as s:  # SSLError is an OSError
        s.sendall(payload)
        while len(got) < len(payload) and (chunk := s.recv(1 << 16)):
            got += chunk
    raw.close()
    return got


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


RULES = (
    "authorization:\n  rules:\n"
    "    - {name: no-public, action: deny, namespaces: [public]}\n"
    f"    - {{name: frontend, action: allow, peers: ['{FRONTEND}']}}\n"
)


def test_an_allowed_peer_is_relayed_and_others_are_closed_before_the_app_sees_a_connection(
    tmp_path: Path, ca: CaProcess, clients: dict[str, ssl.SSLContext], app: CountingEcho
) -> None:
    proxy, port = _proxy(tmp_path, ca, app, RULES)
    assert _exchange(port, clients["shop/intruder"], b"other account") == b""  # no rule: default
    assert _exchange(port, clients["public/frontend"], b"other namespace") == b""  # denied
    assert app.accepted == 0  # no connection to the app was even opened
    assert _exchange(port, clients["shop/frontend"], b"hello db") == b"hello db"
    assert (app.accepted, app.received) == (1, len(b"hello db"))
    assert proxy.metric("tcp_authz_deny_total", rule="default", upstream="app") == 1
    assert proxy.metric("tcp_authz_deny_total", rule="no-public", direction="inbound") == 1
    assert proxy.metric("tcp_authz_allow_total", rule="frontend") == 1
    log = _log(proxy)
    assert "refused tcp connection: rule no-public" in log
    assert "peer=spiffe://cluster.local/ns/public/sa/frontend" in log
    assert "refused tcp connection: rule default" in log
    assert "peer=spiffe://cluster.local/ns/shop/sa/intruder" in log
    assert (app.accepted, app.received) == (1, len(b"hello db"))


def test_a_shadow_rule_counts_and_logs_what_it_would_refuse_and_the_bytes_flow(
    tmp_path: Path, ca: CaProcess, clients: dict[str, ssl.SSLContext], app: CountingEcho
) -> None:
    rules = (
        "authorization:\n  shadow: true\n  rules:\n"
        f"    - {{name: lock-frontend, action: deny, peers: ['{FRONTEND}']}}\n"
        "    - {name: shop, action: allow, namespaces: [shop]}\n"
    )
    proxy, port = _proxy(tmp_path, ca, app, rules)
    assert _exchange(port, clients["shop/frontend"], b"still let in") == b"still let in"
    assert _exchange(port, clients["shop/intruder"], b"not concerned") == b"not concerned"
    assert proxy.metric("tcp_authz_shadow_deny_total", rule="lock-frontend") == 1
    assert proxy.metric("tcp_authz_shadow_allow_total", rule="shop") == 1
    assert proxy.metric("tcp_authz_deny_total") == 0
    log = _log(proxy)
    assert "shadow: rule lock-frontend would refuse the connection" in log
    assert app.accepted == 2


def test_a_rate_limit_per_peer_closes_the_connections_past_its_burst_and_counts_them(
    tmp_path: Path, ca: CaProcess, clients: dict[str, ssl.SSLContext], app: CountingEcho
) -> None:
    rules = (
        "authorization:\n  rules: [{name: shop, action: allow, namespaces: [shop]}]\n"
        "rate_limits: [{name: per-peer, key: peer, rate: 1/h, burst: 2}]\n"
    )
    proxy, port = _proxy(tmp_path, ca, app, rules)
    assert _exchange(port, clients["shop/frontend"], b"one") == b"one"
    assert _exchange(port, clients["shop/frontend"], b"two") == b"two"
    assert _exchange(port, clients["shop/frontend"], b"three") == b""  # its bucket is empty
    assert _exchange(port, clients["shop/intruder"], b"own bucket") == b"own bucket"
    assert proxy.metric("tcp_ratelimit_limited_total", limit="per-peer", upstream="app") == 1
    assert proxy.metric("tcp_authz_allow_total", rule="shop") == 4
    log = _log(proxy)
    assert "refused tcp connection: limit per-peer" in log
    assert app.accepted == 3


def test_a_reloaded_policy_decides_new_connections_and_connections_already_up_stay(
    tmp_path: Path, ca: CaProcess, clients: dict[str, ssl.SSLContext], app: CountingEcho
) -> None:
    proxy, port = _proxy(tmp_path, ca, app, RULES)
    raw = socket.create_connection(("127.0.0.1", port), 10)
    with clients["shop/frontend"].wrap_socket(raw) as up:
        up.sendall(b"before")
        assert up.recv(100) == b"before"
        assert _exchange(port, clients["shop/intruder"], b"not yet") == b""
        fresh = tmp_path / "policy.new"
        fresh.write_text(
            "authorization:\n  rules:\n    - {name: intruder-now, action: allow,\n"
            "       peers: [spiffe://cluster.local/ns/shop/sa/intruder]}\n"
        )
        fresh.rename(tmp_path / "policy.yaml")
        # counted when read, applied a moment later (once its key sources are): ask until then
        _until(lambda: _exchange(port, clients["shop/intruder"], b"now") == b"now", "no reload")
        assert proxy.metric("policy_reloads_total", result="ok") == 1
        assert _exchange(port, clients["shop/frontend"], b"new one") == b""  # default deny now
        up.sendall(b"after")  # the connection the old policy let in stays
        assert up.recv(100) == b"after"
    assert proxy.metric("tcp_authz_allow_total", rule="intruder-now") == 1
    assert proxy.metric("tcp_authz_allow_total", rule="frontend") == 1  # the one still up
    assert proxy.metric("tcp_authz_deny_total", rule="default") >= 2
    fresh.write_text("authorization:\n  rules: [{name: reads, action: allow, methods: [GET]}]\n")
    fresh.rename(tmp_path / "policy.yaml")  # cannot hold on a tcp port: the last good one stays
    _until(lambda: proxy.metric("policy_reloads_total", result="error") == 1, "not refused")
    assert _exchange(port, clients["shop/intruder"], b"still") == b"still"
    log = _log(proxy)
    assert "authorization.rules[0] (reads): methods match HTTP requests" in log


def test_a_plaintext_tcp_port_has_no_identity_to_allow_and_rules_can_keep_to_ports(
    tmp_path: Path, app: CountingEcho
) -> None:
    """Without mTLS a connection carries no peer: rules on peers never match it. A rule with
    ``ports`` applies on those inbound ports only, so an HTTP rule can sit beside a TCP port."""
    http_app = start_backend(tmp_path / "http")
    http, tcp = _two_ports()
    config = tmp_path / "proxy.yaml"
    config.write_text(
        f"inbound:\n  - {{listen: '127.0.0.1:{http}', app: '{http_app.address}'}}\n"
        f"  - {{listen: '127.0.0.1:{tcp}', app: '127.0.0.1:{app.port}', protocol: tcp}}\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "authorization:\n  rules:\n"
        f"    - {{name: reads, action: allow, methods: [GET], ports: [{http}]}}\n"
        f"    - {{name: db-clients, action: allow, peers: ['{FRONTEND}'], ports: [{tcp}]}}\n"
    )
    proxy = start_proxy("--policy", str(policy), config=config)
    try:
        assert request(http, "/echo")[0] == 200
        assert request(http, "/echo", method="POST", body=b"x")[0] == 403
        with socket.create_connection(("127.0.0.1", tcp), 10) as s:
            with contextlib.suppress(OSError):
                s.sendall(b"plain bytes")
            s.settimeout(10)
            with contextlib.suppress(OSError):
                assert s.recv(100) == b""
        assert proxy.metric("tcp_authz_deny_total", rule="default", upstream=f"app-{tcp}") == 1
        assert (app.accepted, app.received) == (0, 0)
    finally:
        proxy.stop()
        http_app.kill()


def _two_ports() -> tuple[int, int]:
    """Two free ports, bound together so that they differ."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return int(a.getsockname()[1]), int(b.getsockname()[1])


def test_a_settings_reload_that_puts_a_tcp_port_under_an_http_rule_is_refused(
    tmp_path: Path, app: CountingEcho
) -> None:
    http, tcp = _two_ports()
    config = tmp_path / "proxy.yaml"
    config.write_text(f"inbound:\n  - {{listen: '127.0.0.1:{http}', app: '127.0.0.1:1'}}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("authorization:\n  rules: [{name: reads, action: allow, methods: [GET]}]\n")
    proxy = start_proxy(
        "--policy", str(policy), "--log-level", "info", config=config,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    fresh = tmp_path / "proxy.new"
    fresh.write_text(
        config.read_text() + f"  - {{listen: '127.0.0.1:{tcp}', app: '127.0.0.1:{app.port}', "
        "protocol: tcp}\n"
    )
    fresh.rename(config)
    _until(lambda: proxy.metric("config_reloads_total", result="failure") == 1, "not refused")
    with pytest.raises(ConnectionRefusedError):  # the port was not opened
        socket.create_connection(("127.0.0.1", tcp), 10).close()
    log = _log(proxy)
    assert f"(reads): methods match HTTP requests, and inbound port {tcp} is protocol: tcp" in log
    assert app.accepted == 0


def _dry_run(tmp_path: Path, inbound: str, policy: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "proxy.yaml"
    config.write_text(f"inbound:\n{inbound}")
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    return subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config", str(config),
         "--policy", str(path), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


TCP = "  - {listen: '127.0.0.1:5432', app: '127.0.0.1:15432', protocol: tcp}\n"
HTTP = "  - {listen: '127.0.0.1:8080', app: '127.0.0.1:18080'}\n"


@pytest.mark.parametrize(
    ("inbound", "policy", "message"),
    [
        (TCP, "authorization:\n  rules: [{name: reads, action: allow, methods: [GET]}]\n",
         "authorization.rules[0] (reads): methods match HTTP requests, and inbound port 5432 "
         "is protocol: tcp; drop methods from the rule"),
        (TCP + HTTP, "authorization:\n  rules:\n    - {action: deny, paths: [/admin]}\n"
         "    - {name: peers, action: allow, namespaces: [shop]}\n",
         "authorization.rules[0] (rules[0]): paths match HTTP requests, and inbound port 5432 "
         "is protocol: tcp; give the rule ports: [8080] (its HTTP ports) or drop paths"),
        (TCP + HTTP, "authorization:\n  rules: [{action: allow, subjects: ['*'], "
         "headers: {x-tenant: [a]}, ports: [8080, 5432]}]\n",
         "headers, subjects match HTTP requests, and inbound port 5432 is protocol: tcp"),
        (TCP + HTTP, "authorization:\n  rules: [{action: allow, ports: [5433]}]\n",
         "authorization.rules[0].ports: 5433 is not an inbound port of this proxy "
         "(they are 5432, 8080)"),
        (TCP, "authentication:\n  api_keys: {file: /etc/keys}\n",
         "authentication applies to HTTP requests, and every inbound port is protocol: tcp"),
        (TCP, "rate_limits: [{name: tenants, key: 'header:x-tenant', rate: 5/s}]\n",
         "rate_limits[0] (tenants): key header:x-tenant needs HTTP requests, and inbound port "
         "5432 is protocol: tcp; key it on client_ip or peer alone"),
        (TCP + HTTP, "rate_limits: [{key: client_ip, rate: 5/s, methods: [POST]}]\n",
         "rate_limits[0] (rate_limits[0]): methods needs HTTP requests, and inbound port 5432 is "
         "protocol: tcp; give the limit ports: [8080] (its HTTP ports) or key it on client_ip"),
        (TCP + HTTP, "rate_limits: [{key: peer, rate: 5/s, ports: [80]}]\n",
         "rate_limits[0].ports: 80 is not an inbound port of this proxy"),
    ],
    ids=["methods-on-tcp", "paths-on-a-shared-rule", "headers-and-subjects", "unknown-port",
         "api-keys-on-tcp", "header-limit-on-tcp", "method-limit-beside-http",
         "limit-on-an-unknown-port"],
)  # fmt: skip
def test_a_policy_that_cannot_hold_on_a_tcp_port_stops_the_proxy_naming_the_rule_and_the_fix(
    tmp_path: Path, inbound: str, policy: str, message: str
) -> None:
    out = _dry_run(tmp_path, inbound, policy)
    assert out.returncode == 3, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_rules_on_peers_and_namespaces_or_kept_to_http_ports_start_beside_a_tcp_port(
    tmp_path: Path,
) -> None:
    policy = (
        "authorization:\n  rules:\n"
        "    - {name: reads, action: allow, methods: [GET], paths: [/api], ports: [8080]}\n"
        "    - {name: db, action: allow, namespaces: [shop]}\n"
    )
    out = _dry_run(tmp_path, TCP + HTTP, policy)
    assert out.returncode == 0, out.stderr
    out = _dry_run(tmp_path, TCP, "authorization:\n  rules: [{action: allow, peers: ['*']}]\n")
    assert out.returncode == 0, out.stderr
    limits = "rate_limits: [{key: peer, rate: 5/s}, {key: client_ip, rate: 50/s}]\n"
    out = _dry_run(tmp_path, TCP, limits)
    assert out.returncode == 0, out.stderr


def test_a_plaintext_client_on_a_permissive_tcp_port_has_no_identity_and_is_closed_unrelayed(
    tmp_path: Path, ca: CaProcess, clients: dict[str, ssl.SSLContext], app: CountingEcho
) -> None:
    """``mtls: permissive`` lets plaintext in; with rules on peers it is denied like any
    connection no rule allows, before the app is dialled."""
    port = free_port()
    config = tmp_path / "proxy.yaml"
    config.write_text(
        _identity(ca) + f"inbound:\n  listen: 127.0.0.1:{port}\n  app: 127.0.0.1:{app.port}\n"
        "  protocol: tcp\n  mtls: permissive\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(RULES)
    proxy = start_proxy("--policy", str(policy), config=config)
    try:
        for payload in (b"plain bytes", b"GET / HTTP/1.1\r\n"):
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.settimeout(10)
                got = b""
                with contextlib.suppress(OSError):
                    s.sendall(payload)
                    got = s.recv(100)
                assert got == b"", payload
        assert (app.accepted, app.received) == (0, 0)
        assert _exchange(port, clients["shop/frontend"], b"ping") == b"ping"
        assert app.accepted == 1
        assert proxy.metric("tcp_authz_deny_total", rule="default", upstream="app") == 2
        assert proxy.metric("tcp_authz_allow_total", rule="frontend", upstream="app") == 1
    finally:
        proxy.stop()
