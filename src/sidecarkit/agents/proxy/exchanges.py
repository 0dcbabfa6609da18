"""One request and its response, from the moment its head is complete until it ends.

An ``Exchange`` is created by the client connection (``forwarding.Downstream``) and driven by
callbacks from both sides: the client's parser feeds its body, the endpoint connection
(``pools.Connection``) its response. Dispatch picks an endpoint and a pooled connection;
retries, timeouts, the switch to a tunnel on 101 and every ending live here. The table of
endings is in ``forwarding``'s docstring.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from sidecarkit.agents.proxy import heads, pools, routetables, services

if TYPE_CHECKING:
    from sidecarkit.agents.proxy.forwarding import Downstream

__all__ = [
    "HOLD_BYTES",
    "PAUSE_HOLD",
    "PAUSE_PIPELINE",
    "PAUSE_TUNNEL",
    "PAUSE_UPSTREAM",
    "Exchange",
]

log = logging.getLogger("sidecarkit.agent.proxy")

HOLD_BYTES: Final = 256 << 10
"""Body bytes held for a request not yet attached to an endpoint before reading pauses."""

PAUSE_HOLD: Final = 1
"""Reasons a client connection stops being read (bits of ``Downstream.paused``)."""
PAUSE_UPSTREAM: Final = 2
PAUSE_PIPELINE: Final = 4
PAUSE_TUNNEL: Final = 8

_CHUNK_END: Final = b"0\r\n\r\n"

now: Callable[[], float] = time.monotonic
"""The clock of latencies and the balancer: uvloop's ``loop.time()`` ticks in whole ms."""
_now = now


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
        "gate",
        "held",
        "held_bytes",
        "local",
        "method",
        "more_head",
        "pending",
        "req",
        "responded",
        "rule",
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
        self.gate: Any = None
        """Set while the policy waits (for a key set) before it lets the request go on."""
        self.more_head = b""
        """Fields the proxy adds to the response head (the policy's ``RateLimit-*``)."""
        self.rule: Any = None
        """The HTTPRoute rule (``routetables.Choice``) that sent it here: its timeouts, retries
        and response header edits replace the service's; None without routes."""

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
                self.down.pause(PAUSE_HOLD)

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
        if self.gate is not None:  # the policy calls again when it has decided
            return
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
        timeouts = service.timeouts if self.rule is None else None
        try_ = timeouts.try_ if timeouts is not None else self.rule.try_timeout
        if try_:
            self.try_timer = service.loop.call_later(try_, self.try_timed_out)
        request = timeouts.request if timeouts is not None else self.rule.request_timeout
        if request and self.timer is None:
            self.timer = service.loop.call_later(request, self.timed_out)
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
            self.down.unpause(PAUSE_HOLD)
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
            or self.tries >= (service.retries.attempts if self.rule is None else self.rule.attempts)
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
        if self.rule is not None and self.rule.backoff:  # the route's retry.backoff
            self.service.loop.call_later(self.rule.backoff, self._redispatch)
        else:
            self.dispatch()
        return True

    def _redispatch(self) -> None:
        if not self.done:  # the client may have gone, or the request timed out, meanwhile
            self.dispatch()

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
            retry_status = service.retry_status if self.rule is None else self.rule.retry_status
            took = now - self.try_started
            if status in retry_status and self.retry(now, sent=True):
                endpoint.pool.series.respond(status, took)  # its failure, though retried
                return
        elif endpoint.failures or endpoint.ejections:
            service.balancer.succeeded(endpoint, now)
        self.responded = True
        self.status = status
        if self.more_head:  # the proxy's fields replace the endpoint's of the same names
            headers = [(n, v) for n, v in headers if not n.lower().startswith(b"ratelimit")]
        if self.rule is not None and self.rule.response_edit is not None:
            headers = routetables.edit_headers(headers, self.rule.response_edit)
        head, self.chunk, self.close = heads.response_head(
            status,
            reason,
            headers,
            bodiless=self.method == b"HEAD" or status in (204, 304),
            close=self.close or down.closing or service.draining or not self.req.keep_alive
            or not self.complete,
            http10=down.http10,
        )  # fmt: skip
        if self.more_head:
            head = head[:-2] + self.more_head + b"\r\n"
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
        down.unpause(PAUSE_TUNNEL)

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
            self.down.unpause(PAUSE_UPSTREAM)
        else:
            self.down.pause(PAUSE_UPSTREAM)

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
