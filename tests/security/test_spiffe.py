"""SPIFFE IDs are parsed strictly: one identity has one spelling."""

from __future__ import annotations

import pytest

from sidecarkit.security import spiffe


def test_a_workload_id_parses_into_its_parts() -> None:
    who = spiffe.parse("spiffe://cluster.local/ns/shop/sa/web")
    assert who == spiffe.Identity("cluster.local", "shop", "web")
    assert who.uri == "spiffe://cluster.local/ns/shop/sa/web"


@pytest.mark.parametrize(
    "uri",
    [
        "http://cluster.local/ns/shop/sa/web",
        "spiffe://Cluster.Local/ns/shop/sa/web",
        "spiffe://cluster.local/ns/shop/sa/web/extra",
        "spiffe://cluster.local/ns/shop/sa/",
        "spiffe://cluster.local/ns/../sa/web",
        "spiffe://cluster.local:8443/ns/shop/sa/web",
        "spiffe://user@cluster.local/ns/shop/sa/web",
        "spiffe://cluster.local/ns/shop/sa/web?x=1",
        "spiffe://cluster.local/ns/sh%6fp/sa/web",
        "spiffe://cluster.local",
        "spiffe:///ns/shop/sa/web",
    ],
)
def test_other_spellings_are_refused_with_the_shape_to_write(uri: str) -> None:
    with pytest.raises(ValueError, match=r"SPIFFE|trust domain|namespace"):
        spiffe.parse(uri)


def test_only_service_account_users_prove_a_workload_identity() -> None:
    assert spiffe.from_service_account_user(
        "system:serviceaccount:shop:web", "cluster.local"
    ) == spiffe.Identity("cluster.local", "shop", "web")
    assert spiffe.from_service_account_user("system:node:n1", "cluster.local") is None
    assert spiffe.from_service_account_user("alice", "cluster.local") is None
    assert spiffe.from_service_account_user("system:serviceaccount:a:b:c", "td") is None
