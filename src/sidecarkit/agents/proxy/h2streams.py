"""One HTTP/2 stream through the proxy: a client's stream joined to a stream to an endpoint.

Each stream is balanced on its own (gRPC calls of one connection spread over the endpoints),
counted in the golden metrics (``grpc_status`` from the trailers with gRPC), and ended one of
these ways (each writes one answer or one reset to the client):

=========================  ===================================================================
event                      outcome
=========================  ===================================================================
response ends              trailers (or END_STREAM) to the client; metrics, access log
connect fails              another endpoint (nothing was sent), else 502 / UNAVAILABLE
stream refused, GOAWAY     the endpoint did not process it: another endpoint when the request
                           body sent so far is still held (up to ``REPLAY_BYTES``), else 502
endpoint resets, no head   502 / UNAVAILABLE
endpoint resets later      the client's stream is reset with the same code
connection lost            as a reset: 502 before the head, RST_STREAM after
client resets (cancel)     the endpoint's stream is reset with CANCEL
overall timeout            504 / DEADLINE_EXCEEDED before the head, else RST_STREAM CANCEL
=========================  ===================================================================

No Task per stream: the two connections' events drive it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

import h2.errors
import h2.exceptions

from sidecarkit.agents.proxy import exchanges, h2heads, h2wire

if TYPE_CHECKING:
    from sidecarkit.agents.proxy.h2serving import Downstream
    from sidecarkit.agents.proxy.h2upstream import Upstream
    from sidecarkit.agents.proxy.services import Service

__all__ = ["REPLAY_BYTES", "Stream"]

log = logging.getLogger("sidecarkit.agent.proxy")

REPLAY_BYTES: Final = 64 << 10
"""Request body kept while no answer came, so that a refused stream can be sent elsewhere."""

_now = exchanges.now
_CANCEL: Final = int(h2.errors.ErrorCodes.CANCEL)
_REFUSED: Final = int(h2.errors.ErrorCodes.REFUSED_STREAM)


class Stream:
    __slots__ = (
        "body_bytes",
        "done",
        "down",
        "ended",
        "endpoint",
        "gate",
        "grpc",
        "grpc_code",
        "more_head",
        "pending",
        "replay",
        "replay_bytes",
        "req",
        "req_ended",
        "req_trailers",
        "responded",
        "sent_bytes",
        "service",
        "sid",
        "source",
        "started",
        "status",
        "timer",
        "tries",
        "try_started",
        "unacked",
        "up",
        "usid",
    )  # fmt: skip

    def __init__(self, down: Downstream, sid: int, service: Service, req: h2heads.Request) -> None:
        self.down = down
        self.sid = sid
        self.service = service
        self.req = req
        self.grpc = req.grpc
        self.started = _now()
        self.try_started = self.started
        self.endpoint: Any = None
        self.pending: Any = None
        self.up: Upstream | None = None
        self.usid = 0
        self.tries = 0
        self.status = 0
        self.grpc_code: int | None = None
        self.responded = False
        self.ended = False
        self.done = False
        self.req_ended = False
        self.req_trailers: list[tuple[bytes, bytes]] | None = None
        self.replay: list[bytes] | None = []
        """Request body sent so far, while it fits ``REPLAY_BYTES`` and nothing answered."""
        self.replay_bytes = 0
        self.body_bytes = 0
        self.unacked = 0
        self.sent_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.source = h2wire.Source(down, sid)
        self.gate: Any = None
        """Set while the policy waits (for a key set) before it lets the stream go on."""
        self.more_head = b""
        """Fields the proxy adds to the response head (the policy's ``RateLimit-*``), as
        header lines."""

    @property
    def method(self) -> bytes:
        return self.req.method

    @property
    def target(self) -> bytes:
        """The ``:path``: what the policy's path stage reads, as a request line's target."""
        return self.req.path

    # -- dispatch ------------------------------------------------------------------------
    def dispatch(self) -> None:
        service = self.service
        now = _now() if self.tries else self.started
        if not self.tries:
            service.budget.total += 1
            if service.timeouts.request:
                self.timer = service.loop.call_later(service.timeouts.request, self.timed_out)
        endpoint = service.balancer.pick(now, avoid=self.endpoint)
        if endpoint is None:
            self.answer(503, b"no endpoints for this service\n")
            return
        self.endpoint = endpoint
        self.tries += 1
        self.try_started = now
        endpoint.pool.series.requests += 1
        endpoint.pending += 1
        self.pending = endpoint
        if not endpoint.pool.take(self):
            self._release()
            self.answer(503, b"endpoint connection limit reached\n")

    def attach(self, up: Upstream) -> None:
        """The connection is ready: open the endpoint's stream, send what the client sent."""
        if self.done:
            return
        held = self.replay or []
        end = self.req_ended and not held and self.req_trailers is None
        try:
            self.usid = up.open_stream(self, self.req.headers, end)
        except h2.exceptions.ProtocolError:  # the peer's stream limit: another connection
            if not self.endpoint.pool.take(self):
                self._release()
                self.answer(503, b"endpoint stream limit reached\n")
            return
        self.up = up
        for piece in held:
            up.send_data(self.usid, piece, None)
        if self.unacked:  # held until now: the client may send that much more
            self.down.ack(self.sid, self.unacked)
            self.unacked = 0
        if self.req_ended and not end:
            up.send_end(self.usid, self._trailers())

    def connect_failed(self, error: BaseException) -> None:
        if self.done:
            return
        now = _now()
        self.service.balancer.failed(self.endpoint, now)
        self._release()
        log.debug("connect to %s failed: %s", self.endpoint.label, error)
        if not self._retry(now):
            self.answer(502, b"no endpoint could be reached\n")

    def refused(self, up: Upstream) -> None:
        """The endpoint did not process the stream (REFUSED_STREAM, or above its GOAWAY)."""
        self.up = None
        self._release()
        if self.replay is None or not self._retry(_now()):
            self.answer(502, b"the endpoint refused the stream\n")

    def _retry(self, now: float) -> bool:
        service = self.service
        if self.responded or self.tries >= service.retries.attempts:
            return False
        if not service.budget.withdraw(now):
            return False
        self.endpoint.pool.series.retries += 1
        self.dispatch()
        return True

    def _release(self) -> None:
        endpoint, self.pending = self.pending, None
        if endpoint is not None:
            endpoint.pending -= 1

    # -- the client's side ---------------------------------------------------------------
    def request_data(self, data: bytes, flow: int) -> None:
        self.body_bytes += len(data)
        down = self.down
        if flow > len(data):  # padding: nothing to pass on
            down.ack(self.sid, flow - len(data))
        replay = self.replay
        if replay is not None:
            if self.replay_bytes + len(data) <= REPLAY_BYTES or self.up is None:
                replay.append(data)
                self.replay_bytes += len(data)
            else:
                self.replay = None
        up = self.up
        if up is not None:
            up.send_data(self.usid, data, self.source)
        elif self.done:
            down.ack(self.sid, len(data))
        else:  # held in ``replay``, acknowledged once sent
            self.unacked += len(data)

    def request_end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.req_ended = True
        self.req_trailers = trailers
        if self.up is not None:
            self.up.send_end(self.usid, self._trailers())

    def _trailers(self) -> list[tuple[bytes, bytes]] | None:
        """The client's trailers as sent on, with the fields of the policy in force now
        (the stream was decided by it) and the proxy's own fields taken out."""
        trailers = self.req_trailers
        if trailers is None:
            return None
        service = self.service
        guard = service.guard
        kept = h2heads.request_trailers(
            trailers, forwarded=service.forwarded, peer=self.down.peer,
            strip=guard.wanted if guard is not None else frozenset(),
        )  # fmt: skip
        return kept or None  # none left: the stream ends with its data

    def client_reset(self) -> None:
        """The client cancelled the stream."""
        if self.done:
            return
        if self.up is not None:
            self.up.reset(self.usid, _CANCEL)
            self.up.done(self.usid)
            self.up = None
        self.finish()

    # -- the endpoint's side -------------------------------------------------------------
    def response_head(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """The endpoint's head; ``end``: it is the whole response (gRPC's trailers-only)."""
        if self.done:
            return
        status = 0
        for name, value in headers:
            if name == b":status":
                status = int(value)
                break
        now = _now()
        service = self.service
        endpoint = self.endpoint
        endpoint.observe(now - self.try_started, now)
        if status >= 500:
            service.balancer.failed(endpoint, now)
        elif endpoint.failures or endpoint.ejections:
            service.balancer.succeeded(endpoint, now)
        self.responded = True
        self.replay = None
        self.status = status
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.grpc_code = h2heads.grpc_status(headers)  # a trailers-only answer has it here
        self.ended = end
        out = h2heads.response_headers(headers)
        if self.more_head:  # the proxy's fields replace the endpoint's of the same names
            more = h2heads.fields(self.more_head)
            names = {name for name, _ in more}
            out = [(n, v) for n, v in out if n not in names] + more
        self.down.send_head(self.sid, out, end)
        self.try_started = now  # from here: the latency to the head, kept for the metrics

    def response_data(self, data: bytes, flow: int) -> None:
        up = self.up
        if up is not None and flow > len(data):
            up.ack(self.usid, flow - len(data))
        self.sent_bytes += len(data)
        if self.done:
            if up is not None:
                up.ack(self.usid, len(data))
            return
        self.down.send_data(self.sid, data, h2wire.Source(up, self.usid) if up else None)

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.grpc_code = h2heads.grpc_status(trailers)
        if not self.done:
            self.ended = True
            self.down.send_end(self.sid, h2heads.response_headers(trailers))

    def response_end(self) -> None:
        if not self.ended and not self.done:
            self.ended = True
            self.down.send_end(self.sid)
        if self.up is not None:
            self.up.done(self.usid)
            self.up = None
        self._count()
        self.finish()

    def upstream_reset(self, up: Upstream, code: int) -> None:
        up.done(self.usid)
        self.up = None
        if self.done:
            return
        if code == _REFUSED and not self.responded:
            self.refused(up)
            return
        self._failed(code)

    def upstream_lost(self, up: Upstream) -> None:
        self.up = None
        if not self.done:
            self._failed(int(h2.errors.ErrorCodes.INTERNAL_ERROR))

    def _failed(self, code: int) -> None:
        now = _now()
        if not self.responded:
            self.service.balancer.failed(self.endpoint, now)
            self._release()
            self.answer(502, b"the endpoint reset the stream before answering\n")
            return
        self._count()
        self.down.reset(self.sid, code)
        self.finish()

    def timed_out(self) -> None:
        self.timer = None
        if self.done:
            return
        if self.up is not None:
            self.up.reset(self.usid, _CANCEL)
            self.up.done(self.usid)
            self.up = None
        if self.responded:
            self.down.reset(self.sid, _CANCEL)
            self.finish()
            return
        self.answer(504, b"the request timed out\n")

    # -- endings -------------------------------------------------------------------------
    def answer(
        self, status: int, detail: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """The proxy's own answer (only before the endpoint's head), with ``extra`` fields."""
        if self.done:
            return
        if self.responded:
            self.down.reset(self.sid, int(h2.errors.ErrorCodes.INTERNAL_ERROR))
            self.finish()
            return
        if self.up is not None:
            self.up.reset(self.usid, _CANCEL)
            self.up.done(self.usid)
            self.up = None
        head, body = h2heads.local_answer(status, detail, grpc=self.grpc, extra=extra or ())
        self.status = status
        self.grpc_code = h2heads.GRPC_FOR_HTTP.get(status, 2) if self.grpc else None
        self.ended = True
        self.down.send_head(self.sid, head, not body)
        if body:
            self.down.send_data(self.sid, body, None)
            self.down.send_end(self.sid)
        series = self.endpoint.pool.series if self.endpoint is not None else self.service.local
        if self.endpoint is None:
            series.requests += 1
        series.respond_grpc(status, self.grpc_code, _now() - self.started)
        self.finish()

    def _count(self) -> None:
        if self.endpoint is not None and self.status:
            self.endpoint.pool.series.respond_grpc(
                self.status, self.grpc_code, self.try_started - self.started
            )

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._release()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.up is not None:
            self.up.reset(self.usid, _CANCEL)
            self.up.done(self.usid)
            self.up = None
        self.replay = None
        self.down.finished(self)
