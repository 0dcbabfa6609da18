"""Targets from the pod's prometheus.io/* annotations, read from a Downward API file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecarkit.agents.metrics import discovering
from tests.agents.metrics.test_agent import IDENTITY, _samples, _wait, agent, instance
from tests.agents.metrics.test_targets import serving

#: As the kubelet writes metadata.annotations: key="value", Go-quoted, one per line.
DOWNWARD = (
    'kubectl.kubernetes.io/last-applied-configuration="{\\"kind\\":\\"Pod\\"}"\n'
    'prometheus.io/path="/stats/prometheus"\n'
    'prometheus.io/port="9102"\n'
    'prometheus.io/scrape="true"\n'
)


def test_the_annotations_name_the_target_on_localhost() -> None:
    annotations = discovering.parse_annotations(DOWNWARD, where="annotations")
    assert annotations["kubectl.kubernetes.io/last-applied-configuration"] == '{"kind":"Pod"}'
    (target,) = discovering.targets_from(annotations, where="annotations")
    assert target.url == "http://127.0.0.1:9102/stats/prometheus"


@pytest.mark.parametrize(
    ("annotations", "url"),
    [
        (
            {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
            "http://127.0.0.1:8080/metrics",
        ),
        (
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8443",
                "prometheus.io/scheme": "https",
                "prometheus.io/path": "m",
            },
            "https://127.0.0.1:8443/m",
        ),
        ({"prometheus.io/scrape": "false", "prometheus.io/port": "8080"}, None),
        ({}, None),
    ],
)
def test_scrape_port_path_and_scheme(annotations: dict[str, str], url: str | None) -> None:
    targets = discovering.targets_from(annotations, where="a")
    assert [t.url for t in targets] == ([url] if url else [])


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"prometheus.io/scrape": "true"}, "prometheus.io/port is missing"),
        (
            {"prometheus.io/scrape": "true", "prometheus.io/port": "http"},
            "prometheus.io/port is http",
        ),
        (
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "80",
                "prometheus.io/scheme": "ftp",
            },
            "is not http or https",
        ),
    ],
)
def test_a_wrong_annotation_is_named(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        discovering.targets_from(annotations, where="a")


def test_a_line_that_is_not_key_value_is_named() -> None:
    with pytest.raises(ValueError, match="annotations, line 2"):
        discovering.parse_annotations('a="1"\nbroken\n', where="annotations")


def test_the_agent_scrapes_the_target_its_pod_annotations_name(tmp_path: Path) -> None:
    with serving(b"annotated_app_up 1\n") as url:
        port = url.split(":")[2].split("/")[0]
        annotations = tmp_path / "annotations"
        annotations.write_text(
            f'prometheus.io/scrape="true"\nprometheus.io/port="{port}"\nprometheus.io/path="/metrics"\n'
        )
        with agent("--annotations-file", str(annotations), "--interval", "200ms", tmp=tmp_path) as (
            admin,
            _,
        ):
            key = ("annotated_app_up", frozenset({instance(url), *IDENTITY}))
            assert _wait(lambda: _samples(admin).get(key) == 1)
