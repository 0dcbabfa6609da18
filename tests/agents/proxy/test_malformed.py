"""10,000 malformed and ambiguous requests: each refused with 400, none forwarded ambiguously."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httptools
import pytest

from tests.agents.proxy.malformed import cases
from tests.agents.proxy.support import request, start_backend, start_proxy

COUNT = 10_000
CONCURRENCY = 32


async def _send_all(port: int, items: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Send each case on its own connection; return (kind, first response line)."""
    gate = asyncio.Semaphore(CONCURRENCY)
    out: list[tuple[str, bytes]] = []

    async def one(kind: str, data: bytes) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(data)
                await writer.drain()
                got = await asyncio.wait_for(reader.read(4096), 20)
            except ConnectionError:
                got = b"<reset>"
            finally:
                writer.close()
            out.append((kind, got.split(b"\r\n", 1)[0]))

    await asyncio.gather(*(one(k, d) for k, d in items))
    return out


class _Strict:
    """Collects what a strict HTTP/1.1 parser sees in the bytes the app received."""

    def __init__(self) -> None:
        self.framings: list[set[str]] = []
        self.names: set[str] = set()

    def on_message_begin(self) -> None:
        self.names = set()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.add(name.decode("latin-1").lower())

    def on_headers_complete(self) -> None:
        self.framings.append(self.names & {"content-length", "transfer-encoding"})


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_ten_thousand_malformed_requests_get_400_and_reach_the_app_unambiguously(
    tmp_path: Path, loop: str
) -> None:
    app = start_backend(tmp_path / "app")
    proxy = start_proxy(inbound_app=app.address, loop=loop)
    try:
        items = list(cases(COUNT))
        answers = asyncio.run(_send_all(proxy.ports["inbound"], items))
        statuses = Counter(line for _, line in answers)
        wrong = [(k, line) for k, line in answers if not line.startswith(b"HTTP/1.1 400 ")]
        assert not wrong, (len(wrong), Counter(wrong).most_common(5), statuses.most_common(5))
        assert proxy.proc.poll() is None
        assert request(proxy.ports["inbound"], "/ok")[0] == 200
        assert proxy.metric("response_total", status_code="400") == COUNT
    finally:
        proxy.stop()
        app.kill()
    # whatever reached the app parses strictly, with at most one framing header a message
    strict = _Strict()
    for data in app.received():
        parser = httptools.HttpRequestParser(strict)
        parser.feed_data(data)  # raises on anything ambiguous or malformed
    assert all(len(framing) <= 1 for framing in strict.framings)
    assert not any(b"/smuggled" in data for data in app.received())
