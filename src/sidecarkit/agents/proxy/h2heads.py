"""HTTP/2 header blocks on their way through the proxy, and gRPC's status in them. Pure.

A request's block is checked by ``h2`` as it arrives (RFC 9113 section 8.2: lowercase names, no
connection-specific fields, ``te`` only as ``trailers``, the pseudo-fields in place). What the
proxy adds is what it adds to HTTP/1.1 requests (``heads``): inbound, the client's address in
``x-forwarded-for`` and ``forwarded`` and the verified caller in ``x-forwarded-client-cert``;
``x-request-id`` when missing; ``:authority`` replaced when the upstream sets ``host``. A
request's trailer block loses every field the proxy writes in the head or the policy removes
from it: nothing checks a trailer, and some servers merge trailers into the request's fields.

gRPC (``content-type: application/grpc...``) reports its outcome in the ``grpc-status``
trailer, or in the head of a "trailers-only" response. Answers the proxy makes itself to a gRPC
request are trailers-only with the status the HTTP one maps to, as gRPC's HTTP-to-status table
says, so a gRPC client sees UNAVAILABLE for a 502, not a protocol error.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GRPC_FOR_HTTP",
    "Request",
    "fields",
    "grpc_status",
    "local_answer",
    "request",
    "request_trailers",
    "response_headers",
]

Headers = list[tuple[bytes, bytes]]

GRPC_FOR_HTTP: Final = {
    400: 13,  # INTERNAL
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 12,  # UNIMPLEMENTED
    413: 8,  # RESOURCE_EXHAUSTED
    429: 8,  # RESOURCE_EXHAUSTED: what Envoy's rate_limited_as_resource_exhausted sends
    431: 8,
    502: 14,
    503: 14,
    504: 4,  # DEADLINE_EXCEEDED
}
"""gRPC status codes for the proxy's own HTTP answers (doc/http-grpc-status-mapping.md). A
rate limit's 429 is RESOURCE_EXHAUSTED, not the table's UNAVAILABLE: gRPC clients with a retry
policy retry UNAVAILABLE at once, which a refused caller should not do."""

_HOP: Final = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                         b"upgrade", b"http2-settings"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Request:
    headers: Headers
    """The block to send on."""
    method: bytes
    path: bytes
    grpc: bool
    request_id: bytes


def request(
    headers: Headers,
    *,
    client: bytes,
    forwarded: bool,
    host: bytes | None,
    peer: bytes | None,
) -> Request:
    """The block sent to the endpoint for a request block received from the client."""
    out: Headers = []
    method = path = b""
    grpc = False
    request_id = b""
    xff = b""
    fwd = b""
    for name, value in headers:
        if name[0] == 58:  # ":"
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority" and host is not None:
                out.append((name, host))
                continue
        elif name == b"content-type":
            grpc = value.startswith(b"application/grpc")
        elif name == b"x-request-id":
            request_id = value
        elif forwarded and name == b"x-forwarded-for":
            xff = value if not xff else xff + b", " + value
            continue
        elif forwarded and name == b"forwarded":
            fwd = value if not fwd else fwd + b", " + value
            continue
        elif name == b"x-forwarded-client-cert" and (forwarded or peer is not None):
            continue  # the proxy's word on the caller, never the client's (plaintext too)
        elif name in _HOP:
            continue
        out.append((name, value))
    if not request_id:
        request_id = str(uuid.uuid4()).encode()
        out.append((b"x-request-id", request_id))
    if forwarded:
        out.append((b"x-forwarded-for", xff + b", " + client if xff else client))
        quoted = b'"[%s]"' % client if b":" in client else client
        mine = b"for=" + quoted + b";proto=http"
        out.append((b"forwarded", fwd + b", " + mine if fwd else mine))
    if peer:
        out.append((b"x-forwarded-client-cert", peer))
    return Request(out, method, path, grpc, request_id)


def request_trailers(
    headers: Headers, *, forwarded: bool, peer: bytes | None, strip: frozenset[bytes]
) -> Headers:
    """The trailer block sent to the endpoint for a request's trailers from the client:
    connection-specific fields dropped, and the fields ``request`` writes itself in the head
    (as it would remove them there) and the policy's ``strip`` (claims, credentials)."""
    out: Headers = []
    for name, value in headers:
        if name in _HOP or name in strip:
            continue
        if name == b"x-forwarded-client-cert" and (forwarded or peer is not None):
            continue
        if forwarded and name in (b"x-forwarded-for", b"forwarded"):
            continue
        out.append((name, value))
    return out


def response_headers(headers: Headers) -> Headers:
    """A response or trailer block to send on: connection-specific fields dropped."""
    return [(n, v) for n, v in headers if n not in _HOP]


def grpc_status(headers: Headers) -> int | None:
    """The ``grpc-status`` of a trailer block (or a trailers-only head); None without one."""
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return 2  # UNKNOWN: what gRPC makes of a status it cannot read
    return None


def local_answer(
    status: int, detail: bytes, *, grpc: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Headers, bytes]:
    """The head (and body) of an answer the proxy makes itself, with the ``extra`` fields
    (the policy's ``www-authenticate``, ``retry-after``, ``ratelimit-*``). To gRPC: a
    trailers-only response, HTTP 200 with the mapped ``grpc-status`` and the detail as
    ``grpc-message``, the extra fields kept, as Envoy answers a gRPC call it refuses."""
    if grpc:
        code = GRPC_FOR_HTTP.get(status, 2)
        message = _percent(detail.strip())
        head = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(code).encode()),
            (b"grpc-message", message),
            *extra,
        ]
        return head, b""
    head = [
        (b":status", str(status).encode()),
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(detail)).encode()),
        *extra,
    ]
    if status in (503, 429) and not any(name == b"retry-after" for name, _ in extra):
        head.append((b"retry-after", b"1"))
    return head, detail


def _percent(text: bytes) -> bytes:
    """``grpc-message`` encoding (gRPC's PROTOCOL-HTTP2.md): printable ASCII but ``%`` as is,
    any other byte as ``%XX``; a policy's rule names may be UTF-8."""
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in text)


def fields(lines: bytes) -> Headers:
    """``name: value\\r\\n`` lines (the policy's answers and verified claims, lower-case
    names, values without CR or LF) as HTTP/2 fields."""
    out: Headers = []
    for line in lines.split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if sep:
            out.append((name.lower(), value))
    return out
