"""The client side of the data path: parse a request, pick an endpoint, forward, answer.

Theory of operation. Each client connection is a ``Downstream`` protocol with an httptools
request parser. A request becomes an ``exchanges.Exchange`` when its head is complete;
exchanges queue in arrival order and only the first one is forwarded, so pipelined requests are
answered in order.
While an exchange waits for a connection its body (if any) is held, bounded: past
``HOLD_BYTES`` the client's socket stops being read. Once attached to an upstream
``pools.Connection`` body pieces are written straight through, and flow control runs both
ways: a full upstream buffer pauses reading the client, a slow client pauses reading the app.

No asyncio Task exists per request: callbacks from the two parsers drive everything; a Task
appears only to open a new upstream connection.

An exchange ends in one of these ways (each path writes exactly one response or closes):

====================  ======================================================================
event                 outcome
====================  ======================================================================
response complete     metrics, access log; next queued exchange, or idle
101 to an upgrade     both connections become one byte stream until either closes
bad request           400/413/414/431/505 from the proxy, connection closed
shed (in-flight cap)  503 + Retry-After, keep-alive kept
refused by policy     401/403/429 (400: ambiguous path) from ``guarding``, keep-alive kept
connect fails         retry on another endpoint (any method: nothing was sent), else 502
endpoint fails early  retry when idempotent, body-less and the budget allows, else 502
retryable status      same rule, the response is dropped with its connection
endpoint fails late   client connection closed (the client sees a truncated response)
client goes away      upstream connection closed (its response can't be delivered)
per-try timeout       as "endpoint fails early"; overall timeout: 504
====================  ======================================================================
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Final

import httptools

from sidecarkit.agents.proxy import exchanges, heads, pools, services

__all__ = ["Downstream", "Exchange"]

log = logging.getLogger("sidecarkit.agent.proxy")

DRAIN_IDLE: Final = 1.0
"""Seconds an idle keep-alive connection is kept open once draining began."""
PIPELINE_DEPTH: Final = 32
"""Requests queued on one connection before reading pauses."""
_JOIN_TLS: Final = 16384
"""Below this, the pieces of a batch are joined before a TLS write: each write is a record
(encrypted and framed on its own), so one record for head and body costs less than two."""

_PAUSE_HOLD: Final = exchanges.PAUSE_HOLD
_PAUSE_UPSTREAM: Final = exchanges.PAUSE_UPSTREAM
_PAUSE_PIPELINE: Final = exchanges.PAUSE_PIPELINE
_PAUSE_TUNNEL: Final = exchanges.PAUSE_TUNNEL

_now = exchanges.now
Exchange = exchanges.Exchange


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing with a status to answer."""


