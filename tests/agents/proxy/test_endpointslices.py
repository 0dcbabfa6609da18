"""Which EndpointSlice entries take traffic: kube-proxy's rules, on the API's JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.proxy import endpointslices
from sidecarkit.agents.proxy import settings as proxy_settings
from tests.agents.proxy import support


def slice_(*endpoints: dict[str, Any], port: int = 8080, kind: str = "IPv4") -> dict[str, Any]:
    return {"addressType": kind, "endpoints": list(endpoints),
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}  # fmt: skip


def ep(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


def test_ready_or_unknown_endpoints_take_traffic_and_not_ready_ones_do_not() -> None:
    slices = [slice_(ep("10.0.0.1", ready=True), ep("10.0.0.2"), ep("10.0.0.3", ready=False))]
    assert endpointslices.select(slices, "http") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]


def test_terminating_serving_endpoints_are_used_only_when_none_is_ready() -> None:
    slices = [
        slice_(ep("10.0.0.1", ready=False, serving=True, terminating=True)),
        slice_(ep("10.0.0.2", ready=False, serving=False, terminating=True)),
    ]
    assert endpointslices.select(slices, "http") == [("10.0.0.1", 8080)]
    slices.append(slice_(ep("10.0.0.3", ready=True), port=9090))
    assert endpointslices.select(slices, "http") == [("10.0.0.3", 9090)]


def test_an_endpoint_in_two_slices_counts_once_and_fqdn_slices_are_ignored() -> None:
    slices = [slice_(ep("10.0.0.1")), slice_(ep("10.0.0.1")), slice_(ep("db.example"), kind="FQDN")]
    assert endpointslices.select(slices, "http") == [("10.0.0.1", 8080)]


def test_zone_hints_narrow_the_set_only_when_every_endpoint_has_them() -> None:
    a = {**ep("10.0.0.1"), "hints": {"forZones": [{"name": "a"}]}}
    b = {**ep("10.0.0.2"), "hints": {"forZones": [{"name": "b"}]}}
    assert endpointslices.select([slice_(a, b)], "http", zone="a") == [("10.0.0.1", 8080)]
    assert len(endpointslices.select([slice_(a, b)], "http", zone="c")) == 2
    assert len(endpointslices.select([slice_(a, b, ep("10.0.0.3"))], "http", zone="a")) == 3
    assert len(endpointslices.select([slice_(a, b)], "http")) == 2


def test_a_service_port_number_is_found_by_its_name_and_a_missing_one_is_named() -> None:
    service = {"spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 81}]}}
    assert endpointslices.port_name(service, "81", where="x") == "grpc"
    assert endpointslices.port_name(service, "http", where="x") == "http"
    with pytest.raises(ValueError, match=r"x: the Service has no port 82 \(its ports: http=80"):
        endpointslices.port_name(service, "82", where="x")


def test_a_kubernetes_upstream_is_read_from_yaml_and_a_bad_one_says_how_to_write_it() -> None:
    data = {
        "zone": "a",
        "upstreams": [
            {"name": "pay", "listen": 15001, "kubernetes": "payments.shop.svc.cluster.local:8080"}
        ],
    }
    settings = proxy_settings.from_mapping(data, source="f.yaml")
    assert settings.upstreams[0].kubernetes == ("payments", "shop", "8080")
    assert proxy_settings.to_mapping(settings)["upstreams"][0]["kubernetes"] == "payments.shop:8080"
    assert settings.zone == "a"
    bad = {"upstreams": [{"name": "pay", "listen": 15001, "kubernetes": "payments:8080"}]}
    with pytest.raises(ValueError, match=r"f.yaml: upstreams\[0\].kubernetes: 'payments:8080' is"
                       " not a Service; write SERVICE.NAMESPACE:PORT"):  # fmt: skip
        proxy_settings.from_mapping(bad, source="f.yaml")


def test_without_a_kubeconfig_the_proxy_says_how_to_give_one_with_what_it_has(
    tmp_path: Path,
) -> None:
    """The proxy has no ``--kubeconfig`` option: its message names only KUBECONFIG and the
    pod's service account, which are how an agent gets a cluster."""
    path = tmp_path / "proxy.yaml"
    port = support.free_port()
    path.write_text(json.dumps({"upstreams": [
        {"name": "svc", "listen": f"127.0.0.1:{port}", "kubernetes": "ledger.shop:8080"},
    ]}))  # fmt: skip
    env = dict(os.environ, KUBECONFIG=str(tmp_path / "absent"), HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config", str(path),
         "--admin", f"127.0.0.1:{support.free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 30
        while "no kubeconfig" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the proxy exited before trying the cluster"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "no kubeconfig at " in line
    assert "set KUBECONFIG" in line
    assert "--kubeconfig" not in line
