"""The balancer, the ejector and the retry budget, driven by a hand-moved clock."""

from __future__ import annotations

import random
from collections import Counter

from sidecarkit.agents.proxy import balancing, budgets
from sidecarkit.agents.proxy import settings as proxy_settings

A, B, C = ("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)


def _balancer(kind: str = "p2c-peak-ewma", **outlier: float) -> balancing.Balancer:
    b = balancing.Balancer(kind, proxy_settings.Outlier(**outlier), rng=random.Random(1))  # type: ignore[arg-type]
    b.update([A, B, C])
    return b


def test_peak_ewma_sends_less_to_an_endpoint_that_turned_slow() -> None:
    b = _balancer()
    now = 100.0
    picks: Counter[tuple[str, int]] = Counter()
    for _ in range(3000):
        e = b.pick(now)
        assert e is not None
        picks[e.address] += 1
        e.observe(0.200 if e.address == A else 0.002, now)
        now += 0.001
    assert picks[A] < 0.1 * picks[B]


def test_round_robin_takes_turns_and_least_request_avoids_the_busy_one() -> None:
    b = _balancer("round-robin")
    assert Counter(b.pick(0.0).address for _ in range(30)) == {A: 10, B: 10, C: 10}  # type: ignore[union-attr]
    lr = _balancer("least-request")
    lr.endpoints[0].pending = 50
    assert all(lr.pick(0.0).address != A for _ in range(100))  # type: ignore[union-attr]


def test_consecutive_failures_eject_for_a_growing_time_and_the_endpoint_returns() -> None:
    b = _balancer("round-robin", consecutive_failures=3, base_ejection=10.0, max_ejected_percent=50)
    a = b.endpoints[0]
    for _ in range(3):
        b.failed(a, 0.0)
    assert b.ejected(0.0) == 1
    assert all(b.pick(5.0) is not a for _ in range(20))
    assert any(b.pick(10.5) is a for _ in range(20))
    for _ in range(3):
        b.failed(a, 11.0)
    assert a.ejected_until == 31.0  # the second ejection lasts twice as long
    b.succeeded(a, 40.0)
    assert a.failures == 0


def test_no_more_than_the_allowed_share_is_ejected_and_all_ejected_means_use_all() -> None:
    b = _balancer("round-robin", consecutive_failures=1, max_ejected_percent=34)
    for e in b.endpoints:
        b.failed(e, 0.0)
    assert b.ejected(0.0) == 1
    single = balancing.Balancer("round-robin", proxy_settings.Outlier(consecutive_failures=1))
    single.update([A])
    single.failed(single.endpoints[0], 0.0)
    assert single.pick(1.0) is single.endpoints[0]  # panic: better than refusing everything


def test_an_update_keeps_the_state_of_endpoints_that_stay() -> None:
    b = _balancer()
    b.endpoints[1].pending = 7
    gone = b.update([B, ("10.0.0.4", 80)])
    assert [e.address for e in gone] == [A, C]
    assert b.endpoints[0].pending == 7


def test_the_retry_budget_allows_the_ratio_plus_the_floor_and_refills_with_time() -> None:
    budget = budgets.RetryBudget(ratio=0.2, floor=1.0, window=10.0)
    for _ in range(100):
        budget.deposit(5.0)
    allowed = sum(budget.withdraw(5.0) for _ in range(100))
    assert allowed == 30  # 0.2 x 100 + 1/s x 10 s
    assert budget.denied == 70
    assert budget.withdraw(30.0)  # the window moved on


def test_weighted_endpoints_get_traffic_in_proportion_under_every_balancer() -> None:
    weights = {A: 1.0, B: 2.0, C: 5.0}
    rr = _balancer("round-robin")
    rr.update([A, B, C], weights)
    assert Counter(rr.pick(0.0).address for _ in range(80)) == {A: 10, B: 20, C: 50}  # type: ignore[union-attr]
    for kind in ("least-request", "p2c-peak-ewma"):
        b = _balancer(kind)
        b.update([A, B, C], weights)
        picks: Counter[tuple[str, int]] = Counter()
        for _ in range(4000):  # a request in flight on each pick, released every 8: some load
            e = b.pick(1.0)
            assert e is not None
            picks[e.address] += 1
            e.pending += 1
            if sum(picks.values()) % 8 == 0:
                for endpoint in b.endpoints:
                    endpoint.pending = 0
        assert picks[A] < picks[B] < picks[C], (kind, picks)
    b.update([A, B, C])  # weights gone: back to equal shares
    assert not b.bounds
