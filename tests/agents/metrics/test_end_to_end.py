"""Acceptance: a real Prometheus 2.42 scrapes the agent in front of two targets exposing the
same series and a Go program's target, and holds every one of their samples, exactly."""

from __future__ import annotations

import math
import urllib.parse
from pathlib import Path

import pytest

from sidecarkit.agents.metrics import promtext
from tests.agents.metrics.test_agent import IDENTITY, _get, _wait, agent, prometheus
from tests.agents.metrics.test_targets import apps

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "promtext"
#: The metrics page of a Prometheus server: a Go program's runtime and process metrics
#: (counters named x_total beside gauges named x), histograms, summaries.
GO_PROGRAM = CORPUS / "prometheus-textparse" / "testdata" / "alltypes.237mfs.prom.txt"

OVERLAPPING = (
    b"# HELP http_requests_total Requests.\n"
    b"# TYPE http_requests_total counter\n"
    b'http_requests_total{code="200",path="/"} %d\n'
    b'http_requests_total{code="500",path="/"} 1\n'
    b"# TYPE request_seconds histogram\n"
    b'request_seconds_bucket{le="0.1"} %d\n'
    b'request_seconds_bucket{le="+Inf"} 9\n'
    b"request_seconds_sum 2.5\n"
    b"request_seconds_count 9\n"
)

Key = tuple[str, frozenset[tuple[str, str]]]


def _value(v: float) -> float | str:
    return "NaN" if math.isnan(v) else v


@pytest.mark.skipif(not GO_PROGRAM.exists(), reason="../shared/corpus is not there")
def test_a_real_prometheus_holds_every_sample_of_overlapping_and_go_targets(
    tmp_path: Path,
) -> None:
    bodies = [OVERLAPPING % (3, 4), OVERLAPPING % (5, 6), GO_PROGRAM.read_bytes()]
    with apps(*bodies) as urls:
        flags = [arg for url in urls for arg in ("--target", url)]
        with (
            agent(*flags, "--interval", "500ms", tmp=tmp_path) as (port, _),
            prometheus(port, tmp_path) as base,
        ):
            # What Prometheus must hold: every sample of every target, with the target's
            # instance (renamed exported_instance by Prometheus's honor_labels: false), the
            # pod's identity, and Prometheus's own job and instance.
            expected: dict[Key, float | str] = {}
            for url, body in zip(urls, bodies, strict=True):
                for family in promtext.parse(body):
                    for s in family.samples:
                        labels = frozenset(
                            {
                                *s.labels,
                                *IDENTITY,
                                ("exported_instance", url.split("/")[2]),
                                ("job", "sidecar"),
                                ("instance", f"127.0.0.1:{port}"),
                            }
                        )
                        expected[(s.name, labels)] = _value(s.value)
            match = urllib.parse.quote('{job="sidecar",exported_instance!="",target=""}')

            def held() -> dict[Key, float | str]:
                text = _get(f"{base}/federate?match[]={match}")[2]
                return {
                    (s.name, frozenset(s.labels)): _value(s.value)
                    for f in promtext.parse(text)
                    for s in f.samples
                }

            assert _wait(lambda: len(held()) >= len(expected), timeout=90)
            got = held()
    assert len(expected) > 1800
    missing = sorted(k[0] for k in expected.keys() - got.keys())
    extra = sorted(k[0] for k in got.keys() - expected.keys())
    assert not missing, missing[:10]
    assert not extra, extra[:10]
    differing = [k[0] for k in expected if expected[k] != got[k]]
    assert not differing, differing[:10]
