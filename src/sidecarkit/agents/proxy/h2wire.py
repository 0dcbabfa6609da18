"""One HTTP/2 connection of the proxy, either side: framing by ``h2``, sending under flow control.

Both the client side (``h2serving.Downstream``) and the endpoint side (``h2upstream.Upstream``)
are a ``Side``: an asyncio Protocol around an ``h2`` connection (sans-io) with, per stream, the
bytes still to send. Data only goes out within the peer's flow-control window and while the
socket takes it; each piece that went out is acknowledged on the connection it came from
(``Source``), so that connection's peer may send that much more. A proxied body is therefore
held in the proxy only up to the window the proxy itself advertised: never a whole body.

Writes are collected and sent once per turn of the event loop (``_dirty``): a batch of frames
read in one go (many streams' DATA, their WINDOW_UPDATEs) leaves in one system call per
connection.

Two departures from ``h2``'s own state machine, both for a graceful GOAWAY (RFC 9113 section
6.8): ``h2`` closes a connection for good on sending or receiving GOAWAY, while streams at or
below its last stream ID must go on. The proxy writes its own GOAWAY frame (``goaway``), and a
received one leaves the connection open (``_Connection``); new streams are refused or not
started by the code above, which knows a GOAWAY happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, Final

import h2.config
import h2.connection
import h2.errors
import h2.exceptions
import h2.settings
from hyperframe.frame import Frame, GoAwayFrame

from sidecarkit.agents.proxy import telemetry

__all__ = ["CONNECTION_WINDOW", "STREAM_WINDOW", "Side", "Source", "config"]

STREAM_WINDOW: Final = 1 << 20
"""Bytes a peer may send on one stream before the proxy passed them on (its receive window)."""
CONNECTION_WINDOW: Final = 4 << 20
"""The same for a whole connection: what one client connection can make the proxy hold."""

_STATES = h2.connection.ConnectionState
_OPEN: Final = (_STATES.CLIENT_OPEN, _STATES.SERVER_OPEN)


def _frame_repr(frame: Frame) -> str:
    return f"{type(frame).__name__}(stream_id={frame.stream_id})"


Frame.__repr__ = _frame_repr  # type: ignore[method-assign]
"""``h2`` formats every frame it receives for a trace log it then drops (``repr`` is called
before the logger is): with hyperframe's full ``repr`` that is a tenth of the proxy's CPU per
call. The short form still names the frame and its stream."""

_dirty: set[Side] = set()
_scheduled = False


def config(*, client_side: bool) -> h2.config.H2Configuration:
    """Each header block is checked once, where it enters or leaves through the client's
    connection: the endpoint side sends blocks the client side already checked and receives
    blocks the client side checks on their way out, so it checks nothing itself (``h2``'s
    checks are most of its cost per request)."""
    checks = not client_side
    return h2.config.H2Configuration(
        client_side=client_side, header_encoding=None,
        validate_outbound_headers=checks, normalize_outbound_headers=checks,
        validate_inbound_headers=checks, normalize_inbound_headers=checks,
    )  # fmt: skip


class _Connection(h2.connection.H2Connection):
    """``h2``'s connection, staying open after a GOAWAY from the peer (streams go on), and
    counting its open streams in constant time.

    ``h2`` counts open streams by walking all of them at every new stream (and drops the
    closed ones on the way), so a call would cost more the more calls share its connection.
    Here the count is ``live``: the streams the ``Side`` saw open and not yet closed both
    ways (or reset). The walk that drops ``h2``'s closed streams (and mends ``live`` should a
    stream have closed unseen) runs once per as many new streams as there are streams:
    constant cost per stream on average."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.live: dict[int, int] = {}
        """Open streams -> which ends are done (1: the peer's, 2: ours)."""
        self.counted = 0
        self.next_walk = 0

    def _open_streams(self, remainder: int) -> int:
        self.counted += 1
        if self.counted >= self.next_walk:
            self.next_walk = self.counted + max(32, len(self.streams))
            count = super()._open_streams(remainder)
            streams = self.streams
            self.live = {
                sid: v for sid, v in self.live.items() if sid in streams and streams[sid].open
            }
            return count
        return len(self.live) if remainder == 1 else 0  # odd: the client's; no pushes

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        self.live[stream_id] = 0  # counted at once: the next frame of a batch may open one
        return stream

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> Any:
        state = self.state_machine.state
        pending = bytes(self._data_to_send)
        frames, events = super()._receive_goaway_frame(frame)
        if state in _OPEN:
            self.state_machine.state = state
            self._data_to_send[:0] = pending
        return frames, events


