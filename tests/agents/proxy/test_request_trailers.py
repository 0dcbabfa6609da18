"""Request trailers on HTTP/2 ports carry nothing the proxy vouches for in the head.

A client may end a request with a trailer block. The policy decides on the head, and removes
from it the credential and every field only the proxy may set (the verified claims, the API
key's name, ``x-forwarded-client-cert``); the same names in a trailer were sent on to the app,
where a framework that merges trailers into the request's fields reads a claim the proxy never
verified, or a field a rule decided on with another value. Other trailers (checksums) still
reach the app, as through Envoy.

The app is ``TrailerApp``: a local HTTP/2 (prior knowledge) server written with the ``h2``
library that records each request's head and trailers, since no Debian server reports the
request trailers it received.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from tests.agents.proxy import jwts, support
from tests.agents.proxy.support import start_proxy

FORGED = "spiffe://cluster.local/ns/shop/sa/admin"


class TrailerApp(support.ThreadedApp):
    """Answers every request 200 ``ok`` once it ends; keeps (head, trailers) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[bytes, bytes], dict[bytes, bytes]]] = []
        super().__init__()

    def connection(self, conn: socket.socket) -> None:
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2conn.initiate_connection()
        heads: dict[int, dict[bytes, bytes]] = {}
        trailers: dict[int, dict[bytes, bytes]] = {}
        conn.sendall(h2conn.data_to_send())
        while data := conn.recv(65536):
            for event in h2conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    heads[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    sid = event.stream_id
                    self.requests.append((heads.pop(sid, {}), trailers.pop(sid, {})))
                    h2conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2")])
                    h2conn.send_data(sid, b"ok", end_stream=True)
            conn.sendall(h2conn.data_to_send())


@pytest.fixture
def trailer_app() -> Iterator[TrailerApp]:
    app = TrailerApp()
    yield app
    app.stop()


def _post_with_trailers(
    port: int, head: list[tuple[str, str]], trailers: list[tuple[str, str]]
) -> int:
    """POST with a body and ``trailers`` on one h2c stream; the response's status."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    with support.connection(port, 10) as s:
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "app"),
                              (":path", "/orders"), *head])  # fmt: skip
        conn.send_data(1, b"payload")
        conn.send_headers(1, trailers, end_stream=True)
        s.sendall(conn.data_to_send())
        status = 0
        while True:
            data = s.recv(65536)
            assert data, "the proxy closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return status
            s.sendall(conn.data_to_send())


def _start(tmp_path: Path, app: TrailerApp, policy: str | None) -> support.Proxy:
    config = tmp_path / "proxy.yaml"
    config.write_text(f"inbound:\n  app: {app.address}\n  protocol: http2\n")
    args: list[str] = []
    if policy is not None:
        (tmp_path / "policy.yaml").write_text(policy)
        args = ["--policy", str(tmp_path / "policy.yaml")]
    return start_proxy(*args, config=config, inbound_app=app.address)


def test_trailers_cannot_forge_claims_credentials_or_the_verified_caller(
    tmp_path: Path, trailer_app: TrailerApp
) -> None:
    key = jwts.Key("RS256", "rsa-1")
    jwks = jwts.JwksServer(tmp_path / "jwks")
    jwks.publish(key)
    jwks.start()
    policy = (
        "authentication:\n  jwt:\n"
        f"    - issuer: {jwts.ISSUER}\n      audiences: [{jwts.AUDIENCE}]\n"
        f"      jwks_url: {jwks.url}\n"
        "      claims_to_headers: {sub: x-user, groups: x-groups}\n"
        "authorization:\n  rules:\n"
        "    - {name: tenant-a, action: allow, headers: {x-tenant: [a]}}\n"
    )
    proxy = _start(tmp_path, trailer_app, policy)
    try:
        token = key.sign(sub="alice", groups=["ops"])
        forged = [
            ("x-user", "root"),
            ("x-groups", "admins"),
            ("authorization", "Bearer not-checked"),
            ("x-forwarded-client-cert", f"By={FORGED};URI={FORGED}"),
            ("x-tenant", "b"),  # the rule allowed the head's tenant, not this one
            ("x-checksum", "sha256=abc"),
        ]
        status = _post_with_trailers(
            proxy.ports["inbound"],
            [("authorization", f"Bearer {token}"), ("x-tenant", "a")],
            forged,
        )
        assert status == 200
        (head, trailers) = trailer_app.requests[-1]
        assert head[b"x-user"] == b"alice"  # the verified claim, in the head
        assert trailers == {b"x-checksum": b"sha256=abc"}  # only what the proxy never vouches for
    finally:
        proxy.stop()
        jwks.stop()


def test_without_a_policy_a_trailer_still_cannot_name_the_verified_caller(
    tmp_path: Path, trailer_app: TrailerApp
) -> None:
    proxy = _start(tmp_path, trailer_app, None)
    try:
        forged = [("x-forwarded-client-cert", f"By={FORGED};URI={FORGED}"), ("x-user", "bob")]
        assert _post_with_trailers(proxy.ports["inbound"], [], forged) == 200
        assert trailer_app.requests[-1][1] == {b"x-user": b"bob"}
    finally:
        proxy.stop()
