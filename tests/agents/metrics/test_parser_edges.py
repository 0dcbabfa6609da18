"""Inputs both parsers once took, or failed on with the wrong error: each is a ParseError now."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from sidecarkit.agents.metrics import exposition, openmetrics, promtext
from sidecarkit.agents.metrics.exposition import ParseError

PARSERS = [pytest.param(promtext.parse, id="text"), pytest.param(openmetrics.parse, id="om")]


def _document(parse: Any, line: str) -> bytes:
    tail = "# EOF\n" if parse is openmetrics.parse else ""
    return f"# TYPE x gauge\n{line}\n{tail}".encode()


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "line",
    [
        pytest.param('x{a=,b="v1""v2"} 1', id="unquoted value then two quoted strings"),
        pytest.param('x{a=,b="v"} 1', id="a label without a value"),
    ],
)
def test_malformed_label_sets_are_refused_with_a_place(parse: Any, line: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(_document(parse, line))
    assert caught.value.line == 2


def test_a_dotted_name_needs_quotes_even_after_a_quoted_use() -> None:
    with pytest.raises(ParseError):
        promtext.parse(b'{"my.metric"} 1\nmy.metric 2\n')
    with pytest.raises(ParseError):
        promtext.parse(b"my.metric 2\n")


def test_a_timestamp_too_long_for_a_float_is_an_invalid_timestamp() -> None:
    with pytest.raises(ParseError, match="timestamp"):
        promtext.parse(b"x 1 " + b"9" * 400 + b"\n")


def _read(parser: Any, body: bytes) -> list[Any]:
    parser.feed(body)
    return [(s.name, s.labels, s.value) for f in parser.close() for s in f.samples]


@pytest.mark.parametrize(
    ("make", "tail"),
    [
        pytest.param(promtext.PrometheusTextParser, b"", id="text"),
        pytest.param(openmetrics.OpenMetricsParser, b"# EOF\n", id="om"),
    ],
)
def test_label_sets_kept_across_scrapes_read_alike_and_refuse_alike(make: Any, tail: bytes) -> None:
    # The agent keeps each target's label sets from one scrape to the next: a series seen
    # before reads to the very same labels, and a line a fresh parser refuses is refused too.
    first = b'# TYPE h histogram\nh_bucket{a="1",le="0.5"} 1\nh_bucket{a="1",le="+Inf"} 2\n'
    first += b'h_count{a="1"} 2\nh_sum{a="1"} 1\n# TYPE g gauge\ng{a="1",le="x"} 3\n' + tail
    kept: dict[str, Any] = {}
    before = _read(make(label_sets=kept), first)
    assert kept
    again = _read(make(label_sets=kept), first)
    assert again == before == _read(make(), first)
    assert all(a[1] is b[1] for a, b in zip(again, before, strict=True))
    # le="x" passed on a gauge; it is no bucket bound, and a cached label set must not say so.
    wrong = b'# TYPE h histogram\nh_bucket{a="1",le="x"} 1\n' + tail
    with pytest.raises(ParseError) as fresh:
        _read(make(), wrong)
    with pytest.raises(ParseError) as cached:
        _read(make(label_sets=kept), wrong)
    assert str(cached.value) == str(fresh.value)


def test_bucket_bounds_sorted_first_read_as_the_reference_parser_reads_them() -> None:
    # The Python client sorts labels, so le comes first and the rest of a bucket run repeats.
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    text = "# TYPE h histogram\n"
    for route in ("/a", "/b"):
        for bound in ("0.005", "0.1", "+Inf"):
            text += f'h_bucket{{le="{bound}",route="{route}"}} 1\n'
        text += f'h_sum{{route="{route}"}} 1\nh_count{{route="{route}"}} 1\n'
    text += '# TYPE s summary\ns{quantile="0.5",x="1"} 2\ns{quantile="0.9",x="1"} 3\n'
    text += 's_sum{x="1"} 5\ns_count{x="1"} 2\n'
    ours = sorted(
        (s.name, tuple(sorted(s.labels)), s.value)
        for f in promtext.parse(text.encode())
        for s in f.samples
    )
    reference = sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    )
    assert ours == reference
    # A bound that is no number after a run of good ones is still refused, as a fresh parser
    # refuses it.
    bad = text.replace('le="0.1",route="/b"', 'le="fast",route="/b"')
    with pytest.raises(ParseError, match="le"):
        promtext.parse(bad.encode())


def test_openmetrics_bounds_sorted_first_read_as_the_reference_parser_reads_them() -> None:
    from prometheus_client.openmetrics.parser import (  # noqa: PLC0415
        text_string_to_metric_families,
    )

    text = "# TYPE h histogram\n"
    for route in ("/a", "/b"):
        for bound in ("0.005", "0.1", "+Inf"):
            text += f'h_bucket{{le="{bound}",route="{route}"}} 1\n'
        text += f'h_count{{route="{route}"}} 1\nh_sum{{route="{route}"}} 1\n'
    text += '# TYPE s summary\ns{quantile="0.5",x="1"} 2\ns{quantile="0.9",x="1"} 3\n'
    text += 's_count{x="1"} 2\ns_sum{x="1"} 5\n# EOF\n'
    ours = sorted(
        (s.name, tuple(sorted(s.labels)), s.value)
        for f in openmetrics.parse(text.encode())
        for s in f.samples
    )
    reference = sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for s in f.samples
    )
    assert ours == reference
    for bad in ('le="fast",route="/b"', 'le="NaN",route="/b"'):
        with pytest.raises(ParseError):
            openmetrics.parse(text.replace('le="0.1",route="/b"', bad).encode())
    with pytest.raises(ParseError):
        openmetrics.parse(text.replace('quantile="0.9"', 'quantile="1.5"').encode())


def test_label_sets_with_the_trailing_comma_read_as_without_it() -> None:
    # The Java client ends every label set with a comma; a set seen after one with the same
    # head reads the same whichever way either ends.
    body = b'# TYPE x gauge\nx{a="1",} 1\nx{a="2",} 2\nx{a="3"} 3\nx{a="4",} 4\nx{b="5",a="6",} 5\n'
    parsed = promtext.parse(body)
    assert [s.labels for s in parsed[0].samples] == [
        (("a", "1"),),
        (("a", "2"),),
        (("a", "3"),),
        (("a", "4"),),
        (("b", "5"), ("a", "6")),
    ]
    blank = promtext.parse(b'x{a="1",} 1\nx{a="2" ,} 2\n')  # blanks between tokens are fine
    assert [s.labels for s in blank[0].samples] == [(("a", "1"),), (("a", "2"),)]
    for bad in (b'x{a=",} 2\n', b'x{a="2",,} 2\n', b'x{a="2"x,} 2\n'):
        with pytest.raises(ParseError) as caught:
            promtext.parse(b'x{a="1",} 1\n' + bad)
        assert caught.value.line == 2


def test_the_quick_paths_fill_every_field_of_a_sample() -> None:
    # The quick paths store a Sample's fields one by one instead of calling its __init__: a
    # field added to Sample must be added there too (promtext.feed, openmetrics.feed).
    fields = [f.name for f in dataclasses.fields(exposition.Sample)]
    assert fields == ["name", "labels", "value", "timestamp", "exemplar"]
    text = promtext.parse(b'# TYPE x gauge\nx{a="1"} 2\n')[0].samples[0]
    assert text == exposition.Sample("x", (("a", "1"),), 2.0)
    om = openmetrics.parse(b'# TYPE x gauge\nx{a="1"} 2\n# EOF\n')[0].samples[0]
    assert om == exposition.Sample("x", (("a", "1"),), 2.0)


def test_the_quick_paths_fill_every_field_of_a_family() -> None:
    # Families are made field by field too, wherever a HELP or TYPE opens one on a quick path
    # (promtext.feed for each, openmetrics_full.OpenFamily): a field added to Family must be
    # added there.
    fields = [f.name for f in dataclasses.fields(exposition.Family)]
    assert fields == ["name", "type", "help", "unit", "samples"]
    sample = exposition.Sample("x", (), 1.0)
    text = b"# HELP x Help.\n# TYPE x gauge\n# TYPE y counter\nx 1\n"
    assert promtext.parse(text) == [
        exposition.Family("x", "gauge", "Help.", None, [sample]),
        exposition.Family("y", "counter"),
    ]
    om = b"# HELP x Help.\n# TYPE x gauge\nx 1\n# TYPE y counter\n# HELP y Y.\n# EOF\n"
    assert openmetrics.parse(om) == [
        exposition.Family("x", "gauge", "Help.", None, [sample]),
        exposition.Family("y", "counter", "Y."),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"# TYPE  gauge\n", "line 1: unknown type ''"),
        (b"# HELP # x\n# TYPE # gauge\n", "line 1: invalid metric name '#'"),
        (b"# HELP x y\n# TYPE x.y gauge\n", "line 2: invalid metric name 'x.y'"),
        (b"# HELP x y\n# HELP x z\n", "line 2: second HELP for x"),
        (b"# HELP x y\nx 1\n# TYPE x gauge\n", "line 3: TYPE for x after its samples"),
    ],
)
def test_metadata_the_quick_path_passes_over_gets_the_full_paths_error(
    body: bytes, error: str
) -> None:
    with pytest.raises(ParseError, match="^" + re.escape(error)):
        promtext.parse(body)


@pytest.mark.parametrize("parse", PARSERS)
def test_series_that_share_a_label_pair_share_one_pair_object(parse: Any) -> None:
    # Fewer objects per sample is less work for the garbage collector on every large scrape:
    # once a parser has read many label sets, a pair seen before (namespace and node here,
    # across two families) is the same tuple.
    series = 3 * exposition.PAIRS_AFTER
    lines = ["# TYPE a gauge"]
    lines += [f'a{{namespace="shop",pod="web-{i}",node="n1"}} 1' for i in range(series)]
    lines += ["# TYPE b gauge", 'b{node="n1",namespace="shop"} 1']
    if parse is openmetrics.parse:
        lines.append("# EOF")
    families = parse(("\n".join(lines) + "\n").encode())
    pairs = [pair for family in families for s in family.samples for pair in s.labels]
    shared = [p for p in pairs if p == ("namespace", "shop")]
    assert len(shared) == series + 1
    assert len({id(p) for p in shared}) <= exposition.PAIRS_AFTER + 1
    assert len({id(p) for p in pairs if p == ("node", "n1")}) <= exposition.PAIRS_AFTER + 1
    pods = sorted(int(p[1][4:]) for p in pairs if p[0] == "pod")
    assert pods == list(range(series))


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"# TYPE a gauge\na 1\n# TYPE b gauge\n# TYPE a gauge\n# EOF\n", "line 5: a clashes"),
        (b"# TYPE a_total gauge\n# TYPE a counter\n# EOF\n", "line 3: a_total clashes"),
        (b"# TYPE a counter\n# TYPE a_total gauge\n# EOF\n", "line 3: a_total clashes"),
        (b"# TYPE a_bucket gauge\n# TYPE a histogram\n# EOF\n", "line 3: a_bucket clashes"),
        (b"# TYPE a summary\n# TYPE a_count gauge\n# EOF\n", "line 3: a_count clashes"),
        (b"# TYPE a_info gauge\n# TYPE a info\n# EOF\n", "line 3: a_info clashes"),
    ],
)
def test_an_openmetrics_family_whose_sample_names_another_family_claimed_is_refused(
    body: bytes, error: str
) -> None:
    # A family's claimed names are taken from its quick routes for the usual types (the
    # name, and x_total, x_bucket... made once) and made for the others: both ways name
    # the first clash the same.
    with pytest.raises(ParseError, match="^" + re.escape(error) + " with an earlier family$"):
        openmetrics.parse(body)
