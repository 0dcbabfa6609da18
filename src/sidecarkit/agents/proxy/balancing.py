"""Choosing an endpoint for a request, and taking bad endpoints out of the choice.

Three balancers over one endpoint set:

* ``p2c-peak-ewma`` (default, Linkerd's and Finagle's): pick two endpoints at random, send to
  the one with the lower *load* = peak-EWMA latency x (requests in flight + 1). The estimate
  jumps up at once to a slow response and decays back over ``DECAY`` seconds, so a slowing
  endpoint loses traffic fast and wins it back slowly. Two random choices instead of the best
  of all keeps many proxies from herding onto the same endpoint.
* ``least-request``: two random choices by requests in flight alone (Envoy's default form).
* ``round-robin``: in turn.

Endpoints may carry weights (DNS SRV records' RFC 2782 weights); when the live ones differ,
round robin becomes nginx's smooth weighted round robin, and the two random choices are drawn
in proportion to weight and compared by load / weight (as Envoy's weighted least-request does),
so a heavier endpoint is both offered more often and allowed more load.

Outlier ejection (Envoy's consecutive-errors detector): ``consecutive_failures`` 5xx answers or
connect failures in a row take an endpoint out for ``base_ejection`` x the number of times it
was ejected (capped at ``max_ejection``); at most ``max_ejected_percent`` of the endpoints are
out at once, though one always may be. When every endpoint is out or none is known the balancer
uses all it has (Envoy's panic mode): failing requests beat refusing all of them.

The module does no I/O and reads no clock: callers pass ``now`` (the event loop's time), so tests
drive time by hand.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["DECAY", "DEFAULT_RTT", "Balancer", "Endpoint"]

DECAY: Final = 10.0
"""Seconds over which a latency observation's weight falls to 1/e (Linkerd's default)."""
DEFAULT_RTT: Final = 0.030
"""Latency assumed for an endpoint never measured (Linkerd's default 30 ms)."""


class Endpoint:
    """One address of a service, with what the balancer and the ejector know of it."""

    __slots__ = (
        "address",
        "cost",
        "current",
        "ejected_until",
        "ejections",
        "failures",
        "label",
        "last_ejection",
        "pending",
        "pool",
        "stamp",
        "weight",
    )  # fmt: skip

    def __init__(self, address: tuple[str, int], weight: float = 1.0) -> None:
        self.address = address
        host, port = address
        self.label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.pending = 0
        """Requests sent and not yet answered."""
        self.cost = DEFAULT_RTT
        self.stamp = math.inf
        """When ``cost`` was last updated; infinity until the first pick, so that the default
        does not decay over the time before the endpoint was known."""
        self.failures = 0
        """Failures in a row."""
        self.ejections = 0
        self.ejected_until = 0.0
        self.last_ejection = 0.0
        self.pool: Any = None
        """The connection pool the I/O layer keeps for this endpoint."""
        self.weight = weight
        """Its share relative to the others' (1 unless discovery gives weights)."""
        self.current = 0.0
        """Smooth weighted round robin's running score."""

    def observe(self, rtt: float, now: float) -> None:
        """Fold one response latency (seconds) into the peak EWMA."""
        if rtt > self.cost:
            self.cost = rtt
        else:
            weight = math.exp(-(now - self.stamp) / DECAY) if now > self.stamp else 1.0
            self.cost = self.cost * weight + rtt * (1.0 - weight)
        self.stamp = now

    def load(self, now: float) -> float:
        """Cost x (in flight + 1), the estimate first decayed toward 0 for the time since it was
        last touched (as tower's PeakEwma does): an endpoint left alone after a slow spell, or
        never measured, becomes worth a try again instead of starving."""
        if now > self.stamp:
            self.cost *= math.exp(-(now - self.stamp) / DECAY)
            self.stamp = now
        return self.cost * (self.pending + 1)


class Balancer:
    """The endpoints of one service and the policy that picks among them."""

    def __init__(
        self, kind: str, outlier: proxy_settings.Outlier, *, rng: random.Random | None = None
    ) -> None:
        if kind not in proxy_settings.BALANCERS:
            raise ValueError(f"unknown balancer {kind!r}")
        self.kind = kind
        self.outlier = outlier
        self.rng = rng or random.Random()
        self.endpoints: list[Endpoint] = []
        self.live: list[Endpoint] = []
        """Endpoints not ejected; all of them when all are (panic)."""
        self.next_return = math.inf
        self.cursor = 0
        self.ejected_total = 0
        self.bounds: list[float] = []
        """Running sums of the live endpoints' weights; empty when they weigh the same."""

    def update(
        self,
        addresses: Iterable[tuple[str, int]],
        weights: Mapping[tuple[str, int], float] | None = None,
    ) -> list[Endpoint]:
        """Replace the endpoint set, keeping the state of addresses that stay; returns the
        endpoints that left (their pools are the caller's to close)."""
        known = {e.address: e for e in self.endpoints}
        fresh = []
        for address in dict.fromkeys(addresses):
            kept = known.get(address)
            if kept is not None:
                del known[address]
            endpoint = kept if kept is not None else Endpoint(address)
            endpoint.weight = weights.get(address, 1.0) if weights else 1.0
            fresh.append(endpoint)
        self.endpoints = fresh
        self._relive(self.next_return if math.isfinite(self.next_return) else 0.0)
        return list(known.values())

    def _relive(self, now: float) -> None:
        live = []
        soonest = math.inf
        for endpoint in self.endpoints:
            if endpoint.ejected_until > now:
                soonest = min(soonest, endpoint.ejected_until)
            else:
                live.append(endpoint)
        self.live = live or list(self.endpoints)
        self.next_return = soonest
        self.bounds = []
        if any(e.weight != self.live[0].weight for e in self.live):
            self.bounds = list(itertools.accumulate(e.weight for e in self.live))

    def pick(self, now: float, *, avoid: Endpoint | None = None) -> Endpoint | None:
        """The endpoint for the next request (``avoid`` the one a retry comes from), or None
        when the service has no endpoints at all."""
        if now >= self.next_return:
            self._relive(now)
        live = self.live
        count = len(live)
        if count == 0:
            return None
        if count == 1:
            return live[0]
        if self.bounds:
            return self._weighted(now, avoid)
        if self.kind == "round-robin":
            self.cursor = (self.cursor + 1) % count
            chosen = live[self.cursor]
            if chosen is avoid:
                self.cursor = (self.cursor + 1) % count
                chosen = live[self.cursor]
            return chosen
        rand = self.rng.random
        first = live[int(rand() * count)]
        second = live[int(rand() * (count - 1))]
        if second is first:
            second = live[count - 1]
        if first is avoid:
            return second
        if second is avoid:
            return first
        if self.kind == "least-request":
            return first if first.pending <= second.pending else second
        return first if first.load(now) <= second.load(now) else second

    def _weighted(self, now: float, avoid: Endpoint | None) -> Endpoint:
        live = self.live
        if self.kind == "round-robin":  # nginx's smooth weighted round robin
            total = self.bounds[-1]
            best = live[0]
            for endpoint in live:
                endpoint.current += endpoint.weight
                if endpoint.current > best.current:
                    best = endpoint
            best.current -= total
            if best is avoid:
                return self._weighted(now, None)
            return best
        bounds, total, rand = self.bounds, self.bounds[-1], self.rng.random
        last = len(live) - 1
        first = live[min(bisect.bisect_right(bounds, rand() * total), last)]
        second = first
        for _ in range(3):  # a heavy endpoint is often drawn twice: draw again, a few times
            second = live[min(bisect.bisect_right(bounds, rand() * total), last)]
            if second is not first:
                break
        if second is first:
            second = live[last] if first is not live[last] else live[0]
        if first is avoid:
            return second
        if second is avoid:
            return first
        if self.kind == "least-request":
            a, b = (first.pending + 1) / first.weight, (second.pending + 1) / second.weight
        else:
            a, b = first.load(now) / first.weight, second.load(now) / second.weight
        return first if a <= b else second

    def succeeded(self, endpoint: Endpoint, now: float) -> None:
        endpoint.failures = 0
        if endpoint.ejections and now - endpoint.last_ejection > self.outlier.max_ejection:
            endpoint.ejections -= 1  # healthy for a long while: the next ejection is shorter
            endpoint.last_ejection = now

    def failed(self, endpoint: Endpoint, now: float) -> bool:
        """Count a 5xx or connect failure; True when it ejected the endpoint."""
        endpoint.failures += 1
        if endpoint.failures < self.outlier.consecutive_failures or endpoint.ejected_until > now:
            return False
        out = sum(1 for e in self.endpoints if e.ejected_until > now)
        allowed = max(1, len(self.endpoints) * self.outlier.max_ejected_percent // 100)
        if out >= allowed or self.outlier.max_ejected_percent == 0:
            return False
        endpoint.ejections += 1
        endpoint.failures = 0
        endpoint.last_ejection = now
        span = min(self.outlier.base_ejection * endpoint.ejections, self.outlier.max_ejection)
        endpoint.ejected_until = now + span
        self.ejected_total += 1
        self._relive(now)
        return True

    def ejected(self, now: float) -> int:
        return sum(1 for e in self.endpoints if e.ejected_until > now)
