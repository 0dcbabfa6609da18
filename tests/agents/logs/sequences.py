"""A receiver for numbered log lines (``seq=NNNNNNN ...``, as ``writer.py`` writes them)."""

from __future__ import annotations

from array import array
from typing import Any

from aiohttp import web

from tests.support.receivers.base import Receiver


class SequenceReceiver(Receiver):
    """An NDJSON endpoint that keeps, per line number, how often it arrived, and checks that
    first arrivals come in order within each writer segment (one file's worth of lines)."""

    def __init__(self, total: int, every: int) -> None:
        super().__init__()
        self.every = every
        self.counts = array("I", bytes(4 * total))
        self.last_first = [-1] * (total // every + 1)
        self.out_of_order = 0
        self.received = 0
        self.unique = 0
        self.largest_request = 0
        self.bad = 0

    def routes(self) -> list[tuple[str, Any]]:
        return [("/ingest", self._ingest)]

    async def _ingest(self, request: web.Request, body: bytes) -> web.Response:
        marker = b'"message":"seq='
        numbers = []
        for line in body.split(b"\n"):
            if not line:
                continue
            at = line.find(marker)
            if at < 0:
                self.bad += 1
                continue
            start = at + len(marker)
            numbers.append(int(line[start : start + 7]))
        with self.lock:
            self.largest_request = max(self.largest_request, len(numbers))
            for n in numbers:
                self.received += 1
                if self.counts[n] == 0:
                    self.unique += 1
                    segment = n // self.every
                    if n < self.last_first[segment]:
                        self.out_of_order += 1
                    self.last_first[segment] = n
                self.counts[n] += 1
        return web.Response(status=204)
