"""The proxy's admin endpoint: ``/healthz``, ``/ready`` and ``/metrics`` over HTTP/1.1.

A few fixed read-only paths for a kubelet probe and a Prometheus scraper. A web framework would
cost the sidecar more memory than its whole data path, so this is a small Protocol with the
same httptools parser the data path uses: requests without a body, keep-alive, bounded heads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import httptools

from sidecarkit.agents.proxy import heads

__all__ = ["Route", "serve"]

Route = Callable[[], tuple[int, bytes, bytes]]
"""Returns (status, content type, body)."""

_MAX_HEAD = 8192


class _Admin(asyncio.Protocol):
    def __init__(self, routes: Mapping[str, Route]) -> None:
        self.routes = routes
        self.t: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.size += len(data)
        try:
            if self.size > _MAX_HEAD:
                raise httptools.HttpParserError("request too large")
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # answered as a plain request; nothing to upgrade to
            self.t.close()
        except httptools.HttpParserError:
            self.t.write(heads.simple_response(400, b"bad request\n", close=True))
            self.t.close()

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.size = 0
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        route = self.routes.get(path)
        keep = self.parser.should_keep_alive()
        if route is None:
            status, kind, body = 404, b"text/plain", b"not found\n"
        elif method not in (b"GET", b"HEAD"):
            status, kind, body = 405, b"text/plain", b"only GET\n"
        else:
            status, kind, body = route()
        self.t.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s"
            % (
                status,
                heads.reason(status),
                kind,
                len(body),
                b"" if keep else b"connection: close\r\n",
                b"" if method == b"HEAD" else body,
            )
        )
        if not keep:
            self.t.close()


async def serve(host: str, port: int, routes: Mapping[str, Route]) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port) and answer ``routes``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Admin(routes), host, port)
