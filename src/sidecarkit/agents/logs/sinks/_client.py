"""A lean HTTP/1.1 client for the HTTP sinks: POST a body, read the answer, keep the connection.

The sinks need one thing from HTTP: send a request body of a megabyte or two to one URL and read
a short answer, many times a second, over a kept-alive connection (TLS or not). aiohttp does far
more, and its import alone costs the agent about 10 MB of RSS and a tenth of a CPU-second at
start, a fifth of the memory budget of a sidecar; this module does that one thing on asyncio
streams (so on uvloop when the agent runs there).

What it does, after RFC 9112:

- one request at a time per connection; idle connections are kept (at most ``IDLE``) and
  reused; a reused connection that turns out closed before any answer byte arrived (the
  receiver's keep-alive timeout ran out) is replaced once by a fresh one, as browsers do for
  idempotent retries: the sinks' requests are safe to repeat (ids, timestamps);
- answers with ``Content-Length``, chunked transfer coding, or delimited by the connection's
  close; ``1xx`` answers are skipped; ``204``/``304`` have no body;
- redirects are not followed (the status is handed back);
- the whole exchange, connecting included, is bounded by the settings' ``timeout``.

Failures raise ``OSError`` subclasses (refused, reset, TLS verification: ``ssl.SSLError``),
``TimeoutError``, or ``ProtocolError`` (an ``OSError`` too) for an answer that breaks HTTP or
exceeds the size limit: all of them mean "no answer; send again later".
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final
from urllib.parse import urlsplit

__all__ = ["IDLE", "Connection", "ProtocolError", "Response", "exchange"]

IDLE: Final = 4
"""Idle connections kept per client."""
_HEAD_LIMIT: Final = 64 << 10
"""Longest status line plus headers (or chunk-size line) read, in bytes."""


class ProtocolError(ConnectionError):
    """The receiver's answer is not HTTP/1.x as it must be, or is longer than allowed."""


Response = tuple[int, dict[str, str], bytes, bool]
"""Status, headers (lower-case names), body, and whether the connection may be reused."""


class Connection:
    """One open connection: its streams, and whether it has served a request already."""

    __slots__ = ("reader", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.used = reader, writer, False

    @classmethod
    async def open(cls, url: str, context: ssl.SSLContext | None) -> Connection:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=context,
            server_hostname=host if context is not None else None,
            limit=_HEAD_LIMIT,
        )
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()


def target(url: str) -> tuple[str, str]:
    """``(Host header, request target)`` of ``url``."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return parts.netloc.rpartition("@")[2], f"{path}?{parts.query}" if parts.query else path


async def exchange(connection: Connection, head: bytes, body: bytes, *, limit: int) -> Response:
    """Send one request (``head`` ends with the blank line) and read its answer."""
    connection.writer.writelines((head, body))
    await connection.writer.drain()
    reader = connection.reader
    while True:
        status, version, headers = await _head(reader)
        if status >= 200:
            break
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304):
        return status, headers, b"", keep
    coding = headers.get("transfer-encoding", "").lower()
    if coding:
        if coding.rsplit(",", 1)[-1].strip() != "chunked":
            raise ProtocolError(f"answer with Transfer-Encoding {coding!r}, not chunked")
        return status, headers, await _chunked(reader, limit), keep
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError(f"answer with Content-Length {length!r}")
        size = int(length)
        if size > limit:
            raise ProtocolError(f"answer of {size} bytes; more than {limit} are not read")
        return status, headers, await reader.readexactly(size), keep
    data = await reader.read(limit + 1)
    while data and len(data) <= limit:
        more = await reader.read(limit + 1 - len(data))
        if not more:
            break
        data += more
    if len(data) > limit:
        raise ProtocolError(f"answer longer than {limit} bytes")
    return status, headers, data, False


async def _head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(f"answer headers longer than {_HEAD_LIMIT} bytes") from exc
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"answer does not start with an HTTP/1.x status line: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"malformed answer header line {line!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(code), version, headers


async def _chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    out = bytearray()
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("chunk size line too long") from exc
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise ProtocolError(f"malformed chunk size {size_text!r}") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields, dropped
                pass
            return bytes(out)
        if len(out) + size > limit:
            raise ProtocolError(f"answer longer than {limit} bytes")
        out += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")
