"""Answers made in one turn of the event loop, written together at its end.

Each connection (``answering.Connection``) keeps the answers it made and registers here once;
at the end of the turn, or once an answer has waited ``hold`` seconds, every registered
connection writes what it holds in one write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["FLUSH_AFTER", "Holder", "Outbox"]

FLUSH_AFTER: Final = 0.001
"""Seconds an answer may wait for the others of its turn."""


class Holder(Protocol):
    """A connection holding answers (``answering.Connection``)."""

    def flush(self) -> None:
        """Write what it holds."""


class Outbox:
    """The connections holding answers until the end of the turn.

    Written as soon as each is made, a busy server's answers leave one decision apart, and each
    wakes a client waiting on several connections again; the wake-up is paid by the writer,
    and cost more than deciding a distinct pod (under wrk: the client switched context for
    nearly every answer, and the server's CPU per distinct admission fell by two fifths once
    answers were held). Held to the end of the turn, they leave in one burst, as a framework
    that answers from tasks sends them. An answer waits at most ``hold`` seconds for the
    others: past that, everything held is written at once.
    """

    def __init__(
        self, hold: float = FLUSH_AFTER, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.hold = hold
        self.clock = clock
        self.waiting: list[Holder] = []
        self.since = 0.0
        """When the first answer now held was made."""

    def add(self, connection: Holder) -> None:
        """``connection`` holds answers to write (called once until it is flushed)."""
        if not self.waiting:
            self.since = self.clock()
            asyncio.get_running_loop().call_soon(self.flush)
        self.waiting.append(connection)

    def overdue(self) -> bool:
        return bool(self.waiting) and self.clock() - self.since >= self.hold

    def flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        for connection in waiting:
            connection.flush()
