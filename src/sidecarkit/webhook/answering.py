"""HTTP/1.1 for the webhook: requests parsed with httptools, answered in order, one protocol per
connection, no task per request.

A web framework cost more per admission than deciding it: aiohttp's request and response
objects, its handler task and its header handling came to about 200 k instructions per review,
where parsing with httptools (the llhttp parser) and writing a prepared head take about 20 k.
The webhook serves five fixed paths, reads one body per request and answers with a complete
body, which is all this module does:

- a request's head is parsed by callbacks; once it is complete and the request is first in its
  connection's line, the server is told (``App.begin``: counted in flight, an admission slot
  taken; a pipelined request begins when its turn comes, so a connection holds one slot at
  most) and, for ``Expect: 100-continue``, the client is told to go on; a declared body over
  ``max_body`` is answered 413 at once;
- its body is collected (past ``max_body`` it is dropped, and 413 answered when it ends);
- complete requests are answered one at a time in arrival order (pipelining). ``App.answer``
  returns the answer, or a coroutine for the few that wait (a slot, a worker process, a
  namespace lookup), which alone runs as a task;
- answers are written at the end of the event loop's turn, together with the others made in
  it (``outboxes.Outbox``), so a client is woken once per burst rather than once per answer;
- reading pauses while ``PIPELINE_DEPTH`` requests wait or the client does not read its answers,
  so neither a pipelining client nor a never-reading one makes the server buffer without bound;
- when reading must stop (a malformed request, an upgrade, the client's end of input) the
  requests complete before that point are still answered, in order, then the connection closes;
  an exception from the server is answered 500, logged, and closes the connection.

The connection's timeouts and the connection cap are ``guarding``'s: this protocol tells its
``Guard`` where each request is (head, body, answering, idle).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Coroutine
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import httptools

if TYPE_CHECKING:
    from sidecarkit.webhook import guarding, outboxes

__all__ = [
    "FLUSH_AT",
    "PIPELINE_DEPTH",
    "Answer",
    "App",
    "Connection",
    "Request",
]

log = logging.getLogger("sidecarkit.webhook")

PIPELINE_DEPTH: Final = 8
"""Complete requests waiting on one connection before reading pauses."""
MAX_HEAD: Final = 64 * 1024
"""Bytes of a request's line and header fields at most; beyond, 431 and the connection closes."""
FLUSH_AT: Final = 64 * 1024
"""Bytes of answers one connection holds at most before they are written."""

_REASONS: Final = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Answer(NamedTuple):
    """A complete response (a tuple: one is made for every admission, and a frozen dataclass
    cost four times as much to make)."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    """Close the connection after it (the request cannot be followed by another)."""


class Request:
    """One request on a connection, from the end of its head to its answer."""

    __slots__ = (
        "answered",
        "begun",
        "chunks",
        "complete",
        "continue_",
        "keep_alive",
        "method",
        "path",
        "size",
        "slot",
        "started",
        "too_large",
        "waiter",
    )

    def __init__(self, method: bytes, path: bytes, keep_alive: bool, started: float) -> None:
        self.method = method
        self.path = path
        self.keep_alive = keep_alive
        self.started = started
        """Loop time at the end of the head."""
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.complete = False
        self.answered = False
        self.slot = False
        """Holds one of the server's admission slots (``App.begin`` / ``App.end``)."""
        self.begun = False
        """``App.begin`` was called: ``App.end`` must be, once."""
        self.continue_ = False
        """The client waits for ``100 Continue`` before it sends the body."""
        self.waiter: asyncio.Future[None] | None = None
        """Set while the request waits for a slot."""

    @property
    def body(self) -> bytes:
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)


class App(Protocol):
    """What a connection needs from the server."""

    @property
    def draining(self) -> bool:
        """Shutting down: answers close their connections."""
        ...

    def begin(self, request: Request) -> None:
        """A request's head is complete."""

    def answer(self, request: Request) -> Answer | Coroutine[Any, Any, Answer]:
        """The answer to a complete request, or a coroutine making it."""
        ...

    def end(self, request: Request) -> None:
        """The request was answered, or its connection is gone; called once per ``begin``."""


_date = (b"", 0)
_heads: dict[tuple[int, str, tuple[tuple[str, str], ...], bool], bytes] = {}


def _date_header() -> bytes:
    global _date  # noqa: PLW0603 - one formatted Date per second for every connection
    now = int(time.time())
    if _date[1] != now:
        _date = (formatdate(now, usegmt=True).encode("ascii"), now)
    return _date[0]


