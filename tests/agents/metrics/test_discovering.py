"""Targets from the pod's prometheus.io/* annotations, read from a Downward API file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecarkit.agents.metrics import discovering, settings
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


def test_the_annotations_win_over_the_given_target_with_their_scheme() -> None:
    # The injection profile gives the agent a target made at injection time; the
    # annotations it also gives say more (the scheme) and may change later.
    given = (settings.Target("http://127.0.0.1:8080/metrics"),)
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8443",
        "prometheus.io/scheme": "https",
    }
    (target,) = discovering.targets_from(annotations, where="a", fallback=given)
    assert target.url == "https://127.0.0.1:8443/metrics"
    # Our own annotation wins over its Prometheus twin, as at injection.
    ours = {**annotations, "sidecarkit.io/metrics.port": "9000"}
    (target,) = discovering.targets_from(ours, where="a", fallback=given)
    assert target.url == "https://127.0.0.1:9000/metrics"
    assert (
        discovering.targets_from({"prometheus.io/scrape": "true"}, where="a", fallback=given)
        == given
    )
    assert discovering.targets_from({}, where="a", fallback=given) == given
    assert (
        discovering.targets_from({"prometheus.io/scrape": "false"}, where="a", fallback=given) == ()
    )


def _annotate(path: Path, port: str, scrape: str = "true") -> None:
    # The kubelet swaps a new file in, as here: never a half-written one.
    new = path.with_suffix(".new")
    new.write_text(f'prometheus.io/scrape="{scrape}"\nprometheus.io/port="{port}"\n')
    new.replace(path)


def test_the_agent_follows_its_pod_annotations_when_they_change(tmp_path: Path) -> None:
    with (
        serving(b"given_app_up 1\n") as given,
        serving(b"first_app_up 1\n") as first,
        serving(b"second_app_up 1\n") as second,
    ):
        annotations = tmp_path / "annotations"
        _annotate(annotations, first.split(":")[2].split("/")[0])
        args = ("--target", given, "--annotations-file", str(annotations), "--interval", "200ms")
        with agent(*args, tmp=tmp_path) as (admin, _):
            first_up = ("first_app_up", frozenset({instance(first), *IDENTITY}))
            second_up = ("second_app_up", frozenset({instance(second), *IDENTITY}))
            # The annotations name the target, not the one given at injection.
            assert _wait(lambda: _samples(admin).get(first_up) == 1)
            assert not any(name == "given_app_up" for name, _ in _samples(admin))
            _annotate(annotations, second.split(":")[2].split("/")[0])
            assert _wait(lambda: _samples(admin).get(second_up) == 1, timeout=30)
            assert first_up not in _samples(admin)
            _annotate(annotations, "1", scrape="false")
            assert _wait(lambda: second_up not in _samples(admin), timeout=30)


def test_a_wrong_annotation_beside_a_given_target_is_logged_not_fatal(tmp_path: Path) -> None:
    # The injector leaves prometheus.io/port: http out with a warning; the agent must not
    # refuse to start over it.
    with serving(b"given_app_up 1\n") as given:
        annotations = tmp_path / "annotations"
        annotations.write_text('prometheus.io/scrape="true"\nprometheus.io/port="http"\n')
        args = ("--target", given, "--annotations-file", str(annotations), "--interval", "200ms")
        with agent(*args, tmp=tmp_path) as (admin, _):
            key = ("given_app_up", frozenset({instance(given), *IDENTITY}))
            assert _wait(lambda: _samples(admin).get(key) == 1)
        log = next(tmp_path.glob("agent-*.log")).read_text()
        assert "prometheus.io/port is http" in log
