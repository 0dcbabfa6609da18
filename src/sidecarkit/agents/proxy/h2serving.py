"""The client side of HTTP/2: h2c with prior knowledge, or h2 chosen by ALPN on a TLS port.

A listener of a ``protocol: http2`` service hands every connection to ``Downstream``. Its first
bytes tell which HTTP it is: the HTTP/2 connection preface (``PRI * HTTP/2.0...``, RFC 9113
section 3.4) makes it an HTTP/2 connection; on TLS, ALPN ``h2`` does so at once. Anything else
is HTTP/1.1: it is answered 505 and closed, since the endpoints behind this port speak only
HTTP/2.

Each request stream becomes an ``h2streams.Stream``, decided by the listener's policy
(``h2guarding``) when it has one, and balanced on its own. Limits: at most
``MAX_STREAMS`` streams at once per connection (``SETTINGS_MAX_CONCURRENT_STREAMS``), the
listener's ``max_requests_in_flight`` (past it 503 / UNAVAILABLE), ``max_headers`` (431) and
``max_header_bytes`` (``SETTINGS_MAX_HEADER_LIST_SIZE``); the header timeout runs from the
connection to its first request, the idle timeout while no stream is open.

Drain: GOAWAY with the last stream ID seen; those streams finish, later ones are refused
(REFUSED_STREAM, which clients retry elsewhere), and the connection closes once it is empty.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from sidecarkit.agents.proxy import exchanges, h2heads, h2wire
from sidecarkit.agents.proxy.h2streams import Stream

if TYPE_CHECKING:
    from sidecarkit.agents.proxy.services import Service

__all__ = ["MAX_STREAMS", "PREFACE", "Downstream"]

log = logging.getLogger("sidecarkit.agent.proxy")

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_STREAMS: Final = 250
"""Streams open at once on one client connection."""
LINGER: Final = 2.0
"""Seconds a connection ended by a connection error reads (and drops) what the client still
sends before it closes."""
DRAIN_IDLE: Final = 1.0
"""Seconds an empty connection stays open after its GOAWAY (the client reads it first)."""

_REFUSED: Final = int(h2.errors.ErrorCodes.REFUSED_STREAM)
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""A method is a token of these (RFC 9110 section 5.6.2), as HTTP/1.1's parser insists: any
other byte is refused with 400 before the policy logs the method unquoted, as nghttp2 refuses
it for Envoy."""


