"""Checking and rewriting heads, without sockets."""

from __future__ import annotations

import uuid

from sidecarkit.agents.proxy import heads


def _build(headers: list[tuple[bytes, bytes]], version: str = "1.1", **kw: object) -> heads.Request:
    options: dict[str, object] = {"client": b"10.0.0.9", "forwarded": True, "host": None}
    options.update(kw)
    return heads.build_request(b"GET", b"/x", version, headers, **options)  # type: ignore[arg-type]


def test_the_forwarded_head_has_exactly_one_framing_written_anew() -> None:
    req = _build([(b"Host", b"a"), (b"Transfer-Encoding", b"Chunked")])
    assert req.framing == heads.CHUNKED
    assert req.head.lower().count(b"transfer-encoding") == 1
    assert b"content-length" not in req.head.lower()


def test_transfer_codings_other_than_one_chunked_are_refused() -> None:
    for value in (b"gzip", b"gzip, chunked", b"identity"):
        assert _build([(b"Host", b"a"), (b"Transfer-Encoding", value)]).error == 400
    twice = [
        (b"Host", b"a"),
        (b"Transfer-Encoding", b"chunked"),
        (b"transfer-encoding", b"chunked"),
    ]
    assert _build(twice).error == 400
    assert _build([(b"Transfer-Encoding", b"chunked")], version="1.0").error == 400


def test_http11_needs_exactly_one_host_and_other_versions_get_505() -> None:
    assert _build([]).error == 400
    assert _build([(b"Host", b"a"), (b"host", b"b")]).error == 400
    assert _build([], version="1.0").error == 0
    assert _build([(b"Host", b"a")], version="2.0").error == 505


def test_fields_named_by_connection_are_dropped_with_the_hop_by_hop_ones() -> None:
    req = _build([(b"Host", b"a"), (b"Connection", b"close, X-Private"), (b"X-Private", b"1"),
                  (b"Keep-Alive", b"5"), (b"X-Public", b"2")])  # fmt: skip
    lower = req.head.lower()
    assert b"x-private" not in lower
    assert b"keep-alive" not in lower
    assert b"connection" not in lower
    assert b"x-public: 2" in lower
    assert req.keep_alive is False


def test_forwarded_fields_append_the_client_and_ipv6_is_quoted() -> None:
    req = _build([(b"Host", b"a"), (b"X-Forwarded-For", b"1.1.1.1"), (b"Forwarded", b"for=1.1.1.1")],
                 client=b"::1")  # fmt: skip
    assert b"x-forwarded-for: 1.1.1.1, ::1\r\n" in req.head
    assert b'forwarded: for=1.1.1.1, for="[::1]";proto=http\r\n' in req.head


def test_request_ids_are_version_4_uuids_and_differ() -> None:
    ids = {heads.request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i.decode()).version == 4 for i in ids)


def test_a_host_override_replaces_the_clients_host() -> None:
    req = _build([(b"Host", b"127.0.0.1:15001")], host=b"payments.shop.svc", forwarded=False)
    assert b"host: payments.shop.svc\r\n" in req.head
    assert b"127.0.0.1:15001" not in req.head
    assert b"x-forwarded-for" not in req.head


def test_response_heads_rechunk_for_11_and_close_for_10() -> None:
    fields = [
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
    ]
    head, chunk, close = heads.response_head(
        200, b"OK", fields, bodiless=False, close=False, http10=False
    )
    assert chunk is True
    assert close is False
    assert b"x-hop" not in head.lower()
    head, chunk, close = heads.response_head(
        200, b"OK", fields, bodiless=False, close=False, http10=True
    )
    assert chunk is False
    assert close is True
    assert b"connection: close" in head
    head, chunk, _ = heads.response_head(
        200, b"OK", [(b"Content-Length", b"9")], bodiless=True, close=False, http10=False
    )
    assert b"content-length: 9" in head
    assert chunk is False
