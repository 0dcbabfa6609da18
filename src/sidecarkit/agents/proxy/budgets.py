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
    """Callers add one to ``total`` per original request (an attribute, not a call, on the hot
    path); ``tick`` once a second moves the window; ``withdraw`` asks for one retry."""

    __slots__ = ("denied", "epoch", "floor", "marks", "ratio", "retries", "slots", "total")

    def __init__(self, *, ratio: float, floor: float, window: float) -> None:
        self.ratio = ratio
        self.floor = floor
        self.slots = max(1, math.ceil(window))
        self.total = 0
        """Original requests since the start."""
        self.marks = [0] * self.slots
        """``total`` at the start of each of the last ``slots`` seconds, oldest first."""
        self.retries = [0] * self.slots
        """Retries in each of those seconds, oldest first."""
        self.epoch = 0
        self.denied = 0

    def tick(self, now: float) -> None:
        """Move the window to the second ``now`` is in."""
        second = int(now)
        steps = min(second - self.epoch, self.slots)
        if steps <= 0:
            return
        self.epoch = second
        self.marks = self.marks[steps:] + [self.total] * steps
        self.retries = self.retries[steps:] + [0] * steps

    def deposit(self, now: float) -> None:
        """Count one original request (for callers off the hot path)."""
        self.total += 1

    def withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and counted as denied) when it is spent."""
        self.tick(now)
        requests = self.total - self.marks[0]
        allowed = self.ratio * requests + self.floor * self.slots
        if sum(self.retries) + 1 > allowed:
            self.denied += 1
            return False
        self.retries[-1] += 1
        return True
