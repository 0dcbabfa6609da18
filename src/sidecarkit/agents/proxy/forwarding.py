"""The client side of the data path: parse a request, pick an endpoint, forward, answer.

Theory of operation. Each client connection is a ``Downstream`` protocol with an httptools
request parser. A request becomes an ``Exchange`` when its head is complete; exchanges queue in
arrival order and only the first one is forwarded, so pipelined requests are answered in order.
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
import time
from typing import Any, Final

import httptools

from sidecarkit.agents.proxy import heads, pools, services

__all__ = ["Downstream", "Exchange"]

log = logging.getLogger("sidecarkit.agent.proxy")

HOLD_BYTES: Final = 256 << 10
"""Body bytes held for a request not yet attached to an endpoint before reading pauses."""
DRAIN_IDLE: Final = 1.0
"""Seconds an idle keep-alive connection is kept open once draining began."""
PIPELINE_DEPTH: Final = 32
"""Requests queued on one connection before reading pauses."""

_PAUSE_HOLD: Final = 1
_PAUSE_UPSTREAM: Final = 2
_PAUSE_PIPELINE: Final = 4
_PAUSE_TUNNEL: Final = 8

_CHUNK_END: Final = b"0\r\n\r\n"

_now = time.monotonic
"""The clock of latencies and the balancer: uvloop's ``loop.time()`` ticks in whole ms."""


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing with a status to answer."""


class Exchange:
    """One request and its response."""

    __slots__ = (
        "body_bytes",
        "chunk",
        "close",
        "complete",
        "conn",
        "done",
        "down",
        "endpoint",
        "held",
        "held_bytes",
        "local",
        "method",
        "pending",
        "req",
        "responded",
        "sent_bytes",
        "service",
        "started",
        "status",
        "target",
        "timer",
        "tries",
        "try_started",
        "try_timer",
        "wrote_request",
    )  # fmt: skip

    def __init__(
        self,
        down: Downstream,
        service: services.Service,
        method: bytes,
        target: bytes,
        req: heads.Request,
        now: float,
    ) -> None:
        self.down = down
        self.service = service
        self.method = method
        self.target = target
        self.req = req
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.complete = False
        self.conn: pools.Connection | None = None
        self.endpoint: Any = None
        self.tries = 0
        self.started = now
        self.try_started = now
        self.responded = False
        self.status = 0
        self.chunk = False
        self.close = False
        self.done = False
        self.local = b""
        self.body_bytes = 0
        self.sent_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.try_timer: asyncio.TimerHandle | None = None
        self.wrote_request = False
        self.pending: Any = None
        """The endpoint whose in-flight count this try holds."""

    # -- client side ---------------------------------------------------------------------
    def body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.done or self.local:
            return
        limit = self.service.limits.max_body_bytes
        if limit and self.body_bytes > limit:
            self.fail_local(413, b"request body over the limit\n")
            return
        if self.req.framing == heads.CHUNKED:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        conn = self.conn
        if conn is not None and self.wrote_request:
            conn.write(data)
        else:
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes > HOLD_BYTES:
                self.down.pause(_PAUSE_HOLD)

    def finished_request(self) -> None:
        self.complete = True
        if self.done or self.local:
            return
        if self.req.framing == heads.CHUNKED:
            conn = self.conn
            if conn is not None and self.wrote_request:
                conn.write(_CHUNK_END)
            else:
                self.held.append(_CHUNK_END)

    # -- dispatch ------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Send to an endpoint (the exchange is first in its connection's queue)."""
        service = self.service
        if self.local:
            self.down.write(self.local)
            self.finish()
            return
        if self.tries:
            now = _now()
        else:
            now = self.started
            service.budget.total += 1
        endpoint = service.balancer.pick(now, avoid=self.endpoint)
        if endpoint is None:
            self.fail_local(503, b"no endpoints for this service\n", retry_after=True)
            return
        self.endpoint = endpoint
        self.tries += 1
        self.try_started = now
        pool = endpoint.pool
        if pool.open >= pool.limit:
            self.fail_local(503, b"endpoint connection limit reached\n", retry_after=True)
            return
        pool.series.requests += 1
        endpoint.pending += 1
        self.pending = endpoint
        timeouts = service.timeouts
        if timeouts.try_:
            self.try_timer = service.loop.call_later(timeouts.try_, self.try_timed_out)
        if timeouts.request and self.timer is None:
            self.timer = service.loop.call_later(timeouts.request, self.timed_out)
        idle = pool.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.attach(conn)
                return
        pool.connect(self.connected)

    def _release(self) -> None:
        """The current try no longer counts as in flight on its endpoint."""
        endpoint, self.pending = self.pending, None
        if endpoint is not None:
            endpoint.pending -= 1

    def _drop_conn(self) -> None:
        conn, self.conn = self.conn, None
        self.wrote_request = False
        if conn is not None:
            conn.ex = None
            conn.abort()

    def connected(self, conn: pools.Connection | None, error: BaseException | None) -> None:
        if self.done or self.pending is None:
            if conn is not None:
                conn.pool.give_back(conn)
            return
        if conn is None:
            now = _now()
            self.service.balancer.failed(self.endpoint, now)
            self._release()
            log.debug("connect to %s failed: %s", self.endpoint.label, error)
            if not self.retry(now, sent=False):
                self.fail_local(502, b"no endpoint could be reached\n")
            return
        self.attach(conn)

    def attach(self, conn: pools.Connection) -> None:
        self.conn = conn
        if self.held:
            data = b"".join((self.req.head, *self.held))
            self.held = []
            self.held_bytes = 0
            self.down.unpause(_PAUSE_HOLD)
        else:
            data = self.req.head
        self.wrote_request = True
        conn.send(self, data)

    def may_retry(self, now: float, *, sent: bool) -> bool:
        """True when a new try is allowed: nothing answered yet, tries left and budget; once
        the request reached an endpoint, also an idempotent method and no body (a body that
        went out is gone; one never sent is still held whole)."""
        service = self.service
        req = self.req
        return not (
            self.responded
            or self.done
            or self.tries >= service.retries.attempts
            or (sent and self.method not in service.retry_methods)
            or (
                sent
                and (req.framing == heads.CHUNKED or (req.framing == heads.LENGTH and req.length))
            )
            or not service.budget.withdraw(now)
        )

    def retry(self, now: float, *, sent: bool) -> bool:
        """Try again elsewhere when allowed; True when a new try started."""
        if not self.may_retry(now, sent=sent):
            return False
        self.endpoint.pool.series.retries += 1
        self._drop_conn()
        self._release()
        self._cancel_try_timer()
        self.dispatch()
        return True

    # -- upstream side (pools.Served) -----------------------------------------------------
    def response_head(
        self, conn: pools.Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        service = self.service
        down = self.down
        if conn.interim:
            if not down.http10:
                interim, _, _ = heads.response_head(
                    status, reason, headers, bodiless=True, close=False, http10=False
                )
                down.write(interim)
            return
        if status == 101:
            self._switch(conn, reason, headers)
            return
        now = _now()
        endpoint = self.endpoint
        if self.try_timer is not None:
            self._cancel_try_timer()
        endpoint.observe(now - self.try_started, now)
        if status >= 500:
            service.balancer.failed(endpoint, now)
            if status in service.retry_status and self.retry(now, sent=True):
                return
        elif endpoint.failures or endpoint.ejections:
            service.balancer.succeeded(endpoint, now)
        self.responded = True
        self.status = status
        head, self.chunk, self.close = heads.response_head(
            status,
            reason,
            headers,
            bodiless=self.method == b"HEAD" or status in (204, 304),
            close=self.close or down.closing or service.draining or not self.req.keep_alive
            or not self.complete,
            http10=down.http10,
        )  # fmt: skip
        down.write(head)
        endpoint.pool.series.respond(status, now - self.started)
        if self.method == b"HEAD":
            keep_alive = conn.parser.should_keep_alive()
            conn.ex = None
            conn.fresh_parser()
            self.response_done(conn, keep_alive)

    def _switch(
        self, conn: pools.Connection, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """A 101 to an ``Upgrade`` request (WebSocket, h2c...): from here on the two
        connections are one byte stream, with flow control, until either side closes."""
        down = self.down
        if not self.req.upgrade or down.upgrading is not self:
            self.fail_local(502, b"the endpoint switched protocols unasked\n")
            return
        self._cancel_try_timer()
        value = next((v for n, v in headers if n.lower() == b"upgrade"), self.req.upgrade)
        head, _, _ = heads.response_head(
            101, reason, headers, bodiless=True, close=False, http10=False
        )
        down.write(head[:-2] + b"connection: upgrade\r\nupgrade: %s\r\n\r\n" % value)
        self.responded = True
        self.status = 101
        self.close = True  # when the tunnel ends, so does the client's connection
        now = _now()
        self.endpoint.pool.series.respond(101, now - self.started)
        self.service.balancer.succeeded(self.endpoint, now)
        conn.tunnel = down
        down.tunnel = conn
        early, down.tunnel_wait = down.tunnel_wait, b""
        if early:
            conn.write(early)
        down.unpause(_PAUSE_TUNNEL)

    def response_body(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        if self.chunk:
            self.down.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.down.write(data)

    def response_done(self, conn: pools.Connection, keep_alive: bool) -> None:
        self.conn = None
        if self.chunk:
            self.down.write(_CHUNK_END)
        if keep_alive and self.complete and not conn.closed:
            conn.pool.give_back(conn)
        else:
            conn.close()
        self.finish()

    def upstream_lost(self, conn: pools.Connection) -> None:
        if self.done:
            return
        self.conn = None
        service = self.service
        now = _now()
        if self.responded:
            if not conn.in_head and _close_delimited(conn):
                self.response_done(conn, False)
                return
            # the response was cut short: the client must see that, not a shorter body
            self.finish()
            self.down.abort_after(self)
            return
        service.balancer.failed(self.endpoint, now)
        self._release()
        self._cancel_try_timer()
        if not self.retry(now, sent=True):
            self.fail_local(502, b"the endpoint closed the connection before answering\n")

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.down.unpause(_PAUSE_UPSTREAM)
        else:
            self.down.pause(_PAUSE_UPSTREAM)

    # -- endings -------------------------------------------------------------------------
    def try_timed_out(self) -> None:
        self.try_timer = None
        if self.done or self.responded:
            return
        now = _now()
        self.service.balancer.failed(self.endpoint, now)
        if not self.retry(now, sent=True):
            self.fail_local(504, b"the endpoint did not answer in time\n")

    def timed_out(self) -> None:
        self.timer = None
        if self.done:
            return
        if self.responded:
            self.finish()
            self.down.abort_after(self)
            return
        self.fail_local(504, b"the request timed out\n")

    def _cancel_try_timer(self) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None

    def fail_local(self, status: int, detail: bytes, *, retry_after: bool = False) -> None:
        """Answer with the proxy's own response (only before any response byte was sent)."""
        if self.done:
            return
        if self.responded:
            self.finish()
            self.down.abort_after(self)
            return
        self._drop_conn()
        self.status = status
        self.close = self.close or not self.complete or status == 413
        extra = b"retry-after: 1\r\n" if retry_after else b""
        close = self.close or self.down.closing
        self.down.write(heads.simple_response(status, detail, close=close, extra=extra))
        series = self.endpoint.pool.series if self.endpoint is not None else self.service.local
        if self.endpoint is None:
            series.requests += 1
        series.respond(status, _now() - self.started)
        self.finish()

    def finish(self) -> None:
        """The exchange is over (answered, failed or abandoned): release what it held."""
        if self.done:
            return
        self.done = True
        endpoint = self.pending
        if endpoint is not None:
            endpoint.pending -= 1
            self.pending = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.try_timer is not None:
            self._cancel_try_timer()
        if not self.local:
            self.down.service.in_flight -= 1  # the listener's count, whichever upstream
        self.down.finished(self)


def _close_delimited(conn: pools.Connection) -> bool:
    """A response with neither Content-Length nor chunked ends when the connection does."""
    for name, _ in conn.headers:
        lower = name.lower()
        if lower in {b"transfer-encoding", b"content-length"}:
            return False
    return True


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
            self.tcp.written += sum(map(len, out))
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
        req = heads.build_request(
            method, target, version, self.headers,
            client=self.client,
            forwarded=upstream.forwarded if upstream else False,
            host=upstream.host if upstream else None,
        )  # fmt: skip
        if req.error:
            self.refuse = (req.error, req.detail)
            raise _Refuse
        limit = service.limits.max_body_bytes
        if limit and req.framing == heads.LENGTH and req.length > limit:
            self.refuse = (413, b"request body over the limit\n")
            raise _Refuse
        ex = Exchange(self, upstream or service, method, target, req, _now())
        self.current = ex
        queue = self.queue
        queue.append(ex)
        if upstream is None:
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
