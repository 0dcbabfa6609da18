"""Token buckets, one per key (a client address, a header value, a user, a peer).

Envoy's local rate limit, per key: a bucket holds at most ``burst`` tokens and starts full; it
gains ``rate`` tokens a second; a request takes one, and finds it empty: refused. Over any
interval of length T a key is therefore admitted at most ``burst + rate x T`` requests, and
under a steady overload exactly that many.

A bucket is two floats, refilled lazily when its key is seen (no timer per key). Keys come
from clients, so the table is bounded: ``sweep`` drops buckets that have filled up again,
which is exact (a full bucket and no bucket behave the same), and when the table is still full
a new key shares one overflow bucket rather than growing memory. No clock is read here:
callers pass ``now``.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["Buckets"]

MAX_KEYS: Final = 100_000
"""Keys tracked at once per limit: ~100 bytes each, 10 MB at worst."""


class Buckets:
    __slots__ = ("burst", "limited", "max_keys", "rate", "table")

    def __init__(self, *, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.table: dict[bytes, list[float]] = {}
        """key -> [tokens, time of the last refill]"""
        self.limited = 0

    def take(self, key: bytes, now: float) -> float:
        """Take a token for ``key``: 0.0 when admitted, else the seconds until one is due."""
        bucket = self.table.get(key)
        if bucket is None:
            if len(self.table) >= self.max_keys:
                key = b"\0overflow"
                bucket = self.table.get(key)
            if bucket is None:
                bucket = self.table[key] = [self.burst, now]
        tokens = min(bucket[0] + (now - bucket[1]) * self.rate, self.burst)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        self.limited += 1
        return (1.0 - tokens) / self.rate

    def remaining(self, key: bytes) -> int:
        """Whole tokens left for ``key`` as of its last request."""
        bucket = self.table.get(key)
        return int(bucket[0]) if bucket is not None else int(self.burst)

    def reset_after(self, key: bytes) -> int:
        """Whole seconds until the bucket of ``key`` is full again (``RateLimit-Reset``)."""
        bucket = self.table.get(key)
        tokens = bucket[0] if bucket is not None else self.burst
        return math.ceil((self.burst - tokens) / self.rate)

    def sweep(self, now: float) -> None:
        """Forget the buckets that are full again (called once a second)."""
        rate, burst = self.rate, self.burst
        full = [k for k, (t, at) in self.table.items() if t + (now - at) * rate >= burst]
        for key in full:
            del self.table[key]
