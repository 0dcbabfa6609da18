"""Connection limits around the webhook's HTTP protocol: the timeouts and caps it needs.

Without them a slowloris client (headers that never end) or one that pipelines requests and
never reads the answers could hold a connection, and its buffers, for ever. Each connection's
protocol (``answering.Connection``) is wrapped in a ``Guard`` that sits between the transport
and it, and is told by it where the connection is:

- ``headers``: bytes of a request arrived (or the connection just opened) and its headers are
  not complete: closed after ``header_timeout``, however slowly the client keeps trickling;
- ``reading``: the headers are in and the handler reads the body: closed after
  ``body_timeout``;
- ``busy``: the request is being decided and answered; answers must drain: a transport whose
  write buffer stayed above the high-water mark for ``write_timeout`` is aborted;
- ``idle``: between requests on a keep-alive connection: closed after ``idle_timeout``.

At ``max_connections`` a new connection evicts the longest-open one that is not handling a
request, so attackers holding idle or half-sent connections cannot lock out the API server.
The TLS handshake itself is bounded by the listener's handshake timeout (``header_timeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

__all__ = ["Guard", "Guards", "Limits"]

_HEADERS: Final = "headers"
_READING: Final = "reading"
_BUSY: Final = "busy"
_IDLE: Final = "idle"


@dataclass(frozen=True, slots=True)
class Limits:
    """Timeouts (seconds) and caps of the webhook server; the CLI maps options onto these."""

    header_timeout: float = 10.0
    """From a connection's first byte (or its TLS handshake's start) to its headers' end."""
    body_timeout: float = 10.0
    """To read a request's body once its headers are in."""
    idle_timeout: float = 90.0
    """A keep-alive connection with no request in progress; longer than the API server's 90 s
    idle-connection timeout would make no difference, shorter risks racing its reuse."""
    write_timeout: float = 10.0
    """How long answers may sit above the write buffer's high-water mark before the client is
    dropped: a client that does not read what it asked for."""
    write_buffer: int = 256 * 1024
    """High-water mark of a connection's write buffer, in bytes."""
    max_connections: int = 2048
    """Open connections at most; beyond, the longest-open idle or half-sent one is closed."""
    max_admissions: int = 64
    """Admissions handled at once; more wait (up to ``body_timeout``) for a slot."""


class Guards:
    """The live guarded connections of one listener, oldest first."""

    def __init__(self, limits: Limits, inner: Callable[[Guard], asyncio.Protocol]) -> None:
        self.limits = limits
        self.inner = inner
        self.live: dict[Guard, None] = {}
        self.evicted = 0
        self.timed_out = 0

    def factory(self) -> Guard:
        """The protocol factory to hand to ``loop.create_server``."""
        return Guard(self, self.inner)

    def admit(self, guard: Guard) -> bool:
        """Register a new connection, evicting an old one at the cap; False: refuse this one."""
        if len(self.live) >= self.limits.max_connections:
            victim = next((g for g in self.live if g.state in (_HEADERS, _IDLE)), None)
            if victim is None:
                return False
            self.evicted += 1
            self.forget(victim)  # now, not when its close completes: the cap holds meanwhile
            victim.drop()
        self.live[guard] = None
        return True

    def forget(self, guard: Guard) -> None:
        self.live.pop(guard, None)

    def close_all(self) -> None:
        """Close every connection (at the end of a shutdown): what is buffered is sent first."""
        for guard in list(self.live):
            self.forget(guard)
            if guard.transport is not None and not guard.transport.is_closing():
                guard.transport.close()


class Guard(asyncio.Protocol):
    """One connection: forwards everything to its HTTP protocol and enforces ``Limits``."""

    def __init__(self, guards: Guards, inner: Callable[[Guard], asyncio.Protocol]) -> None:
        self.guards = guards
        self.inner = inner(self)
        self.state = _HEADERS
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._forwarding = False

    # -- timers ----------------------------------------------------------------------------
    #
    # A keep-alive connection changes state three times per request; cancelling and making a
    # timer each time cost more than a cached answer. So a state change only moves
    # ``_deadline``, and one timer per connection is kept armed no later than it: at the
    # deadline, or one ``_step`` (the shortest timeout) from when it was armed if that is
    # sooner. Every new deadline is at least one step away, so it is never earlier than the
    # armed timer; when the timer fires before the deadline it re-arms for what is left.

    def _arm(self, seconds: float) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self._deadline = now + seconds
        if self._timer is None:
            self._timer = loop.call_at(min(self._deadline, now + self._step()), self._expire)

    def _step(self) -> float:
        limits = self.guards.limits
        return min(limits.header_timeout, limits.body_timeout, limits.idle_timeout)

    def _expire(self) -> None:
        self._timer = None
        if self.state == _BUSY:  # no deadline while answering; request_done arms again
            return
        assert self._loop is not None
        now = self._loop.time()
        if now < self._deadline:
            self._timer = self._loop.call_at(min(self._deadline, now + self._step()), self._expire)
            return
        self.guards.timed_out += 1
        self.drop()

    def drop(self) -> None:
        """Close the connection now, whatever is buffered; answers already made and held for
        the end of the turn (``outboxes``) are written first."""
        if self.transport is not None and not self.transport.is_closing():
            flush = getattr(self.inner, "flush", None)
            if flush is not None:
                flush()
            self.transport.abort()

    # Each is called again while the connection stays where it is (a head or body trickling
    # in): only a change of state sets a new deadline, or a trickle would keep it open for ever.

    def head_started(self) -> None:
        """A request's head is arriving (pipelined behind answered ones)."""
        if self.state != _HEADERS:
            self.state = _HEADERS
            self._arm(self.guards.limits.header_timeout)

    def request_started(self) -> None:
        """A request's head is complete; its body is arriving."""
        if self.state != _READING:
            self.state = _READING
            self._arm(self.guards.limits.body_timeout)

    def body_read(self) -> None:
        self.state = _BUSY  # the armed timer, when it fires, finds the connection busy

    def request_done(self) -> None:
        if self.state != _IDLE:
            self.state = _IDLE
            self._arm(self.guards.limits.idle_timeout)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is a Transport in all but its class: no isinstance check.
        self.transport = transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        if not self.guards.admit(self):
            transport.abort()
            return
        high = self.guards.limits.write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self._arm(self.guards.limits.header_timeout)
        self._forwarding = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state == _IDLE:
            self.state = _HEADERS
            self._arm(self.guards.limits.header_timeout)
        if self._forwarding:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guards.forget(self)
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._write_timer = None
        if self._forwarding:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._write_timer is None:
            self._write_timer = asyncio.get_running_loop().call_later(
                self.guards.limits.write_timeout, self._write_expired
            )
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self.inner.resume_writing()

    def _write_expired(self) -> None:
        self._write_timer = None
        self.guards.timed_out += 1
        self.drop()
