"""Transparent mode in a network namespace the test creates: ``sidecarkit agent proxy-init``
writes real iptables rules there, an app process (as user nobody) dials a Service address with
no proxy port in sight, and the proxy (as root, whose connections the rules leave alone) serves
it. Needs root, ``ip`` and ``iptables`` (Debian packages iproute2 and iptables); skipped with
the reason otherwise, outside CI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.proxy import support

APP = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)
path = (sys.argv[3:] or ["/ok"])[0].encode()
s.sendall(b"GET " + path + b" HTTP/1.1\\r\\nHost: orders\\r\\n\\r\\n")
out = b""
while b"\\r\\n\\r\\n" not in out:
    out += s.recv(65536)
head, _, body = out.partition(b"\\r\\n\\r\\n")
length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
while len(body) < length:  # the test backend keeps connections open: read by length
    body += s.recv(65536)
print(body.decode("latin-1"))
"""
ADMIN = 15190


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    for tool in ("ip", "iptables", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables util-linux)"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _usable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the transparent-mode test, but {reason}")
        pytest.skip(reason)
    name = f"sk-transparent-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        for argv in (
            ["link", "set", "lo", "up"],
            ["addr", "add", "10.77.0.2/32", "dev", "lo"],  # where the endpoints listen
            # the "Service range": local, so that a connection to it has a route (the rules
            # redirect it) and 10.96.0.20, a destination no upstream claims, can be listened on
            ["route", "add", "local", "10.96.0.0/16", "dev", "lo"],
        ):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        while support.STARTED:
            proc = support.STARTED.pop()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        subprocess.run(["ip", "netns", "del", name], check=False)


def inside(ns: str, *argv: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=stdout)
    support.STARTED.append(proc)
    return proc