class Downstream(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "batching",
        "client",
        "closing",
        "current",
        "deadline",
        "head_bytes",
        "headers",
        "http10",
        "in_head",
        "loop",
        "lost",
        "measure",
        "out",
        "parser",
        "paused",
        "peer",
        "queue",
        "refuse",
        "service",
        "t",
        "tcp",
        "tunnel",
        "tunnel_wait",
        "upgrading",
        "url",
    )  # fmt: skip

    def __init__(self, service: services.Service) -> None:
        self.service = service
        self.loop = service.loop
        self.t: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = b""
        self.queue: collections.deque[Exchange] = collections.deque()
        self.current: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.measure = False
        self.in_head = False
        self.deadline = 0.0
        self.closing = False
        self.paused = 0
        self.refuse: tuple[int, bytes] | None = None
        self.http10 = False
        self.tcp = service.client_tcp
        self.lost = False
        self.batching = False
        self.out: list[bytes] = []
        self.tunnel: pools.Connection | None = None
        self.tunnel_wait = b""
        """Bytes after an ``Upgrade`` request, held until the endpoint answers it."""
        self.upgrading: Exchange | None = None
        self.peer: bytes | None = None
        """On a TLS connection, the mTLS-verified client identity as ``x-forwarded-client-cert``
        (``securing``; b"" when there is none); None on plaintext."""

    # -- transport -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        t: Any = transport
        service = self.service
        tcp = self.tcp
        tcp.open += 1
        tcp.opened += 1
        if len(service.connections) >= service.limits.max_connections or service.draining:
            t.abort()
            return
        if service.mesh is not None:
            peer_id = service.mesh.peer(transport)
            if peer_id is None:  # a certificate without an identity of ours
                t.abort()
                return
            if peer_id or transport.get_extra_info("ssl_object") is not None:
                self.peer = peer_id
        elif transport.get_extra_info("ssl_object") is not None:  # TLS terminated here
            self.peer = b""
        service.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]).encode() if peer else b"unknown"
        self.deadline = self.loop.time() + service.timeouts.header

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closing = True
        self.tcp.open -= 1
        self.tcp.closed += 1
        self.service.connections.discard(self)
        for ex in list(self.queue):
            if not ex.done:
                ex._drop_conn()
                ex.finish()
        self.queue.clear()

    def write(self, data: bytes) -> None:
        if self.batching:
            self.out.append(data)
            return
        self.tcp.written += len(data)
        self.t.write(data)

    def close_transport(self) -> None:
        """Close after what is written (a batch being collected included) has gone out."""
        if self.out:
            self.flush()
        self.t.close()

    def flush(self) -> None:
        """Write what a batch collected in one call (one system call for head and body)."""
        out = self.out
        if len(out) == 1:
            self.tcp.written += len(out[0])
            self.t.write(out[0])
        else:  # uvloop gathers the pieces with writev: a large body is not copied to join it
            size = sum(map(len, out))
            self.tcp.written += size
            if self.peer is not None and size < _JOIN_TLS:
                self.t.write(b"".join(out))  # TLS: one record, not one per piece
            else:
                self.t.writelines(out)
        self.out = []

    def pause_writing(self) -> None:
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.conn is not None:
            ex.conn.t.pause_reading()

    def resume_writing(self) -> None:
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.conn is not None and not ex.conn.closed:
            ex.conn.t.resume_reading()

    def pause(self, reason: int) -> None:
        if not self.paused and not self.lost:
            self.t.pause_reading()
        self.paused |= reason

    def unpause(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.lost:
                self.t.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.tcp.read += len(data)
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.upgrading is not None:  # read before the pause took effect: hold it too
            self.tunnel_wait += data
            return
        if len(data) > self.service.limits.max_header_bytes:
            self.measure = True  # a whole head may have come in it: measure the head
        try:
            self.parser.feed_data(data)
            if self.in_head:  # a head still incomplete: bound what it may grow to
                self.head_bytes += len(data)
                if self.head_bytes > self.service.limits.max_header_bytes:
                    self.reject(431, b"request headers too large\n")
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data, upgrade)
        except httptools.HttpParserCallbackError:
            status, detail = self.refuse or (400, b"bad request\n")
            self.reject(status, detail)
        except httptools.HttpParserError as exc:
            self.reject(400, b"malformed request: %s\n" % str(exc).encode(errors="replace"))

    def _upgraded(self, data: bytes, upgrade: httptools.HttpParserUpgrade) -> None:
        """The parser stops after a request carrying ``Upgrade``. One that asked for an
        upgrade properly went on with it: hold what follows until the endpoint answers (a 101
        makes it tunnel bytes). Otherwise the request went on without the hop-by-hop
        ``Upgrade`` (served as plain HTTP/1.1, which RFC 9110 allows) and parsing goes on after
        it with a fresh parser."""
        if self.refuse is not None:
            self.reject(*self.refuse)
            return
        offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
        ex = self.queue[-1] if self.queue else None
        if ex is not None and ex.req.upgrade and not ex.done and not ex.local:
            # wait for the endpoint's answer: a 101 makes the rest tunnel bytes
            self.upgrading = ex
            self.tunnel_wait = data[offset:]
            self.pause(_PAUSE_TUNNEL)
            return
        self.parser = httptools.HttpRequestParser(self)
        rest = data[offset:]
        if rest:
            self.data_received(rest)

    def reject(self, status: int, detail: bytes) -> None:
        """Answer a request that cannot be forwarded and close: the bytes after it cannot be
        trusted to start a request."""
        self.refuse = None
        self.closing = True
        self.lost = True  # nothing more is read or dispatched on this connection
        self.service.local.requests += 1
        self.service.local.respond(status, 0.0)
        ex = self.current
        if ex is not None and not ex.done:
            # the request is already on its way: stop it mid-body, the endpoint sees a cut
            ex._drop_conn()
            ex.finish()
        if not self.queue or all(e.done for e in self.queue):
            self.write(heads.simple_response(status, detail, close=True))
        self.close_transport()

    def abort_after(self, ex: Exchange) -> None:
        """Cut the connection: a response already begun cannot be completed."""
        self.closing = True
        if self.out:
            self.flush()
        self.t.abort()

    def timed_out(self) -> None:
        """Called by the service's ticker when ``deadline`` passed."""
        if self.in_head:
            self.write(
                heads.simple_response(408, b"request head not received in time\n", close=True)
            )
        self.closing = True
        self.close_transport()

    def drain(self) -> None:
        """The proxy is shutting down: the next response says ``Connection: close``; an idle
        connection is closed after ``DRAIN_IDLE`` without a request (closing it at once would
        race a client that is sending its next request right now)."""
        self.closing = True
        if not self.queue and not self.in_head:
            self.deadline = self.loop.time() + DRAIN_IDLE

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.in_head = True
        self.deadline = self.loop.time() + self.service.timeouts.header

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:  # else a trailer field: not forwarded (bodies are re-chunked)
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.deadline = 0.0
        service = self.service
        limits = service.limits
        if len(self.url) > limits.max_header_bytes:
            self.refuse = (414, b"request target too long\n")
            raise _Refuse
        if len(self.headers) > limits.max_headers:
            self.refuse = (431, b"too many request headers\n")
            raise _Refuse
        if self.measure or self.head_bytes:  # the head came in several reads or a large one
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > limits.max_header_bytes:
                self.refuse = (431, b"request headers too large\n")
                raise _Refuse
            self.measure = False
        parser = self.parser
        method = parser.get_method()
        version = parser.get_http_version()
        self.http10 = version == "1.0"
        if method == b"CONNECT":
            self.refuse = (405, b"CONNECT is not served on this port\n")
            raise _Refuse
        target = self.url
        upstream: services.Service | None = service
        authority = b""
        if service.router is not None:  # HTTP-proxy mode: the authority names the upstream
            host = next((v for n, v in self.headers if n.lower() == b"host"), None)
            upstream, target, authority = service.router.route(target, host)
        rule = refusal = None
        if upstream is not None and upstream.routes is not None:  # HTTPRoute rules
            upstream, rule, refusal = upstream.routes.route(method, target, self.headers)
        req = heads.build_request(
            method, target, version, self.headers,
            client=self.client,
            forwarded=upstream.forwarded if upstream else False,
            host=upstream.host if upstream else None,
            peer=self.peer or b"",
        )  # fmt: skip
        if req.error:
            self.refuse = (req.error, req.detail)
            raise _Refuse
        limit = service.limits.max_body_bytes
        if limit and req.framing == heads.LENGTH and req.length > limit:
            self.refuse = (413, b"request body over the limit\n")
            raise _Refuse
        ex = Exchange(self, upstream or service, method, target, req, _now())
        ex.rule = rule
        self.current = ex
        queue = self.queue
        queue.append(ex)
        if refusal is not None:
            ex.status = refusal[0]
            ex.local = heads.simple_response(*refusal, close=False)
            service.local.requests += 1
            service.local.respond(refusal[0], 0.0)
        elif upstream is None:
            ex.status = 404
            ex.local = heads.simple_response(
                404, b"no upstream is named %s\n" % authority, close=False
            )
            service.local.requests += 1
            service.local.respond(404, 0.0)
        elif service.in_flight >= service.limits.max_requests_in_flight:
            ex.status = 503
            ex.local = heads.simple_response(
                503, b"too many requests in flight\n", close=False, extra=b"retry-after: 1\r\n"
            )
            service.local.requests += 1
            service.local.respond(503, 0.0)
        elif service.guard is not None and service.guard.stop(self, ex):
            pass  # refused by the policy: ex.local holds the answer
        else:
            service.in_flight += 1
        if len(queue) == 1:
            ex.dispatch()
        elif len(queue) >= PIPELINE_DEPTH:
            self.pause(_PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self.current
        if ex is not None:
            ex.body(body)

    def on_message_complete(self) -> None:
        ex = self.current
        if ex is not None:
            self.current = None
            ex.finished_request()

    # -- called by exchanges -------------------------------------------------------------
    def finished(self, ex: Exchange) -> None:
        if self.lost:
            return
        if self.upgrading is ex and self.tunnel is None:
            # the endpoint answered the Upgrade request as a plain one: HTTP goes on
            self.upgrading = None
            self.parser = httptools.HttpRequestParser(self)
            held, self.tunnel_wait = self.tunnel_wait, b""
            self.unpause(_PAUSE_TUNNEL)
            if held:
                self.loop.call_soon(self.data_received, held)
        queue = self.queue
        if queue and queue[0] is ex:
            queue.popleft()
        else:
            with contextlib.suppress(ValueError):
                queue.remove(ex)
        service = self.service
        if service.access_log is not None:
            _access_log(self, ex)
        if ex.close or (self.closing and not queue):
            self.closing = True
            self.close_transport()
            return
        if queue:
            if self.paused & _PAUSE_PIPELINE and len(queue) < PIPELINE_DEPTH // 2:
                self.unpause(_PAUSE_PIPELINE)
            queue[0].dispatch()
        elif self.current is None:
            self.deadline = self.loop.time() + service.timeouts.idle


def _access_log(down: Downstream, ex: Exchange) -> None:
    import orjson  # noqa: PLC0415 - only when the access log is on

    now = _now()
    record = {
        "direction": down.service.direction,
        "upstream": down.service.name,
        "method": ex.method.decode("latin-1"),
        "path": ex.target.decode("latin-1"),
        "status": ex.status,
        "duration_ms": round((now - ex.started) * 1000.0, 3),
        "request_bytes": ex.body_bytes,
        "response_bytes": ex.sent_bytes,
        "endpoint": ex.endpoint.label if ex.endpoint is not None else None,
        "tries": ex.tries,
        "request_id": ex.req.request_id.decode("latin-1"),
        "client": down.client.decode("latin-1"),
    }
    stream = down.service.access_log
    if stream is not None:
        stream.write(orjson.dumps(record).decode() + "\n")
        stream.flush()
