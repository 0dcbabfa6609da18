"""Rendering: what we parse, render and parse again is the same, in both formats."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client import exposition as client_exposition
from prometheus_client.openmetrics import exposition as client_openmetrics
from prometheus_client.openmetrics import parser as reference

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


def _reference_reads(body: bytes) -> list[Any]:
    """``body`` read by prometheus_client's OpenMetrics parser, the Python reference."""
    return list(reference.text_string_to_metric_families(body.decode()))  # type: ignore[no-untyped-call]


#: Inputs whose rendering the reference parser misreads on its own: it reads a negative
#: timestamp with a fraction ("-0.002") as positive, so two correctly ordered ones seem to go
#: backwards.
_REFERENCE_MISREADS = {"openmetrics-tests/parsers/bad_grouping_or_ordering_4/metrics"}


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus is not there")
def test_every_corpus_input_renders_as_openmetrics_the_reference_parser_reads() -> None:
    rendered = 0
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        if path.suffix in (".md", ".json"):
            continue
        name = str(path.relative_to(CORPUS))
        data = path.read_bytes()
        families = None
        # An OpenMetrics file is read as OpenMetrics; anything else as text.
        for parse in (openmetrics.parse, promtext.parse):
            try:
                families = parse(data)
                break
            except exposition.ParseError:
                continue
        if families is None or name in _REFERENCE_MISREADS:
            continue
        body = rendering.render_openmetrics(families)
        try:
            again = _reference_reads(body)
        except Exception as exc:
            pytest.fail(f"{name}: the rendered OpenMetrics is invalid: {exc!r}")
        assert sum(len(f.samples) for f in again) >= 1 or not any(f.samples for f in families)
        rendered += 1
    assert rendered >= 170


def test_a_go_counter_total_beside_a_gauge_of_the_base_name_renders_valid_openmetrics() -> None:
    text = (
        b"# HELP go_memstats_alloc_bytes Bytes in use.\n"
        b"# TYPE go_memstats_alloc_bytes gauge\n"
        b"go_memstats_alloc_bytes 8.35e+07\n"
        b"# HELP go_memstats_alloc_bytes_total Bytes allocated.\n"
        b"# TYPE go_memstats_alloc_bytes_total counter\n"
        b"go_memstats_alloc_bytes_total 5.9e+12\n"
    )
    body = rendering.render_openmetrics(promtext.parse(text))
    got = {s.name: s.value for f in _reference_reads(body) for s in f.samples}
    assert got == {"go_memstats_alloc_bytes": 8.35e07, "go_memstats_alloc_bytes_total": 5.9e12}
    ours = {(f.name, f.type) for f in openmetrics.parse(body)}
    assert ("go_memstats_alloc_bytes", "gauge") in ours


def test_text_only_shapes_render_valid_openmetrics_with_every_sample() -> None:
    text = (
        b"# TYPE h histogram\n"
        b'h_bucket{a="1",le="1"} 1.5\n'  # a fraction: not a count in OpenMetrics
        b'h_bucket{a="2",le="+Inf"} 2\n'
        b'h_bucket{a="1",le="+Inf"} 2\n'  # interleaved groups
        b'h_sum{a="1"} 3\nh_count{a="1"} 2\nh_sum{a="2"} 1\nh_count{a="2"} 2\n'
        b"# TYPE c counter\nc_total -1\n"  # negative
        b"# TYPE s summary\n"
        b's{quantile="0.5"} 1\ns_sum 2\ns{k="x",quantile="0.5"} 1\ns_count 3\n'
    )
    families = promtext.parse(text)
    body = rendering.render_openmetrics(families)
    got = sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in _reference_reads(body)
        for s in f.samples
    )
    want = sorted((s.name, tuple(sorted(s.labels)), s.value) for f in families for s in f.samples)
    assert got == want
    kinds = {f.name: f.type for f in _reference_reads(body)}
    assert kinds["s"] == "summary"  # regrouped, still a summary
    assert kinds["c_total"] == "unknown"


def test_real_python_client_output_renders_valid_openmetrics() -> None:
    registry = CollectorRegistry()
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    Counter("jobs", "Jobs.", ["kind"], registry=registry).labels("a").inc(3)
    Gauge("queue_bytes", "Queue.", unit="bytes", registry=registry).set(5)
    Histogram("latency_seconds", "Latency.", registry=registry).observe(0.3)
    Summary("size", "Size.", registry=registry).observe(7)
    Info("build", "Build.", registry=registry).info({"version": "1.2"})
    Enum("state", "State.", states=["up", "down"], registry=registry).state("up")
    for body, parse in (
        (client_exposition.generate_latest(registry), promtext.parse),
        (client_openmetrics.generate_latest(registry), openmetrics.parse),  # type: ignore[no-untyped-call]
    ):
        families = parse(body)
        again = _reference_reads(rendering.render_openmetrics(families))
        assert sum(len(f.samples) for f in again) == sum(len(f.samples) for f in families)


JVM_PROGRAM = Path(__file__).resolve().parent / "jvm"


@pytest.fixture(scope="module")
def jvm_expositions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What the Java client (simpleclient 0.16 with its hotspot exports) writes, in text and
    OpenMetrics: a small program built with Maven's dependencies and run here."""
    tools = [shutil.which(t) for t in ("mvn", "javac", "java")]
    if None in tools:
        if os.environ.get("CI"):
            pytest.fail("mvn, javac and java are needed for the JVM client's output")
        pytest.skip("mvn, javac or java is not installed")
    mvn, javac, java = (str(t) for t in tools)
    out = tmp_path_factory.mktemp("jvm")
    classpath = out / "classpath.txt"
    subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(JVM_PROGRAM / "pom.xml"),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={classpath}",
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    jars = classpath.read_text().strip()
    source = JVM_PROGRAM / "src" / "main" / "java" / "exposition" / "Main.java"
    subprocess.run(
        [javac, "-d", str(out / "classes"), "-cp", jars, str(source)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    run = [java, "-cp", f"{out / 'classes'}:{jars}", "exposition.Main"]
    return {
        "text": subprocess.run(run, check=True, timeout=60, capture_output=True).stdout,
        "om": subprocess.run([*run, "om"], check=True, timeout=60, capture_output=True).stdout,
    }


def test_real_jvm_client_output_renders_valid_openmetrics(
    jvm_expositions: dict[str, bytes],
) -> None:
    for kind, parse in (("text", promtext.parse), ("om", openmetrics.parse)):
        families = parse(jvm_expositions[kind])
        assert any(f.name.startswith("jvm_") for f in families)
        again = _reference_reads(rendering.render_openmetrics(families))
        assert sum(len(f.samples) for f in again) == sum(len(f.samples) for f in families)
