"""The retry budget: retries may add only a share of the live traffic, plus a small floor.

A fixed "retry 3 times" turns an outage into a retry storm: every request becomes four.
Linkerd's budget instead lets retries add at most ``ratio`` of the requests seen in the last
``window`` seconds, plus ``floor`` retries a second so that a quiet service can still retry.
When every endpoint fails, retries therefore stay at ``ratio x requests + floor x window``.

Counts are kept in one-second slots over the window, so memory is fixed and each call costs a
few integer operations. No clock is read here: callers pass ``now``.
"""

from __future__ import annotations

import math

__all__ = ["RetryBudget"]


class RetryBudget:
    __slots__ = ("denied", "epoch", "floor", "ratio", "requests", "retries", "slots")

    def __init__(self, *, ratio: float, floor: float, window: float) -> None:
        self.ratio = ratio
        self.floor = floor
        self.slots = max(1, math.ceil(window))
        self.requests = [0] * self.slots
        self.retries = [0] * self.slots
        self.epoch = 0
        self.denied = 0

    def _advance(self, now: float) -> int:
        second = int(now)
        if second - self.epoch >= self.slots:
            self.requests = [0] * self.slots
            self.retries = [0] * self.slots
        else:
            for s in range(self.epoch + 1, second + 1):
                self.requests[s % self.slots] = 0
                self.retries[s % self.slots] = 0
        self.epoch = max(self.epoch, second)
        return self.epoch % self.slots

    def deposit(self, now: float) -> None:
        """Count one original request."""
        slot = self._advance(now) if int(now) != self.epoch else self.epoch % self.slots
        self.requests[slot] += 1

    def withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and counted as denied) when it is spent."""
        slot = self._advance(now) if int(now) != self.epoch else self.epoch % self.slots
        allowed = self.ratio * sum(self.requests) + self.floor * self.slots
        if sum(self.retries) + 1 > allowed:
            self.denied += 1
            return False
        self.retries[slot] += 1
        return True
