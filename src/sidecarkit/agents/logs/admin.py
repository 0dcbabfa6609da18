"""The logs agent's admin endpoint: ``GET`` of a few fixed paths over HTTP/1.1.

A sidecar should cost the pod little. A full web framework (with its client half, TLS
contexts and all) costs the agent about 15 MB of memory for three read-only paths that a
kubelet probe and a Prometheus scraper read, so this is the small server those clients need:
requests with no body, keep-alive, ``Content-Length`` answers, and a bound on request size so a
stray client cannot make it buffer much. Anything else gets 404, 405 or 400.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["Handler", "serve"]

Handler = Callable[[], Awaitable[tuple[int, str, bytes]]]
"""Returns (status, content type, body)."""

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS.update({503: "Service Unavailable"})
_MAX_HEAD = 8192


async def _answer(
    writer: asyncio.StreamWriter, status: int, kind: str, body: bytes, *, keep: bool, head: bool
) -> None:
    reason = _REASONS.get(status, "OK")
    connection = "keep-alive" if keep else "close"
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n".encode()
        + (b"" if head else body)
    )
    await writer.drain()


def _handler(routes: Mapping[str, Handler]) -> Callable[..., Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    await _answer(
                        writer, 400, "text/plain", b"request too large\n", keep=False, head=False
                    )
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    await _answer(
                        writer, 400, "text/plain", b"bad request line\n", keep=False, head=False
                    )
                    return
                method, target, version = parts
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
                    await _answer(
                        writer, 400, "text/plain", b"no request body here\n", keep=False, head=False
                    )
                    return
                keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
                route = routes.get(target.split("?", 1)[0])
                if route is None:
                    status, kind, body = 404, "text/plain", b"not found\n"
                elif method not in ("GET", "HEAD"):
                    status, kind, body = 405, "text/plain", b"only GET\n"
                else:
                    status, kind, body = await route()
                await _answer(writer, status, kind, body, keep=keep, head=method == "HEAD")
                if not keep:
                    return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    return handle


async def serve(host: str, port: int, routes: Mapping[str, Handler]) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port) and answer ``routes``."""
    return await asyncio.start_server(_handler(routes), host, port, limit=_MAX_HEAD)