def head(answer: Answer, close: bool) -> bytes:
    """The status line and header fields of ``answer``."""
    key = (answer.status, answer.content_type, answer.headers, close)
    fixed = _heads.get(key)
    if fixed is None:  # a handful of kinds of answers: each head is made once
        status, content_type, headers, _ = key
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n",
            f"Content-Type: {content_type}\r\n",
            *(f"{name}: {value}\r\n" for name, value in headers),
            "Connection: close\r\n" if close else "",
            "Date: ",
        ]
        fixed = _heads[key] = "".join(lines).encode("latin-1")
    return b"%b%b\r\nContent-Length: %d\r\n\r\n" % (fixed, _date_header(), len(answer.body))


_TOO_LARGE: Final = Answer(413, b"sidecarkit: request body too large\n", close=True)
_NO_ANSWER: Final = Answer(0, b"")
"""A refusal that answers nothing itself: the connection closes after the queued answers."""
_FAILED: Final = Answer(500, b"sidecarkit: internal error; see the webhook's log\n", close=True)
_HEAD_TOO_LARGE: Final = Answer(431, b"sidecarkit: request head too large\n", close=True)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the answer is in ``Connection.refusal``."""


class Connection(asyncio.Protocol):
    """One client connection (inside its ``Guard``, which owns the transport's timeouts)."""

    def __init__(
        self, app: App, guard: guarding.Guard, max_body: int, outbox: outboxes.Outbox
    ) -> None:
        self.app = app
        self.guard = guard
        self.max_body = max_body
        self.outbox = outbox
        self.outgoing: list[bytes] = []
        """Answers made and not yet written: they leave at the end of the turn."""
        self.outgoing_size = 0
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.loop = asyncio.get_running_loop()
        self.url = b""
        self.head_bytes = 0
        self.in_head = False
        self.expect = False
        self.declared = 0
        self.parsing: Request | None = None
        """The request whose head is complete and whose body is arriving."""
        self.queue: collections.deque[Request] = collections.deque()
        """Complete requests not yet answered."""
        self.current: Request | None = None
        """The request being answered by a task."""
        self.task: asyncio.Task[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self.closed = False
        self.refusal: Answer | None = None
        self.finishing = False
        """Reading is over (a refusal, an upgrade, the client's end of input): answer what is
        queued, then ``last`` if any, and close."""
        self.last: Answer | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.closed or self.finishing:
            return
        if self.parsing is None:  # between requests or in a head: bound what a head may grow to
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self.in_head and self.head_bytes > MAX_HEAD:
                self._stop(_HEAD_TOO_LARGE)
        except _Refused:
            pass
        except httptools.HttpParserCallbackError:
            if self.refusal is None:
                raise
        except httptools.HttpParserUpgrade:
            # A complete request asking for an upgrade is answered as HTTP/1.1 (the upgrade is
            # ignored, as RFC 9110 allows); one whose body would follow (CONNECT) is refused.
            self.refusal = (
                Answer(400, b"sidecarkit: protocol upgrades are not supported\n", close=True)
                if self.parsing is not None
                else _NO_ANSWER
            )
        except httptools.HttpParserError as exc:
            detail = str(exc).encode("utf-8", "replace")
            self.refusal = Answer(400, b"sidecarkit: malformed HTTP request: %s\n" % detail)
        if self.refusal is not None:
            self._refuse(self.refusal)
            return
        self._pump()

    def eof_received(self) -> bool:
        # A request still arriving never will: it ends here. Complete ones are answered, then
        # the connection closes (``_pump``). Answers held for the end of the turn go now: the
        # transport starts closing once this returns False (and, under TLS, whatever it returns).
        self.flush()
        self._end_parsing()
        if self.current is None and not self.queue:
            return False
        self.finishing = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.outgoing = []
        pending = [*self.queue, self.current, self.parsing]
        self.queue.clear()
        self.current = self.parsing = None
        for request in pending:
            if request is not None:
                self._end(request)
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.in_head = True
        self.expect = False
        self.declared = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 6 and name.lower() == b"expect":
            if value.lower() != b"100-continue":
                self._stop(Answer(417, b"sidecarkit: only 100-continue is expected\n", close=True))
            self.expect = True
        elif len(name) == 14 and name.lower() == b"content-length" and value.isdigit():
            self.declared = int(value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        path, _, _ = self.url.partition(b"?")
        request = Request(
            self.parser.get_method(), path, self.parser.should_keep_alive(), self.loop.time()
        )
        if self.declared > self.max_body:
            request.too_large = True
        self.parsing = request
        if self.current is None and not self.queue:
            # Only the request at the head of the line is in flight (and holds an admission
            # slot while its body arrives); pipelined ones begin when their turn comes, so one
            # connection never holds more than one slot.
            self._begin(request)
            self.guard.request_started()
        if self.expect:
            if request.too_large:  # the body was not sent: answer now, nothing to skip
                self._end_parsing()
                self._stop(_TOO_LARGE)
            request.continue_ = True
            if self.current is None and not self.queue:  # else after the answers before it
                self._continue(request)

    def on_body(self, data: bytes) -> None:
        request = self.parsing
        if request is None or request.too_large:
            return
        request.size += len(data)
        if request.size > self.max_body:
            request.too_large = True
            request.chunks = []
            return
        request.chunks.append(data)

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is None:
            return
        self.parsing = None
        request.complete = True
        self.queue.append(request)

    # -- answering -------------------------------------------------------------------------

    def _pump(self) -> None:
        """Answer the queued requests in order, as far as nothing waits."""
        queue = self.queue
        while self.current is None and queue and not self.write_paused and not self.closed:
            request = queue.popleft()
            self.guard.body_read()
            if request.too_large:
                self._send(request, _TOO_LARGE)
                continue
            self._begin(request)
            try:
                answer = self.app.answer(request)
            except Exception:
                log.exception("answering %s %s failed", request.method, request.path)
                answer = _FAILED
            if isinstance(answer, Answer):
                self._send(request, answer)
            else:
                self.current = request
                self.task = self.loop.create_task(self._finish(request, answer))
        if self.closed:
            return
        if self.finishing:
            if self.current is None and not queue:
                if self.last is not None:
                    self.flush()
                    self.transport.write(head(self.last, True) + self.last.body)
                self._close()
            return
        if self.write_paused or len(queue) >= PIPELINE_DEPTH:
            self._pause()
        elif self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.current is None and not queue:
            parsing = self.parsing
            if parsing is not None:
                self._begin(parsing)
                if parsing.continue_:
                    self._continue(parsing)
                self.guard.request_started()
            elif self.in_head:
                self.guard.head_started()
            else:
                self.guard.request_done()

    async def _finish(self, request: Request, making: Coroutine[Any, Any, Answer]) -> None:
        try:
            answer = await making
        except Exception:
            log.exception("answering %s %s failed", request.method, request.path)
            answer = _FAILED
        self.task = None
        self.current = None
        if not self.closed:
            self._send(request, answer)
            self._pump()

    def _send(self, request: Request, answer: Answer) -> None:
        close = (
            answer.close
            or not request.keep_alive
            or self.app.draining
            or (self.finishing and self.last is None and not self.queue)
        )
        data = head(answer, close) + answer.body
        if not self.outgoing:
            self.outbox.add(self)
        self.outgoing.append(data)
        self.outgoing_size += len(data)
        self._end(request)
        if close:
            self._close()
        elif self.outgoing_size >= FLUSH_AT:
            self.flush()
        elif self.outbox.overdue():
            self.outbox.flush()

    def flush(self) -> None:
        """Write the answers held for the end of the turn (``outboxes.Outbox``)."""
        outgoing = self.outgoing
        if outgoing:
            self.outgoing = []
            self.outgoing_size = 0
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _begin(self, request: Request) -> None:
        if not request.begun:
            request.begun = True
            self.app.begin(request)

    def _end(self, request: Request) -> None:
        if not request.answered:
            request.answered = True
            if request.begun:
                self.app.end(request)

    def _end_parsing(self) -> None:
        if self.parsing is not None:
            self._end(self.parsing)
            self.parsing = None

    def _continue(self, request: Request) -> None:
        request.continue_ = False
        self.flush()
        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _pause(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _stop(self, answer: Answer) -> None:
        self.refusal = answer
        raise _Refused

    def _refuse(self, answer: Answer) -> None:
        """Stop reading: what follows cannot be trusted to start a request. The requests
        complete before it are answered first, in order; then ``answer`` (unless it is
        ``_NO_ANSWER``), and the connection closes."""
        self._end_parsing()
        self.finishing = True
        self.last = None if answer is _NO_ANSWER else answer
        self._pause()
        self._pump()

    def _close(self) -> None:
        self.flush()
        self.closed = True
        self.transport.close()
