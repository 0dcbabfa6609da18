"""Request and response heads: checked for ambiguity, rewritten for the next hop.

The parser (llhttp, through httptools) already refuses what RFC 9112 calls invalid: a bare CR
or LF, obs-fold, whitespace before a colon, duplicate or non-numeric ``Content-Length``, both
``Content-Length`` and ``Transfer-Encoding``, bad chunk sizes. What it lets through but a proxy
must not forward, because the next hop might frame the message differently (request
smuggling), is refused here with 400:

* a ``Transfer-Encoding`` other than exactly one ``chunked`` (``gzip, chunked`` is legal but
  no app needs it, and forwarding it means trusting the app's reading of it);
* ``Transfer-Encoding`` in an HTTP/1.0 request (RFC 9112 6.1: faulty framing);
* no ``Host`` in HTTP/1.1, or more than one (RFC 9112 3.2).

Rewriting (RFC 9110 7.6.1): the hop-by-hop fields (``Connection`` and every field it names,
``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``)
are dropped and the framing is written anew, so what goes upstream has exactly one
unambiguous framing: ``Content-Length`` or ``chunked``. ``X-Forwarded-For`` and ``Forwarded``
get the client's address appended (inbound), ``X-Request-Id`` is added when missing;
``traceparent`` and everything else pass untouched. The one exception to the drop: a request
asking for an upgrade (``Upgrade`` with ``Connection: upgrade``) keeps both, since the endpoint
must see them to answer 101, but never offers ``h2c`` (nor passes ``HTTP2-Settings``), as
Envoy and mitmproxy drop it: an app that took it would turn the connection into HTTP/2 the
proxy only tunnels, every later request unseen by the policy, the metrics and the routes
(h2c smuggling). The request is served as HTTP/1.1; an app that speaks HTTP/2 is put behind a
``protocol: http2`` port.

No I/O here: the protocol classes call these with the parsed pieces and write the bytes.
"""

from __future__ import annotations

import itertools
import random
from typing import Final

__all__ = [
    "CHUNKED",
    "HOP_BY_HOP",
    "LENGTH",
    "NONE",
    "Request",
    "reason",
    "request_id",
    "response_head",
    "simple_response",
]

HOP_BY_HOP: Final = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"content-length",
    }
)  # fmt: skip
"""Dropped when forwarding; ``content-length`` too, because framing is rewritten."""

NONE: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2

_REASONS: Final = {
    100: b"Continue", 200: b"OK", 400: b"Bad Request", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}  # fmt: skip


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def _prefix() -> bytes:
    bits = random.SystemRandom().getrandbits(80)
    h = b"%020x" % bits
    # version 4 in the third group, the RFC 9562 variant in the fourth
    return b"%s-%s-4%s-%x%s-" % (h[:8], h[8:12], h[12:15], 8 | (bits & 3), h[15:18])


_PREFIX: Final = _prefix()
_counter = itertools.count(random.getrandbits(40))


def request_id() -> bytes:
    """A request id in UUID form, as Envoy generates for ``x-request-id``: 74 random bits
    chosen when the process starts, then a counter.

    Unique within the process by the counter and across processes by the random part, at a
    tenth of the cost of 128 fresh random bits a request (measurable at 40,000 requests a
    second). It names a request; it guards no secret.
    """
    return _PREFIX + b"%012x" % (next(_counter) & 0xFFFFFFFFFFFF)


class Request:
    """The outcome of checking and rewriting one request head."""

    __slots__ = (
        "detail", "error", "framing", "head", "keep_alive", "length", "request_id", "upgrade",
    )  # fmt: skip

    def __init__(self) -> None:
        self.error = 0
        """Status to answer instead of forwarding (0: forward)."""
        self.detail = b""
        self.head = b""
        self.framing = NONE
        self.length = 0
        self.request_id = b""
        self.keep_alive = True
        self.upgrade = b""
        """The protocol asked for with ``Upgrade`` (and ``Connection: upgrade``), e.g.
        ``websocket``; the request goes on with both, and a 101 turns the connection into a
        tunnel."""


_HOP: Final = 1
_LENGTH: Final = 2
_TE: Final = 3
_CONNECTION: Final = 4
_HOST: Final = 5
_RID: Final = 6
_XFF: Final = 7
_FORWARDED: Final = 8
_UPGRADE: Final = 9
_XFCC: Final = 10
_SPECIAL: Final = {
    b"keep-alive": _HOP, b"proxy-connection": _HOP, b"te": _HOP, b"trailer": _HOP,
    b"upgrade": _UPGRADE, b"content-length": _LENGTH, b"transfer-encoding": _TE,
    b"connection": _CONNECTION, b"host": _HOST, b"x-request-id": _RID,
    b"x-forwarded-for": _XFF, b"forwarded": _FORWARDED, b"x-forwarded-client-cert": _XFCC,
    b"http2-settings": _HOP,  # only meaningful with an h2c upgrade, never forwarded
}  # fmt: skip
"""Request fields that need more than copying: one dict lookup a field finds them."""


