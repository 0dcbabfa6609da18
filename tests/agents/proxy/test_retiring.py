"""A service a settings reload removed lets its policy stages go once its last connection has
closed (``draining.sweep``): their rate-limit buckets, key-set waiters and per-tick work, while
what they counted stays exported. Before, every removed listener's guard stayed for the life of
the process, with up to a key table of buckets per limit."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from sidecarkit.agents.proxy import draining, guarding, policyfiles, tcpguarding, telemetry


def test_a_retired_service_takes_its_policy_stages_with_it_and_its_counts_stay_exported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = policyfiles.from_mapping(
        {"rate_limits": [{"name": "per-client", "key": "client_ip", "rate": "10/s"}]},
        source="policy.yaml",
    )
    kept = guarding.Guard(policy, authenticator=None, direction="inbound", upstream="app")
    gone = guarding.Guard(policy, authenticator=None, direction="inbound", upstream="old")
    gate = tcpguarding.Gate(policy, port=15007, upstream="db")
    gone.counts[("http_ratelimit_limited_total", "limit", "per-client")] = 3  # not scraped yet
    gate.counts[("tcp_ratelimit_limited_total", "limit", "per-client")] = 2
    gone.throttle.skipped["rate-limited"] = 40  # log lines held back this second
    busy = SimpleNamespace(
        guard=kept, gate=None, connections={object()}, balancer=SimpleNamespace(endpoints=[]),
        tick=lambda now: None,
    )  # fmt: skip
    idle = SimpleNamespace(
        guard=gone, gate=gate, connections=set(), balancer=SimpleNamespace(endpoints=[]),
        tick=lambda now: None,
    )  # fmt: skip
    agent: Any = SimpleNamespace(
        retired=[busy, idle], guards=[kept, gone], gates=[gate], scopes={kept: 15006, gone: 15008},
        sources=SimpleNamespace(listeners=[kept.keys_arrived, gone.keys_arrived]),
        metrics=telemetry.Registry(),
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="sidecarkit.agent.proxy")
    draining.sweep(agent, 0.0)
    assert agent.retired == [busy]  # a connection still open: kept, guard and all
    assert agent.guards == [kept]
    assert agent.gates == []
    assert agent.scopes == {kept: 15006}
    assert agent.sources.listeners == [kept.keys_arrived]
    exported = agent.metrics.render().decode()
    assert (
        'http_ratelimit_limited_total{direction="inbound",upstream="old",limit="per-client"} 3'
        in exported
    )
    assert "tcp_ratelimit_limited_total{" in exported