class Downstream(h2wire.Side):
    """One client connection on an HTTP/2 port."""

    def __init__(self, service: Service) -> None:
        super().__init__(service.loop, service.client_tcp, client_side=False)
        self.service = service
        self.streams: dict[int, Stream] = {}
        self.sniffing = True
        self.seen = b""
        self.client = b""
        self.peer: bytes | None = None
        self.deadline = 0.0
        self.closing = False
        self.last_sid = 0
        self.lost = False
        self.headers: list[tuple[bytes, bytes]] = []
        """The fields of the stream the policy is deciding (``h2guarding``)."""

    # -- transport -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        service = self.service
        self.tcp.open += 1
        self.tcp.opened += 1
        if len(service.connections) >= service.limits.max_connections or service.draining:
            transport.abort()  # type: ignore[attr-defined]
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if service.mesh is not None:
            peer_id = service.mesh.peer(transport)
            if peer_id is None:
                transport.abort()  # type: ignore[attr-defined]
                return
            if peer_id or ssl_object is not None:
                self.peer = peer_id
        elif ssl_object is not None:
            self.peer = b""
        service.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]).encode() if peer else b"unknown"
        self.deadline = self.loop.time() + service.timeouts.header
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._start()

    def _start(self) -> None:
        self.sniffing = False
        h2c = self.h2
        h2c.initiate_connection()
        h2c.update_settings({
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.service.limits.max_header_bytes,
        })  # fmt: skip
        self.start_window()
        self.mark()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.closed = True
        self.tcp.open -= 1
        self.tcp.closed += 1
        self.service.connections.discard(self)
        for stream in list(self.streams.values()):
            stream.client_reset()
        self.streams.clear()

    def flush(self) -> None:
        super().flush()
        if self.closing and not self.streams and not self.out and not self.closed:
            self.deadline = min(self.deadline or 1e18, self.loop.time() + DRAIN_IDLE)

    def data_received(self, data: bytes) -> None:
        self.tcp.read += len(data)
        if self.closed:  # lingering after a connection error: dropped
            return
        if self.sniffing:
            self.seen += data
            if len(self.seen) < len(PREFACE) and PREFACE.startswith(self.seen):
                return  # too little to tell yet
            if not self.seen.startswith(PREFACE):
                self._not_http2()
                return
            data, self.seen = self.seen, b""
            self._start()
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("HTTP/2 error from %s: %s", self.client.decode(), exc)
            self.service.local.requests += 1
            self.service.local.respond(400, 0.0)
            self.flush()
            self._linger()
            return
        for event in events:
            self._event(event)
        self.mark()

    def _linger(self) -> None:
        """End the connection after a connection error's GOAWAY without a reset: the GOAWAY
        is followed by a FIN, and what the client still sends is read and dropped until it
        closes (``LINGER`` seconds at most). Closed at once with bytes unread, the socket
        answers a reset that can overtake the GOAWAY (nginx's lingering close, for the same
        reason). Its streams end now: nothing more is written."""
        self.closed = True
        for stream in list(self.streams.values()):
            stream.client_reset()
        self.streams.clear()
        t: Any = self.t
        if not t.can_write_eof():  # TLS: the close_notify ends it in order
            t.close()
            return
        t.write_eof()
        self.loop.call_later(LINGER, t.close)

    def _not_http2(self) -> None:
        """Not the preface: an HTTP/1.x request line gets a 505 (the endpoints behind this
        port speak only HTTP/2); anything else is closed at once, as RFC 9113 says."""
        line, crlf, _ = self.seen.partition(b"\r\n")
        if not crlf and len(self.seen) < 8192:
            return  # wait for the end of the first line (the header timeout runs)
        self.closing = True
        self.sniffing = False
        if not line.endswith((b" HTTP/1.1", b" HTTP/1.0")):
            self.service.local.requests += 1
            self.service.local.respond(400, 0.0)
            self.t.close()
            return
        self.service.local.requests += 1
        self.service.local.respond(505, 0.0)
        body = b"this port speaks HTTP/2 only: use h2c (prior knowledge) or h2 over TLS\n"
        head = b"HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain\r\n"
        head += b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self.tcp.written += len(head) + len(body)
        self.t.write(head + body)
        self.t.close()

    def _event(self, event: Any) -> None:
        kind = type(event)
        streams = self.streams
        if kind is h2.events.DataReceived:
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.request_data(event.data, event.flow_controlled_length)
            else:
                self.ack(event.stream_id, event.flow_controlled_length)
        elif kind is h2.events.RequestReceived:
            self._request(event.stream_id, event.headers)
        elif kind is h2.events.StreamEnded:
            self.ended(event.stream_id, 1)
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.request_end(stream.req_trailers)
        elif kind is h2.events.TrailersReceived:
            stream = streams.get(event.stream_id)
            if stream is not None:  # filtered when sent, once the policy decided the stream
                stream.req_trailers = event.headers
        elif kind is h2.events.WindowUpdated:
            if event.stream_id:
                out = self.out.get(event.stream_id)
                if out is not None:
                    self.pump(event.stream_id, out)
            else:
                self.pump_all()
        elif kind is h2.events.StreamReset:
            self.h2.live.pop(event.stream_id, None)
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.client_reset()
        elif kind is h2.events.RemoteSettingsChanged:
            self.pump_all()
        elif kind is h2.events.ConnectionTerminated:
            self.closing = True  # the client opens no more streams

    def _request(self, sid: int, headers: list[tuple[bytes, bytes]]) -> None:
        service = self.service
        if self.goaway_sent and sid > self.last_sid:
            self.reset(sid, _REFUSED)  # after our GOAWAY: the client retries elsewhere
            return
        self.last_sid = sid
        self.deadline = 0.0
        req = h2heads.request(
            headers, client=self.client, forwarded=service.forwarded,
            host=service.host, peer=self.peer,
        )  # fmt: skip
        stream = Stream(self, sid, service, req)
        self.streams[sid] = stream
        service.in_flight += 1
        if req.method.translate(None, _TCHAR):  # h2 lets any byte but CR, LF, NUL through
            stream.answer(400, b"the :method is not a token (RFC 9110 section 9.1)\n")
        elif len(headers) > service.limits.max_headers:
            stream.answer(431, b"too many request headers\n")
        elif service.in_flight > service.limits.max_requests_in_flight:
            stream.answer(503, b"too many requests in flight\n")
        elif service.guard is not None and service.guard.check(self, stream, headers):
            pass  # answered by the policy, or waiting for a key set
        else:
            stream.dispatch()

    # -- called by streams ---------------------------------------------------------------
    def send_head(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.closed:
            return
        try:
            self.h2.send_headers(sid, headers, end_stream=end)
        except h2.exceptions.ProtocolError:  # reset by the client meanwhile
            return
        if end:
            self.ended(sid, 2)
        self.mark()

    def finished(self, stream: Stream) -> None:
        self.streams.pop(stream.sid, None)
        self.service.in_flight -= 1
        if self.service.access_log is not None:
            _access_log(self, stream)
        if not self.streams:
            self.deadline = self.loop.time() + (
                DRAIN_IDLE if self.closing else self.service.timeouts.idle
            )

    # -- called by the service -----------------------------------------------------------
    def timed_out(self) -> None:
        if self.streams or self.closed:
            self.deadline = 0.0
            return
        if not self.sniffing and not self.goaway_sent:
            self.goaway(self.last_sid)
        self.flush()
        self.t.close()

    def drain(self) -> None:
        """GOAWAY now; the streams up to it finish, then the connection closes."""
        self.closing = True
        if self.sniffing:
            self.deadline = self.loop.time() + DRAIN_IDLE
            return
        self.goaway(self.last_sid)
        if not self.streams:
            self.deadline = self.loop.time() + DRAIN_IDLE


def _access_log(down: Downstream, stream: Stream) -> None:
    import orjson  # noqa: PLC0415 - only when the access log is on

    record = {
        "direction": down.service.direction,
        "upstream": down.service.name,
        "method": stream.req.method.decode("latin-1"),
        "path": stream.req.path.decode("latin-1"),
        "status": stream.status,
        "grpc_status": stream.grpc_code,
        "duration_ms": round((exchanges.now() - stream.started) * 1000.0, 3),
        "request_bytes": stream.body_bytes,
        "response_bytes": stream.sent_bytes,
        "endpoint": stream.endpoint.label if stream.endpoint is not None else None,
        "tries": stream.tries,
        "request_id": stream.req.request_id.decode("latin-1"),
        "client": down.client.decode("latin-1"),
        "protocol": "HTTP/2",
    }
    out = down.service.access_log
    if out is not None:
        out.write(orjson.dumps(record).decode() + "\n")
        out.flush()
