"""HTTP/2 connections to endpoints (``protocol: http2``): streams multiplexed, one pool each.

An endpoint that speaks HTTP/2 (h2c with prior knowledge, or h2 inside mTLS) takes many
requests on one connection at once, so its pool is a short list of connections, each taking new
streams until the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS``; a further connection is opened
only when every one is full, up to ``pool.max_connections_per_endpoint``. Requests waiting for
a connection being opened wait on it.

Balancing stays per request (per stream): each ``h2streams.Stream`` picks its endpoint, so the
gRPC calls of one client connection spread over every endpoint, which is why a proxy sits next
to gRPC clients in Kubernetes.

A GOAWAY from the endpoint: the streams it did not process (above its last stream ID) are tried
again on another connection, never having reached the app; the others finish; no new stream is
started on that connection. A lost connection fails its streams (``Stream.upstream_lost``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h2.events
import h2.exceptions

from sidecarkit.agents.proxy import h2wire, telemetry

if TYPE_CHECKING:
    from sidecarkit.agents.proxy import balancing
    from sidecarkit.agents.proxy.h2streams import Stream

__all__ = ["Pool", "Upstream"]

log = logging.getLogger("sidecarkit.agent.proxy")


class Upstream(h2wire.Side):
    """One HTTP/2 connection to an endpoint."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool.loop, pool.tcp, client_side=True)
        self.pool = pool
        self.streams: dict[int, Stream] = {}
        self.waiting: list[Stream] = []
        """Streams waiting for this connection to be up."""
        self.ready = False
        self.going_away = False
        self.since = 0.0

    def room(self) -> bool:
        if self.closed or self.going_away:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return len(self.streams) + len(self.waiting) < limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.tcp.open += 1
        self.tcp.opened += 1
        self.h2.initiate_connection()
        self.start_window()
        self.mark()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.tcp.open -= 1
        self.tcp.closed += 1
        self.pool.lost(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.upstream_lost(self)
        waiting, self.waiting = self.waiting, []
        for stream in waiting:  # closed before its SETTINGS: not an HTTP/2 endpoint, say
            stream.connect_failed(exc or ConnectionResetError("closed before HTTP/2 settings"))

    def open_stream(self, stream: Stream, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=end)
        if end:
            self.ended(stream_id, 2)
        self.streams[stream_id] = stream
        self.mark()
        return stream_id

    def done(self, stream_id: int) -> None:
        """The stream is over on the proxy's side (ended or reset)."""
        self.streams.pop(stream_id, None)
        self.out.pop(stream_id, None)
        if not self.streams:
            self.since = self.loop.time()
            if self.going_away:
                self.close()

    def close(self) -> None:
        if not self.closed and self.t is not None:
            self.flush()
            self.t.close()

    def data_received(self, data: bytes) -> None:
        self.tcp.read += len(data)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("%s: HTTP/2 error from the endpoint: %s", self.pool.endpoint.label, exc)
            self.flush()
            self.t.close()
            return
        streams = self.streams
        event: Any
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.response_data(event.data, event.flow_controlled_length)
                else:
                    self.ack(event.stream_id, event.flow_controlled_length)
            elif kind is h2.events.ResponseReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.response_head(event.headers, event.stream_ended is not None)
            elif kind is h2.events.TrailersReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.response_trailers(event.headers)
            elif kind is h2.events.StreamEnded:
                self.ended(event.stream_id, 1)
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.response_end()
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
                    stream.upstream_reset(self, int(event.error_code))
            elif kind is h2.events.RemoteSettingsChanged:
                self.pump_all()
            elif kind is h2.events.ConnectionTerminated:
                self._goaway(event.last_stream_id or 0)
        if not self.ready and not self.closed:
            self.ready = True  # the peer's SETTINGS are in: its stream limit is known
            waiting, self.waiting = self.waiting, []
            for stream in waiting:
                stream.attach(self)
        self.mark()

    def _goaway(self, last_stream_id: int) -> None:
        self.going_away = True
        self.pool.lost(self)
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last_stream_id:  # never processed: safe to send elsewhere
                self.streams.pop(stream_id)
                stream.refused(self)
        if not self.streams:
            self.close()


class Pool:
    """HTTP/2 connections to one endpoint. Same attributes as ``pools.Pool`` where the
    service reads or sets them (limits, metrics, TLS, expiry)."""

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
        self.loop = loop
        self.limit = limit
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.tcp = tcp
        self.series = series
        self.tls = tls
        self.conns: list[Upstream] = []
        self.open = 0
        self.idle: list[Any] = []
        """Always empty: HTTP/1.1 code paths that look here find nothing to take."""
        self.tasks: set[asyncio.Task[None]] = set()

    def full(self) -> bool:
        return self.open >= self.limit and not any(c.room() for c in self.conns)

    def take(self, stream: Stream) -> bool:
        """Start ``stream`` on a connection with room (or one being opened); False when the
        endpoint's connection limit is reached."""
        for conn in self.conns:
            if conn.room():
                if conn.ready:
                    stream.attach(conn)
                else:
                    conn.waiting.append(stream)
                return True
        if self.open >= self.limit:
            return False
        self.open += 1
        conn = Upstream(self)
        conn.waiting.append(stream)
        self.conns.append(conn)
        task = self.loop.create_task(self._connect(conn), name=f"connect {self.endpoint.label}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _connect(self, conn: Upstream) -> None:
        host, port = self.endpoint.address
        tls = self.tls
        try:
            if tls is None:
                connecting = self.loop.create_connection(lambda: conn, host, port)
            else:
                connecting = self.loop.create_connection(
                    lambda: conn, host, port, ssl=tls[0](), server_hostname="",
                    ssl_handshake_timeout=self.connect_timeout or None,
                )  # fmt: skip
            await asyncio.wait_for(connecting, self.connect_timeout or None)
            if tls is not None and not tls[1](conn.t):
                conn.t.abort()
                raise ConnectionRefusedError("the endpoint's identity was refused")
        except (TimeoutError, OSError) as exc:
            conn.closed = True
            self.lost(conn)
            waiting, conn.waiting = conn.waiting, []
            for stream in waiting:
                stream.connect_failed(exc)

    def lost(self, conn: Upstream) -> None:
        """``conn`` takes no new stream any more (closed, or going away)."""
        if conn in self.conns:
            self.conns.remove(conn)
            self.open -= 1

    def expire(self, older_than: float) -> None:
        for conn in list(self.conns):
            if not conn.streams and not conn.waiting and conn.ready and conn.since < older_than:
                self.lost(conn)
                conn.close()

    def close(self) -> None:
        """The endpoint left (or the proxy stops): idle connections close, busy ones finish."""
        for conn in list(self.conns):
            if not conn.streams and not conn.waiting:
                self.lost(conn)
                conn.close()
            else:
                conn.going_away = True
