"""Parser conformance over ``../shared/corpus/promtext``: every table, every case.

The numbers asserted here are the ones tabled in ``docs/conformance.md``; a change in either
fails this test until both agree again.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.metrics import openmetrics, promtext
from sidecarkit.agents.metrics.exposition import ParseError

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "promtext"
pytestmark = pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus is not there")

#: Cases where we knowingly disagree with the table, and why (see docs/conformance.md).
KNOWN = {
    "prometheus-textparse/TestPromNullByteHandling/00.prom": (
        "no final newline: Prometheus's scrape parser accepts it, prometheus/common's expfmt "
        "(whose tables we follow) rejects it"
    ),
}


def _parses(parse: Any, data: bytes) -> bool:
    try:
        parse(data)
    except ParseError:
        return False
    return True


def _openmetrics_suite() -> list[tuple[str, bytes, bool]]:
    cases = []
    for case in sorted((CORPUS / "openmetrics-tests" / "parsers").iterdir()):
        test = json.loads((case / "test.json").read_text())
        cases.append((case.name, (case / test["file"]).read_bytes(), test["shouldParse"]))
    return cases


def test_the_openmetrics_suite_all_211_cases() -> None:
    cases = _openmetrics_suite()
    assert len(cases) == 211
    wrong = [name for name, data, ok in cases if _parses(openmetrics.parse, data) != ok]
    assert wrong == []


@pytest.mark.parametrize(
    ("table", "key", "parser", "total"),
    [
        ("prometheus-common/text_parse_test/valid", "expect", promtext.parse, 18),
        ("prometheus-common/text_parse_test/error", "expect_utf8", promtext.parse, 48),
        ("prometheus-textparse/TestPromParseErrors", "expect", promtext.parse, 18),
        ("prometheus-textparse/TestPromNullByteHandling", "expect", promtext.parse, 9),
        ("prometheus-textparse/TestOpenMetricsParseErrors", "expect", openmetrics.parse, 70),
        ("prometheus-textparse/TestOMNullByteHandling", "expect", openmetrics.parse, 12),
    ],
)
def test_upstream_parse_tables(table: str, key: str, parser: Any, total: int) -> None:
    cases = json.loads((CORPUS / table / "cases.json").read_text())["cases"]
    assert len(cases) == total
    wrong = []
    for case in cases:
        data = (CORPUS / case["file"]).read_bytes()
        if _parses(parser, data) != (case[key] == "parse-ok") and case["file"] not in KNOWN:
            wrong.append(case["file"])
    assert wrong == []


@pytest.mark.parametrize(
    ("path", "families", "samples"),
    [
        ("prometheus-common/expfmt-testdata-text.prom", 37, 248),
        ("prometheus-textparse/testdata/alltypes.237mfs.prom.txt", 237, 1857),
        ("prometheus-textparse/testdata/alltypes.237mfs.nometa.prom.txt", 291, 1857),
        ("prometheus-textparse/promtool-metrics-test.prom", 4, 27),
        ("prometheus-textparse/testdata/1histogram.om.txt", 1, 42),
    ],
)
def test_large_real_samples_parse(path: str, families: int, samples: int) -> None:
    data = (CORPUS / path).read_bytes()
    parsed = (openmetrics if ".om." in path else promtext).parse(data)
    assert len(parsed) == families
    assert sum(len(f.samples) for f in parsed) == samples


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (
            "prometheus-textparse/testdata/alltypes.5mfs.om.txt",
            "a histogram _sum with negative buckets, which the OpenMetrics suite rejects",
        ),
        (
            "prometheus-textparse/omparse-TestOpenMetricsParse-input.om.txt",
            "metadata of other families between a family's samples",
        ),
        (
            "prometheus-textparse/omparse-TestOpenMetricsParse_UTF8-input.om.txt",
            "quoted UTF-8 names, which OpenMetrics 1.0 does not have",
        ),
        (
            "prometheus-textparse/promparse-TestPromParse-input.prom",
            "a label set without commas, which expfmt rejects",
        ),
        (
            "prometheus-textparse/promparse-TestUTF8PromParse-input.prom",
            "no final newline, which expfmt rejects",
        ),
    ],
)
def test_inputs_only_lenient_parsers_take_are_refused_with_a_reason(path: str, why: str) -> None:
    data = (CORPUS / path).read_bytes()
    parse = openmetrics.parse if ".om." in path else promtext.parse
    with pytest.raises(ParseError, match=r"^line \d+"):
        parse(data)
    assert why


def _parse_all(paths: list[str]) -> int:
    done = 0
    for path in paths:
        data = Path(path).read_bytes()
        for parse in (promtext.parse, openmetrics.parse):
            with contextlib.suppress(ParseError):
                parse(data)
        done += 1
    return done


def test_the_fuzz_corpus_neither_crashes_nor_hangs() -> None:
    paths = sorted(str(p) for p in (CORPUS / "prometheus-common" / "fuzz-corpus").iterdir())
    assert paths
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply_async(_parse_all, (paths,))
        assert result.get(timeout=60) == len(paths)


def test_feeding_in_pieces_gives_the_same_families() -> None:
    data = (CORPUS / "prometheus-textparse/testdata/alltypes.237mfs.prom.txt").read_bytes()
    whole = promtext.parse(data)
    for size in (1, 7, 4096):
        parser = promtext.PrometheusTextParser()
        for i in range(0, len(data), size):
            parser.feed(data[i : i + size])
        assert repr(parser.close()) == repr(whole)  # repr: NaN never equals NaN
    om = (CORPUS / "prometheus-textparse/testdata/1histogram.om.txt").read_bytes()
    om_parser = openmetrics.OpenMetricsParser()
    for i in range(0, len(om), 5):
        om_parser.feed(om[i : i + 5])
    assert repr(om_parser.close()) == repr(openmetrics.parse(om))
