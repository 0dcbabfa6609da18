"""Inputs both parsers once took, or failed on with the wrong error: each is a ParseError now."""

from __future__ import annotations

from typing import Any

import pytest

from sidecarkit.agents.metrics import openmetrics, promtext
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