def build_request(
    method: bytes,
    target: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    *,
    client: bytes,
    forwarded: bool,
    host: bytes | None,
    peer: bytes = b"",
) -> Request:
    """Check one parsed request head and write the head to send upstream.

    Inbound (``forwarded``), a client's ``x-forwarded-client-cert`` is always dropped and
    ``peer`` (the mTLS-verified identity, ``securing.Mesh.peer``) written instead, when given.
    """
    out = Request()
    if version not in ("1.1", "1.0"):
        out.error, out.detail = 505, b"only HTTP/1.0 and HTTP/1.1 are served here\n"
        return out
    out.keep_alive = version == "1.1"
    hosts = 0
    te: bytes | None = None
    named: list[bytes] = []
    upgrade = b""
    wants_upgrade = False
    rid: bytes | None = None
    xff: bytes | None = None
    fwd: bytes | None = None
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    special = _SPECIAL.get
    for name, value in headers:
        kind = special(name.lower())
        if kind is not None:
            if kind == _HOST:
                hosts += 1
                if host is not None:
                    continue
            elif kind == _RID:
                rid = value
            elif kind == _LENGTH:
                out.framing, out.length = LENGTH, int(value)
                continue
            elif kind == _TE:
                te = value if te is None else b"repeated"
                continue
            elif kind == _CONNECTION:
                for part in value.lower().split(b","):
                    token = part.strip()
                    if token == b"close":
                        out.keep_alive = False
                    elif token == b"keep-alive":
                        out.keep_alive = True
                    elif token == b"upgrade":
                        wants_upgrade = True
                    elif token:
                        named.append(token)
                continue
            elif kind == _HOP:
                continue
            elif kind == _UPGRADE:
                upgrade = value
                continue
            elif kind == _XFCC:
                if forwarded:
                    continue
            elif forwarded:
                if kind == _XFF:
                    xff = value if xff is None else xff + b", " + value
                else:
                    fwd = value if fwd is None else fwd + b", " + value
                continue
        lines += (name, b": ", value, b"\r\n")
    if te is not None:
        if te.strip().lower() != b"chunked":
            out.error, out.detail = 400, b"only Transfer-Encoding: chunked is accepted\n"
            return out
        if version == "1.0":
            out.error, out.detail = 400, b"Transfer-Encoding is not allowed in HTTP/1.0\n"
            return out
        out.framing = CHUNKED
    if hosts != 1 and (hosts or version == "1.1"):
        out.error, out.detail = 400, b"an HTTP/1.1 request needs exactly one Host header\n"
        return out
    if named:
        lines = _drop_named(lines, named)
    if upgrade and b"h2c" in upgrade.lower():
        upgrade = _without_h2c(upgrade)
    if upgrade and wants_upgrade:
        out.upgrade = upgrade
        lines.append(b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade)
    if host is not None:
        lines.append(b"host: %s\r\n" % host)
    if rid is None:
        rid = request_id()
        lines.append(b"x-request-id: %s\r\n" % rid)
    out.request_id = rid
    if forwarded:
        if peer:
            lines.append(b"x-forwarded-client-cert: %s\r\n" % peer)
        node = b'"[%s]"' % client if b":" in client else client
        entry = b"for=%s;proto=http" % node
        lines.append(
            b"x-forwarded-for: %s\r\nforwarded: %s\r\n"
            % (
                client if xff is None else xff + b", " + client,
                entry if fwd is None else fwd + b", " + entry,
            )
        )
    if out.framing == LENGTH:
        lines.append(b"content-length: %d\r\n\r\n" % out.length)
    elif out.framing == CHUNKED:
        lines.append(b"transfer-encoding: chunked\r\n\r\n")
    else:
        lines.append(b"\r\n")
    out.head = b"".join(lines)
    return out


def _drop_named(lines: list[bytes], named: list[bytes]) -> list[bytes]:
    """Remove the fields the request's ``Connection`` header named (RFC 9110 7.6.1)."""
    drop = frozenset(named)
    kept = lines[:4]
    for i in range(4, len(lines), 4):
        if lines[i].lower() not in drop:
            kept += lines[i : i + 4]
    return kept


def response_head(
    status: int,
    status_reason: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    bodiless: bool,
    close: bool,
    http10: bool,
) -> tuple[bytes, bool, bool]:
    """The response head for the client, whether its body goes out chunked, and whether the
    connection closes after it.

    Hop-by-hop fields are dropped and the framing rewritten: a ``Content-Length`` stays; a
    chunked or close-delimited body is chunked anew for an HTTP/1.1 client and close-delimited
    for an HTTP/1.0 one. ``bodiless`` is a response to HEAD, or a 204 or 304.
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, status_reason)]
    named: list[bytes] = []
    length = b""
    hop = HOP_BY_HOP
    for name, value in headers:
        lower = name.lower()
        if lower in hop:
            if lower == b"content-length":
                length = value
            elif lower == b"connection":
                for part in value.lower().split(b","):
                    token = part.strip()
                    if token and token not in (b"keep-alive", b"close"):
                        named.append(token)
            continue
        lines += (name, b": ", value, b"\r\n")
    if named:
        drop = frozenset(named)
        kept = lines[:1]
        for i in range(1, len(lines), 4):
            if lines[i].lower() not in drop:
                kept += lines[i : i + 4]
        lines = kept
    append = lines.append
    chunk = False
    if length:
        append(b"content-length: %s\r\n" % length)
    elif not bodiless:
        if http10:
            close = True
        else:
            chunk = True
            append(b"transfer-encoding: chunked\r\n")
    if close:
        append(b"connection: close\r\n\r\n")
    elif http10:
        append(b"connection: keep-alive\r\n\r\n")
    else:
        append(b"\r\n")
    return b"".join(lines), chunk, close


def simple_response(status: int, body: bytes, *, close: bool, extra: bytes = b"") -> bytes:
    """A complete response the proxy makes itself (errors, load shedding)."""
    return b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s%s\r\n%s" % (
        status,
        reason(status),
        len(body),
        extra,
        b"connection: close\r\n" if close else b"",
        body,
    )


def _without_h2c(upgrade: bytes) -> bytes:
    """``Upgrade``'s protocols but ``h2c`` (see the module docstring); b"" when none is left."""
    kept = [p.strip() for p in upgrade.split(b",") if p.strip() and p.strip().lower() != b"h2c"]
    return b", ".join(kept)
