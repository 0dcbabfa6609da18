"""A local HTTP/1.1 test server, run as its own process, for the proxy's tests.

It implements what the tests need of an app faithfully (keep-alive, Content-Length and chunked
request bodies, parsed by httptools in strict mode) and records every byte it receives, per
connection, so a test can check what the proxy forwarded. Behaviour by path:

``/ok``               200 with the body ``ok <port>`` (which endpoint answered)
``/status/N``         status N
``/slow/MS``          200 after MS milliseconds
``/echo``             200 with JSON: method, target, headers, body length
``/stream``           200 chunked, ``chunk <port>`` every 50 ms, never ending
``/big/N``            200 with N bytes
``/upgrade``          101 to an ``Upgrade`` request, then echoes every byte

usage: python backend.py PORT RECORD_DIR [HOST]   (HOST: 127.0.0.1)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httptools


class Conn(asyncio.Protocol):
    counter = 0

    def __init__(self, port: int, record: Path) -> None:
        Conn.counter += 1
        self.port = port
        self.log = (record / f"conn-{Conn.counter:06d}.bin").open("wb")
        self.parser = httptools.HttpRequestParser(self)
        self.t: Any = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.echo = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.close()
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()
        if self.echo:
            self.t.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0] :]
            if self.echo and rest:
                self.t.write(rest)
            elif not self.echo:  # an Upgrade we do not take: answered already, parse on
                self.parser = httptools.HttpRequestParser(self)
                if rest:
                    self.data_received(rest)
        except httptools.HttpParserError:
            self.t.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.t.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        path = self.url.decode("latin-1")
        method = self.parser.get_method().decode()
        if path.startswith("/slow/"):
            task = asyncio.get_running_loop().create_task(self.later(int(path[6:]) / 1000))
            self.tasks.add(task)
            return
        if path == "/stream":
            task = asyncio.get_running_loop().create_task(self.stream())
            self.tasks.add(task)
            return
        if path == "/upgrade":
            wanted = {k.lower(): v for k, v in self.headers}.get("upgrade", "")
            self.t.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
                % wanted.encode()
            )
            self.echo = True
            return
        if path.startswith("/status/"):
            self.answer(int(path[8:]), b"status\n")
        elif path.startswith("/big/"):
            self.answer(200, b"b" * int(path[5:]))
        elif path == "/echo":
            doc = {"method": method, "target": path, "headers": self.headers, "body": self.body}
            self.answer(200, json.dumps(doc).encode())
        else:
            self.answer(200, b"ok %d" % self.port)

    def answer(self, status: int, body: bytes) -> None:
        self.t.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))

    async def later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.answer(200, b"slow %d" % self.port)

    async def stream(self) -> None:
        self.t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            piece = b"chunk %d\n" % self.port
            self.t.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await asyncio.sleep(0.05)


async def main(port: int, record: Path, host: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(port, record), host, port)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), (sys.argv[3:] or ["127.0.0.1"])[0]))
