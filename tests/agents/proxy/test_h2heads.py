"""The HTTP/2 header blocks the proxy sends on, and gRPC's status in them (pure functions)."""

from __future__ import annotations

from sidecarkit.agents.proxy import h2heads

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/shop.Cart/Add"),
    (b":authority", b"cart:50051"),
    (b"content-type", b"application/grpc+proto"),
    (b"te", b"trailers"),
    (b"x-forwarded-for", b"10.0.0.9"),
    (b"x-forwarded-client-cert", b"forged"),
    (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
]


def test_an_inbound_request_gets_the_client_appended_and_a_request_id() -> None:
    req = h2heads.request(REQUEST, client=b"10.0.0.1", forwarded=True, host=None, peer=None)
    fields = dict(req.headers)
    assert (req.method, req.path, req.grpc) == (b"POST", b"/shop.Cart/Add", True)
    assert fields[b"x-forwarded-for"] == b"10.0.0.9, 10.0.0.1"
    assert fields[b"forwarded"] == b"for=10.0.0.1;proto=http"
    assert fields[b"x-request-id"] == req.request_id
    assert len(req.request_id) == 36
    assert fields[b"te"] == b"trailers"  # gRPC needs it
    assert fields[b"traceparent"] == REQUEST[-1][1]  # untouched
    assert b"x-forwarded-client-cert" not in fields  # no verified peer: the forged one goes
    assert [n for n, _ in req.headers[:4]] == [b":method", b":scheme", b":path", b":authority"]


def test_the_verified_caller_replaces_a_client_cert_header_the_client_sent() -> None:
    req = h2heads.request(REQUEST, client=b"::1", forwarded=True, host=None, peer=b"URI=spiffe://x")
    values = [v for n, v in req.headers if n == b"x-forwarded-client-cert"]
    assert values == [b"URI=spiffe://x"]
    assert dict(req.headers)[b"forwarded"] == b'for="[::1]";proto=http'


def test_an_outbound_request_keeps_its_headers_and_takes_the_upstreams_authority() -> None:
    sent = [*REQUEST, (b"x-request-id", b"abc")]
    req = h2heads.request(sent, client=b"127.0.0.1", forwarded=False, host=b"cart.shop", peer=None)
    fields = dict(req.headers)
    assert fields[b":authority"] == b"cart.shop"
    assert fields[b"x-forwarded-for"] == b"10.0.0.9"
    assert b"forwarded" not in fields
    assert req.request_id == b"abc"


def test_request_trailers_lose_the_proxys_own_fields_and_what_the_policy_strips() -> None:
    trailers = [
        (b"x-forwarded-client-cert", b"forged"),
        (b"x-forwarded-for", b"10.9.9.9"),
        (b"forwarded", b"for=10.9.9.9"),
        (b"x-user", b"root"),
        (b"x-checksum", b"abc"),
    ]
    strip = frozenset({b"x-user"})
    inbound = h2heads.request_trailers(trailers, forwarded=True, peer=None, strip=strip)
    assert inbound == [(b"x-checksum", b"abc")]
    # outbound (the app's own calls): nothing is written in the head, so only the policy's
    outbound = h2heads.request_trailers(trailers, forwarded=False, peer=None, strip=strip)
    assert [n for n, _ in outbound] == [
        b"x-forwarded-client-cert", b"x-forwarded-for", b"forwarded", b"x-checksum"
    ]  # fmt: skip
    # a verified caller's connection: the head carries the proxy's certificate field
    verified = h2heads.request_trailers(trailers, forwarded=False, peer=b"URI=x", strip=strip)
    assert b"x-forwarded-client-cert" not in dict(verified)


def test_grpc_status_is_read_from_trailers_and_an_unreadable_one_is_unknown() -> None:
    assert h2heads.grpc_status([(b"grpc-status", b"0"), (b"grpc-message", b"")]) == 0
    assert h2heads.grpc_status([(b"grpc-status", b"14")]) == 14
    assert h2heads.grpc_status([(b"grpc-status", b"x")]) == 2
    assert h2heads.grpc_status([(b"content-type", b"application/grpc")]) is None


def test_the_proxys_own_answer_to_grpc_is_trailers_only_with_the_mapped_status() -> None:
    head, body = h2heads.local_answer(502, b"no endpoint could be reached\n", grpc=True)
    assert body == b""
    assert dict(head) == {
        b":status": b"200",
        b"content-type": b"application/grpc",
        b"grpc-status": b"14",
        b"grpc-message": b"no endpoint could be reached",
    }
    head, _ = h2heads.local_answer(504, b"late", grpc=True)
    assert dict(head)[b"grpc-status"] == b"4"
    head, body = h2heads.local_answer(503, b"busy\n", grpc=False)
    assert dict(head)[b":status"] == b"503"
    assert dict(head)[b"retry-after"] == b"1"
    assert body == b"busy\n"


def test_the_policys_refusals_keep_their_fields_and_map_to_grpcs_statuses() -> None:
    extra = h2heads.fields(
        b'www-authenticate: Bearer realm="orders"\r\nretry-after: 3\r\nratelimit-limit: 5\r\n'
    )
    assert extra == [
        (b"www-authenticate", b'Bearer realm="orders"'),
        (b"retry-after", b"3"),
        (b"ratelimit-limit", b"5"),
    ]
    codes = {s: dict(h2heads.local_answer(s, b"no", grpc=True)[0])[b"grpc-status"]
             for s in (400, 401, 403, 429)}  # fmt: skip
    assert codes == {400: b"13", 401: b"16", 403: b"7", 429: b"8"}
    head, _ = h2heads.local_answer(429, b"rate limit x exceeded\n", grpc=True, extra=extra)
    assert head[:4] == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"8"),
        (b"grpc-message", b"rate limit x exceeded"),
    ]
    assert head[4:] == extra
    head, _ = h2heads.local_answer(429, b"slow down\n", grpc=False, extra=extra)
    assert [v for n, v in head if n == b"retry-after"] == [b"3"]  # the policy's, not a second


def test_a_grpc_message_is_percent_encoded_as_grpc_says() -> None:
    head, _ = h2heads.local_answer(403, "forbidden by policy (régle 100%)\n".encode(), grpc=True)
    assert dict(head)[b"grpc-message"] == b"forbidden by policy (r%C3%A9gle 100%25)"
