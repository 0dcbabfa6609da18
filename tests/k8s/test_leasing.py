"""When a Lease is free to take: no holder, or a holder that stopped renewing."""

from __future__ import annotations

import datetime

import pytest

from sidecarkit.k8s import leasing

NOW = datetime.datetime(2026, 12, 4, 10, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("spec", "free"),
    [
        ({}, True),
        ({"holderIdentity": ""}, True),
        (
            {
                "holderIdentity": "a",
                "renewTime": "2026-12-04T09:59:50.000000Z",
                "leaseDurationSeconds": 15,
            },
            False,
        ),
        (
            {
                "holderIdentity": "a",
                "renewTime": "2026-12-04T09:59:40.000000Z",
                "leaseDurationSeconds": 15,
            },
            True,
        ),
        (
            {
                "holderIdentity": "a",
                "acquireTime": "2026-12-04T09:59:55Z",
                "leaseDurationSeconds": 15,
            },
            False,
        ),
        ({"holderIdentity": "a", "leaseDurationSeconds": 15}, True),
        (
            {
                "holderIdentity": "a",
                "renewTime": NOW - datetime.timedelta(seconds=5),
                "leaseDurationSeconds": 3,
            },
            True,
        ),
    ],
    ids=["empty", "released", "renewed", "lapsed", "acquired-only", "no-times", "datetime-lapsed"],
)
def test_a_lease_is_free_without_a_holder_or_once_its_duration_lapses(
    spec: dict[str, object], free: bool
) -> None:
    assert leasing.expired(spec, NOW) is free