def backend(ns: str, record: Path, host: str, port: int) -> None:
    record.mkdir()
    proc = inside(
        ns, sys.executable, str(support.HERE / "backend.py"), str(port), str(record), host
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"


def app(ns: str, host: str, port: int, path: str = "/ok") -> str:
    """What the app (user nobody, so its connections are redirected) got back from host:port."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "setpriv", "--reuid", "65534", "--regid", "65534",
         "--clear-groups", "/usr/bin/python3", "-c", APP, host, str(port), path],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def admin(ns: str, path: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import sys, urllib.request; "
         f"print(urllib.request.urlopen('http://127.0.0.1:{ADMIN}{path}', timeout=5).read().decode())"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else ""


def test_redirected_connections_go_to_the_upstream_named_by_their_original_destination(
    netns: str, tmp_path: Path
) -> None:
    backend(netns, tmp_path / "orders", "10.77.0.2", 18080)
    backend(netns, tmp_path / "other", "10.96.0.20", 18081)
    config = tmp_path / "proxy.yaml"
    config.write_text(json.dumps({
        "admin": f"127.0.0.1:{ADMIN}",
        "transparent": "127.0.0.1:15001",
        "upstreams": [{"name": "orders", "addresses": ["10.96.0.10:80"],
                       "endpoints": ["10.77.0.2:18080"]}],
    }))  # fmt: skip
    init = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "sidecarkit", "agent", "proxy-init",
         "--redirect-to", "15001", "--proxy-uid", "0", "--include", "10.96.0.0/16"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    assert "REDIRECT --to-ports 15001" in init.stdout
    proxy = inside(netns, sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config",
                   str(config), "--log-level", "warning", stdout=None)  # fmt: skip
    deadline = time.monotonic() + 30
    while "ready" not in admin(netns, "/ready") and time.monotonic() < deadline:
        assert proxy.poll() is None, "the proxy exited"
        time.sleep(0.2)
    # nothing listens on 10.96.0.10: only the redirect and the proxy can answer
    assert app(netns, "10.96.0.10", 80) == "ok 18080"
    # a destination no upstream claims passes through to where the app sent it
    assert app(netns, "10.96.0.20", 18081) == "ok 18081"
    metrics = admin(netns, "/metrics")
    assert 'request_total{direction="outbound",upstream="orders",endpoint="10.77.0.2:18080"} 1' in (
        metrics
    )
    assert 'tcp_open_total{direction="outbound",upstream="passthrough",peer="dst"} 1' in metrics
    # running proxy-init again replaces its rules instead of adding to them
    again = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "sidecarkit", "agent", "proxy-init",
         "--redirect-to", "15001", "--proxy-uid", "0", "--include", "10.96.0.0/16"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables", "-t", "nat", "-S"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert listed.count("-j SIDECARKIT_OUTPUT") == 1, listed
    assert listed.count("REDIRECT") == 1, listed
    assert app(netns, "10.96.0.10", 80) == "ok 18080"


def test_upstream_addresses_without_a_transparent_port_are_refused_with_the_fix() -> None:
    from sidecarkit.agents.proxy import settings as proxy_settings  # noqa: PLC0415

    data = {"upstreams": [{"name": "orders", "addresses": ["10.96.0.10:80"],
                           "endpoints": ["10.0.0.1:80"]}]}  # fmt: skip
    with pytest.raises(ValueError, match=r"upstreams\[orders\]\.addresses: .* set transparent:"):
        proxy_settings.from_mapping(data, source="proxy.yaml")
    data["upstreams"][0]["addresses"] = ["orders.shop:80"]
    with pytest.raises(ValueError, match=r"addresses\[0\]: give the IPv4 address"):
        proxy_settings.from_mapping({**data, "transparent": 15001}, source="proxy.yaml")


@pytest.fixture
def client_netns(netns: str) -> Iterator[str]:
    """A second namespace joined to the first by a veth pair: a client outside the pod."""
    name = netns + "-client"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        made = subprocess.run(
            ["ip", "-n", netns, "link", "add", "sk-pod", "type", "veth", "peer", "name",
             "sk-client", "netns", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode:
            pytest.skip(f"cannot create a veth pair: {made.stderr.strip()}")
        for ns, link, address in ((netns, "sk-pod", "10.88.0.2/24"),
                                  (name, "sk-client", "10.88.0.1/24")):  # fmt: skip
            subprocess.run(["ip", "-n", ns, "addr", "add", address, "dev", link], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", link, "up"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_connections_from_outside_to_the_apps_port_reach_it_through_the_inbound_listener(
    netns: str, client_netns: str, tmp_path: Path
) -> None:
    backend(netns, tmp_path / "app", "0.0.0.0", 8080)
    init = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "sidecarkit", "agent", "proxy-init",
         "--proxy-uid", "0", "--include", "10.96.0.0/16", "--inbound-port", "8080"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    proxy = inside(netns, sys.executable, "-m", "sidecarkit", "agent", "proxy",
                   "--inbound", "0.0.0.0:15006", "--app", "127.0.0.1:8080",
                   "--admin", f"127.0.0.1:{ADMIN}", "--log-level", "warning", stdout=None)  # fmt: skip
    deadline = time.monotonic() + 30
    while "ready" not in admin(netns, "/ready") and time.monotonic() < deadline:
        assert proxy.poll() is None, "the proxy exited"
        time.sleep(0.2)
    # the client dials the app's own port; the proxy (which adds x-forwarded-for) answers
    echoed = json.loads(app(client_netns, "10.88.0.2", 8080, "/echo"))
    headers = {k.lower(): v for k, v in echoed["headers"]}
    assert headers["x-forwarded-for"] == "10.88.0.1"
    metrics = admin(netns, "/metrics")
    assert 'request_total{direction="inbound",upstream="app",endpoint="127.0.0.1:8080"} 1' in (
        metrics
    )


H2C_APP = """
import socket, sys
def frame(kind, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload
def literal(name, value):  # HPACK: literal without indexing, new name, no Huffman
    return b"\\0" + bytes((len(name),)) + name + bytes((len(value),)) + value
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)
out = b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + frame(4, 0, 0, b"")
for sid, path in ((1, b"/test.Echo/Unary"), (3, b"/test.Admin/Drop")):
    block = b"".join(literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"echo"), (b":path", path),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")))
    out += frame(1, 4, sid, block) + frame(0, 1, sid, b"\\0\\0\\0\\0\\2hi")
s.sendall(out)
seen, ended, got = b"", set(), {}
while ended != {1, 3}:
    chunk = s.recv(65536)
    if not chunk:
        print("closed", seen[:60])
        sys.exit(0)
    seen += chunk
    while len(seen) >= 9 and len(seen) >= 9 + int.from_bytes(seen[:3], "big"):
        size = int.from_bytes(seen[:3], "big")
        kind, flags, sid = seen[3], seen[4], int.from_bytes(seen[5:9], "big") & 0x7FFFFFFF
        payload, seen = seen[9:9 + size], seen[9 + size:]
        if kind == 0 and sid in (1, 3):
            got[sid] = got.get(sid, b"") + payload
        if kind in (0, 1) and flags & 1:
            ended.add(sid)
        if kind == 3 or kind == 7:
            ended.add(sid)
print(got.get(1, b"")[5:].decode(), got.get(3, b"-")[5:].decode() or "-")
"""


def test_redirected_h2c_calls_to_an_http2_upstream_are_served_as_http2_under_its_policy(
    netns: str, tmp_path: Path
) -> None:
    grpc_app = inside(netns, sys.executable, str(support.HERE / "grpcbackend.py"), "18090", "app")
    assert grpc_app.stdout is not None
    assert grpc_app.stdout.readline() == b"ready\n"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "outbound:\n  authorization:\n    rules:\n"
        "      - {name: unary, action: allow, upstreams: [echo], paths: [/test.Echo/Unary]}\n"
    )
    config = tmp_path / "proxy.yaml"
    config.write_text(json.dumps({
        "admin": f"127.0.0.1:{ADMIN}",
        "transparent": "127.0.0.1:15001",
        "policy": str(policy),
        "upstreams": [{"name": "echo", "protocol": "http2", "listen": "127.0.0.1:15003",
                       "addresses": ["10.96.0.30:50051"],
                       "endpoints": ["127.0.0.1:18090"]}],
    }))  # fmt: skip
    init = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "sidecarkit", "agent", "proxy-init",
         "--redirect-to", "15001", "--proxy-uid", "0", "--include", "10.96.0.0/16"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    proxy = inside(netns, sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config",
                   str(config), "--log-level", "warning", stdout=None)  # fmt: skip
    deadline = time.monotonic() + 30
    while "ready" not in admin(netns, "/ready") and time.monotonic() < deadline:
        assert proxy.poll() is None, "the proxy exited"
        time.sleep(0.2)
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "setpriv", "--reuid", "65534", "--regid", "65534",
         "--clear-groups", "/usr/bin/python3", "-c", H2C_APP, "10.96.0.30", "50051"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the allowed call reaches the app; the other one is refused by the outbound rules
    assert done.stdout.split() == ["app:hi", "-"]
    metrics = admin(netns, "/metrics")
    assert 'http_authz_deny_total{direction="outbound",upstream="echo",rule="default"} 1' in (
        metrics
    )
