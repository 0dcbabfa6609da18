"""The server, the thread and the controls every local receiver shares.

Each receiver runs an aiohttp server on 127.0.0.1 (port 0, then the same port for the server's
life) in a thread of its own with its own event loop, and is used as a context manager. Its
controls are safe to call from the test's thread:

- ``fail_next(n, status, retry_after=None)``: answer the next ``n`` requests with ``status``
  (whole-request failures), without taking anything in;
- ``down()`` / ``up()``: close the listening socket and every open connection, so connections are
  refused, then listen again on the same port;
- counters: ``requests`` (every request that arrived), ``gzipped`` (requests with a gzip body),
  ``last_headers``.

Everything is bounded: request bodies (before and after gzip) by ``max_body``, stored records by
``max_records`` (past it the receiver answers 503), waits by timeouts. A receiver for one API
subclasses ``Receiver`` and names its handlers in ``routes``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

Handler = Callable[[web.Request, bytes], Awaitable[web.Response]]


@dataclass
class _Failure:
    remaining: int
    status: int
    retry_after: str | None
    body: bytes


class Receiver:
    """The server, the thread and the controls every receiver shares."""

    def __init__(
        self,
        *,
        max_body: int = 32 << 20,
        max_records: int = 200_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_body = max_body
        self.max_records = max_records
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self.requests = 0
        self.gzipped = 0
        self.last_headers: dict[str, str] = {}
        self.port = 0
        self._stored = 0
        self._failures: list[_Failure] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- life ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # handed to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError(f"{type(self).__name__} did not start within 10 s")
        if errors:
            raise errors[0]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            self._call(self._close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "the receiver is not running; use it in a with block"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _listen(self) -> None:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_routes(
            [web.post(path, self._wrap(handler)) for path, handler in self.routes()]
        )
        # Bodies are decompressed here, with a bound, not by aiohttp: the receiver must see
        # what the client really sent.
        runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        if not self.port:
            self.port = int(runner.addresses[0][1])

    async def _close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def down(self) -> None:
        """Stop listening and drop every connection: new connections are refused."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    # -- controls ---------------------------------------------------------------------------

    def fail_next(
        self, n: int, status: int, retry_after: float | str | None = None, body: bytes = b""
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After``), taking nothing."""
        text = None if retry_after is None else str(retry_after)
        with self.lock:
            self._failures.append(_Failure(n, status, text, body or f"injected {status}".encode()))

    # -- requests ---------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, Handler]]:
        raise NotImplementedError

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            with self.lock:
                self.requests += 1
                self.last_headers = dict(request.headers)
                failure = self._failures[0] if self._failures else None
                if failure is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.pop(0)
            raw = await request.read()
            if failure is not None:
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
                return web.Response(status=failure.status, body=failure.body, headers=headers)
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding == "gzip":
                with self.lock:
                    self.gzipped += 1
                body = self._gunzip(raw)
                if body is None:
                    return self.refuse(400, "gzip: invalid header or truncated body")
            elif encoding == "identity":
                body = raw
            else:
                return self.refuse(415, f"unsupported Content-Encoding {encoding!r}")
            if len(body) > self.max_body:
                return self.refuse(413, f"body larger than {self.max_body} bytes")
            return await handler(request, body)

        return handle

    def _gunzip(self, data: bytes) -> bytes | None:
        decompressor = zlib.decompressobj(31)
        try:
            out = decompressor.decompress(data, self.max_body + 1)
        except zlib.error:
            return None
        if len(out) <= self.max_body and (not decompressor.eof or decompressor.unused_data):
            return None
        return out

    def refuse(self, status: int, message: str) -> web.Response:
        """A refusal in the receiver's own style (plain text unless overridden)."""
        return web.Response(status=status, text=message + "\n")

    def _room(self, n: int) -> bool:
        """Reserve room for ``n`` more records, if the bound allows (call under the lock)."""
        if self._stored + n > self.max_records:
            return False
        self._stored += n
        return True


def content_type(request: web.Request) -> str:
    """The request's media type, lower-cased, without parameters (``; charset=...``)."""
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