class Source:
    """Where data being sent came from: acknowledged there once it went out."""

    __slots__ = ("side", "stream_id")

    def __init__(self, side: Side, stream_id: int) -> None:
        self.side = side
        self.stream_id = stream_id


class _Outgoing:
    __slots__ = ("chunks", "end", "source", "trailers")

    def __init__(self) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.end = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.source: Source | None = None


def _flush_dirty() -> None:
    global _scheduled  # noqa: PLW0603 - one flush per loop turn for every connection
    _scheduled = False
    sides = list(_dirty)
    _dirty.clear()
    for side in sides:
        side.flush()


class Side(asyncio.Protocol):
    """An HTTP/2 connection with flow-controlled sending per stream."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, tcp: telemetry.TcpSeries, *, client_side: bool
    ) -> None:
        self.loop = loop
        self.tcp = tcp
        self.h2 = _Connection(config(client_side=client_side))
        self.t: Any = None
        self.out: dict[int, _Outgoing] = {}
        self.writable = True
        self.closed = False
        self.goaway_sent = False

    # -- writing -------------------------------------------------------------------------
    def mark(self) -> None:
        """Something waits in ``h2``'s buffer: send it at the end of this loop turn."""
        global _scheduled  # noqa: PLW0603
        _dirty.add(self)
        if not _scheduled:
            _scheduled = True
            self.loop.call_soon(_flush_dirty)

    def flush(self) -> None:
        if self.closed:
            return
        data = self.h2.data_to_send()
        if data:
            self.tcp.written += len(data)
            self.t.write(data)

    def start_window(self) -> None:
        """Advertise the proxy's windows (after ``initiate_connection``)."""
        self.h2.update_settings({
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        } if self.h2.config.client_side else {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        })  # fmt: skip
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    def send_data(self, stream_id: int, data: bytes, source: Source | None) -> None:
        out = self.out.get(stream_id)
        if out is None:
            out = self.out[stream_id] = _Outgoing()
        out.chunks.append(data)
        out.source = source
        self.pump(stream_id, out)

    def send_end(self, stream_id: int, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        """End the stream after the data queued on it (with trailers, if any)."""
        out = self.out.get(stream_id)
        if out is None:
            out = self.out[stream_id] = _Outgoing()
        out.end = True
        out.trailers = trailers
        self.pump(stream_id, out)

    def pump(self, stream_id: int, out: _Outgoing) -> None:
        """Send what the windows and the socket allow of one stream's queue."""
        h2c = self.h2
        chunks = out.chunks
        try:
            while chunks and self.writable:
                window = h2c.local_flow_control_window(stream_id)
                if window <= 0:
                    break
                chunk = chunks[0]
                size = min(window, h2c.max_outbound_frame_size, len(chunk))
                if size < len(chunk):
                    h2c.send_data(stream_id, chunk[:size])
                    chunks[0] = chunk[size:]
                else:
                    chunks.popleft()
                    last = not chunks and out.end and out.trailers is None
                    h2c.send_data(stream_id, chunk, end_stream=last)
                    if last:
                        del self.out[stream_id]
                        self.ended(stream_id, 2)
                source = out.source
                if source is not None:
                    source.side.ack(source.stream_id, size)
            if not chunks and out.end and stream_id in self.out:
                del self.out[stream_id]
                if out.trailers is not None:
                    h2c.send_headers(stream_id, out.trailers, end_stream=True)
                else:
                    h2c.end_stream(stream_id)
                self.ended(stream_id, 2)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.out.pop(stream_id, None)  # reset meanwhile: what was queued is dropped
            self.h2.live.pop(stream_id, None)
        self.mark()

    def ended(self, stream_id: int, end: int) -> None:
        """One end of a stream is done (1: the peer's END_STREAM, 2: ours)."""
        live = self.h2.live
        done = live.get(stream_id)
        if done is not None:
            if done | end == 3:
                del live[stream_id]
            else:
                live[stream_id] = done | end

    def pump_all(self) -> None:
        for stream_id, out in list(self.out.items()):
            self.pump(stream_id, out)

    def ack(self, stream_id: int, size: int) -> None:
        """``size`` bytes received on ``stream_id`` were passed on: the peer may send more."""
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.acknowledge_received_data(size, stream_id)
            self.mark()

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        self.out.pop(stream_id, None)
        self.h2.live.pop(stream_id, None)
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, code)
            self.mark()

    def goaway(self, last_stream_id: int, code: int = 0) -> None:
        """Send GOAWAY, leaving ``h2``'s state open: streams up to ``last_stream_id`` go on."""
        if self.closed:
            return
        self.goaway_sent = True
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = code
        data = frame.serialize()
        self.tcp.written += len(data)
        self.t.write(data)

    # -- asyncio -------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.pump_all()
