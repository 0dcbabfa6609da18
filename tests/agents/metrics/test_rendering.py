"""Rendering: what we parse, render and parse again is the same, in both formats."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecarkit.agents.metrics import exposition, openmetrics, promtext, rendering

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "promtext"


def _normalised(families: list[exposition.Family]) -> list[Any]:
    """Samples as comparable values: NaN equal to NaN, timestamps to the millisecond."""
    out = []
    for f in families:
        for s in f.samples:
            value = "NaN" if math.isnan(s.value) else s.value
            ts = None if s.timestamp is None else round(s.timestamp * 1000)
            out.append((s.name, tuple(sorted(s.labels)), value, ts))
    return out


SAMPLES = [
    "prometheus-common/expfmt-testdata-text.prom",
    "prometheus-textparse/testdata/alltypes.237mfs.prom.txt",
    "prometheus-textparse/promtool-metrics-test.prom",
    *(f"prometheus-common/text_parse_test/valid/{i:02d}.prom" for i in range(18)),
]


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus is not there")
@pytest.mark.parametrize("path", SAMPLES)
def test_text_round_trip(path: str) -> None:
    families = promtext.parse((CORPUS / path).read_bytes())
    again = promtext.parse(rendering.render_text(families))
    assert _normalised(again) == _normalised(families)
    # The text format a Prometheus server reads has no gauge histograms: they go out as
    # histograms, which is the one change a round trip may make.
    expected = [
        (f.name, "histogram" if f.type == "gaugehistogram" else f.type, f.help) for f in families
    ]
    assert [(f.name, f.type, f.help) for f in again] == expected


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus is not there")
def test_openmetrics_round_trip_over_the_suite() -> None:
    checked = 0
    for case in sorted((CORPUS / "openmetrics-tests" / "parsers").iterdir()):
        data = (case / "metrics").read_bytes()
        try:
            families = openmetrics.parse(data)
        except exposition.ParseError:
            continue
        rendered = rendering.render_openmetrics(families)
        again = openmetrics.parse(rendered)
        assert _normalised(again) == _normalised(families), case.name
        assert [(f.name, f.type, f.unit, f.help) for f in again] == [
            (f.name, f.type, f.unit, f.help) for f in families
        ], case.name
        checked += 1
    assert checked >= 40


label_values = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "le_x", "route"]), label_values),
        max_size=4,
        unique_by=lambda p: p[0],
    ),
    st.one_of(st.floats(allow_nan=True), st.integers(-(10**12), 10**12).map(float)),
)
def test_any_label_value_and_number_survive_both_formats(
    labels: list[tuple[str, str]], value: float
) -> None:
    family = exposition.Family(
        "m", "gauge", "help with \\ and \n", None, [exposition.Sample("m", tuple(labels), value)]
    )
    for parse, render in (
        (promtext.parse, rendering.render_text),
        (openmetrics.parse, rendering.render_openmetrics),
    ):
        (again,) = parse(render([family]))
        assert _normalised([again]) == _normalised([family])
        assert again.help == family.help


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, promtext.CONTENT_TYPE),
        ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", promtext.CONTENT_TYPE),
        (
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
            openmetrics.CONTENT_TYPE,
        ),
        (
            "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            openmetrics.CONTENT_TYPE,
        ),
        ("application/openmetrics-text;version=2.0.0,text/plain", promtext.CONTENT_TYPE),
        ("text/plain;q=1,application/openmetrics-text;q=0.2", promtext.CONTENT_TYPE),
    ],
)
def test_negotiation_prefers_openmetrics_when_accepted(accept: str | None, expected: str) -> None:
    assert rendering.negotiate(accept) == expected
