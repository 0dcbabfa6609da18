"""Connections to endpoints: one keep-alive pool per endpoint, one parser per connection.

A ``Connection`` carries one request at a time (no pipelining upstream: an app that closes a
connection mid-pipeline would leave requests whose fate is unknown). It parses the response
with httptools and hands each piece to the exchange it serves (``forwarding.Exchange``) through
four calls: ``response_head``, ``response_body``, ``response_done`` and ``upstream_lost``. When
the response is complete and both sides agreed to keep the connection, it goes back to its
``Pool`` and the next request to that endpoint takes it without a handshake.

Backpressure: when the connection's send buffer fills (a slow app reading a large upload) it
pauses reading from the client; the client side pauses reading from here when the client is
slow. Nothing buffers a whole body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from sidecarkit.agents.proxy import telemetry

if TYPE_CHECKING:
    from sidecarkit.agents.proxy import balancing

__all__ = ["Connection", "Pool", "Served"]

log = logging.getLogger("sidecarkit.agent.proxy")


class Served(Protocol):
    """What a connection needs from the exchange it serves."""

    down: Any
    """The client connection: its writes are batched while a read from here is parsed."""

    def response_head(
        self, conn: Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_done(self, conn: Connection, keep_alive: bool) -> None: ...
    def upstream_lost(self, conn: Connection) -> None: ...
    def upstream_writable(self, writable: bool) -> None: ...


class Connection(asyncio.Protocol):
    __slots__ = (
        "closed",
        "ex",
        "headers",
        "in_head",
        "interim",
        "parser",
        "pool",
        "reason",
        "since",
        "t",
        "tcp",
        "tunnel",
    )  # fmt: skip

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.t: Any = None
        self.ex: Served | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = False
        self.closed = False
        self.since = 0.0
        self.tcp = pool.tcp
        self.interim = False
        self.tunnel: Any = None
        """The client connection once a 101 made this a tunnel: bytes go through unparsed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.tcp.open += 1
        self.tcp.opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.tcp.open -= 1
        self.tcp.closed += 1
        self.pool.open -= 1
        ex, self.ex = self.ex, None
        if ex is not None:
            ex.upstream_lost(self)

    def send(self, ex: Served, data: bytes) -> None:
        self.ex = ex
        self.tcp.written += len(data)
        self.t.write(data)

    def write(self, data: bytes) -> None:
        self.tcp.written += len(data)
        self.t.write(data)

    def pause_writing(self) -> None:
        if self.ex is not None:
            self.ex.upstream_writable(False)

    def resume_writing(self) -> None:
        if self.ex is not None:
            self.ex.upstream_writable(True)

    def data_received(self, data: bytes) -> None:
        self.tcp.read += len(data)
        tunnel = self.tunnel  # tested as a local: the parser's callbacks below may set it
        if tunnel is not None:
            tunnel.write(data)
            return
        if self.ex is None:  # bytes with no request: the app broke the protocol
            self.close()
            return
        down = self.ex.down
        down.batching = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # a 101: what follows is the tunnel's
            rest = data[upgrade.args[0] :] if upgrade.args else b""
            tunnel = self.tunnel  # set by the 101's callbacks
            if tunnel is None:
                self.close()
            elif rest:
                tunnel.write(rest)
        except httptools.HttpParserError:
            self.close()
        finally:
            down.batching = False
            if down.out:
                down.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.t.close()

    def abort(self) -> None:
        self.closed = True
        self.t.abort()

    def fresh_parser(self) -> None:
        """Start over after a response with no body the parser could not know of (HEAD)."""
        self.parser = httptools.HttpResponseParser(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.reason = b""
        self.headers = []
        self.in_head = True

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        ex = self.ex
        if ex is None:
            return
        status = self.parser.get_status_code()
        self.interim = 100 <= status < 200 and status != 101
        ex.response_head(self, status, self.reason, self.headers)

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is not None:
            ex.response_body(body)

    def on_message_complete(self) -> None:
        ex = self.ex
        if ex is None or self.interim or self.tunnel is not None:
            return
        self.ex = None
        ex.response_done(self, self.parser.should_keep_alive())


class Pool:
    """Idle keep-alive connections to one endpoint, and the count of all open ones."""

    __slots__ = (
        "connect_timeout",
        "endpoint",
        "idle",
        "limit",
        "loop",
        "max_idle",
        "open",
        "series",
        "tasks",
        "tcp",
        "tls",
    )

    def __init__(
        self,
        endpoint: balancing.Endpoint,
        *,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        max_idle: int,
        connect_timeout: float,
        tcp: telemetry.TcpSeries,
        series: telemetry.RequestSeries,
        tls: tuple[Callable[[], Any], Callable[[Any], bool]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.tls = tls
        """mTLS to a sidecar: the client context in use, and the check of its identity."""
        self.loop = loop
        self.idle: list[Connection] = []
        self.open = 0
        self.limit = limit
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.tcp = tcp
        self.series = series
        self.tasks: set[asyncio.Task[None]] = set()

    def take(self) -> Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def give_back(self, conn: Connection) -> None:
        if conn.closed or len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.since = self.loop.time()
        self.idle.append(conn)

    def full(self) -> bool:
        return self.open >= self.limit

    def connect(self, done: Callable[[Connection | None, BaseException | None], None]) -> None:
        """Open a connection in the background and call ``done(conn, None)`` or
        ``done(None, error)``; the one Task a request may need, and only without an idle one."""
        self.open += 1
        task = self.loop.create_task(self._connect(done), name=f"connect {self.endpoint.label}")
        self.tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self.tasks.discard)

    async def _connect(
        self, done: Callable[[Connection | None, BaseException | None], None]
    ) -> None:
        host, port = self.endpoint.address
        tls = self.tls
        try:
            if tls is None:
                connecting = self.loop.create_connection(lambda: Connection(self), host, port)
            else:
                connecting = self.loop.create_connection(
                    lambda: Connection(self), host, port, ssl=tls[0](), server_hostname="",
                    ssl_handshake_timeout=self.connect_timeout or None,
                )  # fmt: skip
            _, conn = await asyncio.wait_for(connecting, self.connect_timeout or None)
        except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            self.open -= 1
            done(None, exc)
            return
        if tls is not None and not tls[1](conn.t):  # not the identity asked for: logged
            conn.abort()
            done(None, ConnectionRefusedError("the endpoint's identity was refused"))
            return
        done(conn, None)

    def expire(self, older_than: float) -> None:
        """Close idle connections unused since ``older_than``."""
        keep = []
        for conn in self.idle:
            if conn.closed:
                continue
            if conn.since < older_than:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle = []
