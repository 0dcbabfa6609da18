"""Syslog over UDP (RFC 5426): one message per datagram, nothing to confirm.

The encoder frames messages for TCP (``MSG-LEN SP SYSLOG-MSG``); ``messages`` takes the frames
apart again, which costs one slice per message and keeps a single encoder for every transport.
A message longer than ``max_message`` is cut at a UTF-8 character boundary (RFC 5426 §3.2 lets a
receiver or sender truncate), and counted.

**What "delivered" means over UDP:** a datagram counts as delivered once the kernel took it.
A receiver that is down answers with ICMP "port unreachable", which the socket reports on a
later send; the sink then raises and the batch is sent again, whole. A receiver that is up
but overloaded drops datagrams without a word, and so does any network between. Use TCP or
TLS where every line matters.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final, cast

__all__ = ["MAX_MESSAGE", "Sender", "messages"]

MAX_MESSAGE: Final = 8192
"""Default longest datagram, in bytes: rsyslog's default ``maxMessageSize``; syslog-ng takes
64 KiB. Loopback and most networks carry it (fragmented past the MTU)."""


def messages(frames: bytes, limit: int) -> tuple[list[bytes], int]:
    """The messages of octet-counted ``frames``, each cut to ``limit`` bytes; and how many
    were cut."""
    out: list[bytes] = []
    cut = 0
    position, end = 0, len(frames)
    find = frames.find
    while position < end:
        space = find(b" ", position)
        start = space + 1
        stop = start + int(frames[position:space])
        message = frames[start:stop]
        if len(message) > limit:
            keep = limit
            while keep > 0 and message[keep] & 0xC0 == 0x80:  # not inside a UTF-8 character
                keep -= 1
            message = message[:keep]
            cut += 1
        out.append(message)
        position = stop
    return out, cut


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: OSError | None = None
        self.lost = False

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class Sender:
    """A connected UDP socket to one receiver, opened on first use and kept."""

    def __init__(self, host: str, port: int, endpoint: str) -> None:
        self.host, self.port, self.endpoint = host, port, endpoint
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None

    async def send(self, datagrams: list[bytes]) -> None:
        """Hand every datagram to the kernel; ``ConnectionError`` when the receiver's host said
        nobody listens (the whole batch is then sent again)."""
        transport, protocol = await self._open()
        self._check(protocol)
        for n, datagram in enumerate(datagrams):
            transport.sendto(datagram)
            if n % 64 == 63:
                await self._drained(transport, protocol)
        await self._drained(transport, protocol)

    async def _drained(self, transport: asyncio.DatagramTransport, protocol: _Protocol) -> None:
        # The kernel's send buffer was full: asyncio keeps the rest until it has room.
        # Datagram transports (asyncio's and uvloop's) have it; typeshed leaves it out.
        while cast(asyncio.WriteTransport, transport).get_write_buffer_size():
            await asyncio.sleep(0.001)
            self._check(protocol)
        await asyncio.sleep(0)  # let an ICMP error of this turn arrive
        self._check(protocol)

    def _check(self, protocol: _Protocol) -> None:
        error = protocol.error
        if error is None and not protocol.lost:
            return
        self.close()
        raise ConnectionRefusedError(
            f"syslog receiver {self.endpoint}: {error or 'socket closed'}; nothing listens there"
        )

    async def _open(self) -> tuple[asyncio.DatagramTransport, _Protocol]:
        if self._transport is not None and self._protocol is not None:
            return self._transport, self._protocol
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                _Protocol, remote_addr=(self.host, self.port), family=socket.AF_UNSPEC
            )
        except OSError as exc:
            raise ConnectionError(f"syslog receiver {self.endpoint}: {exc}") from exc
        self._transport, self._protocol = transport, protocol
        return transport, protocol

    def close(self) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            transport.close()
