"""Reading: lines out of chunks in linear time, and limits checked while the body comes in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from sidecarkit.agents.metrics import openmetrics, promtext, reading

Parser = Callable[
    [reading.Limits | None], promtext.PrometheusTextParser | openmetrics.OpenMetricsParser
]
PARSERS: list[Parser] = [promtext.PrometheusTextParser, openmetrics.OpenMetricsParser]


def _feed_one_long_line(parser: Parser, size: int, chunk: int) -> float:
    """CPU seconds to feed ``size`` bytes without a newline in ``chunk``-byte pieces."""
    piece = b"x" * chunk
    p = parser(None)
    started = time.process_time()
    for _ in range(size // chunk):
        p.feed(piece)
    return time.process_time() - started


@pytest.mark.parametrize("parser", PARSERS)
def test_a_body_without_newlines_streamed_slowly_costs_linear_time(parser: Parser) -> None:
    # Quadratic buffering made 4x the bytes cost 16x the time (4/8/16 MB: 0.20/0.64/2.86 s);
    # linear costs 4x. The bound is generous for a loaded machine, and the best of three runs
    # is taken for each size.
    small = min(_feed_one_long_line(parser, 2 << 20, 4096) for _ in range(3))
    large = min(_feed_one_long_line(parser, 8 << 20, 4096) for _ in range(3))
    assert large < max(small, 0.005) * 9, (small, large)


def _series(count: int, *, labels: int = 1, value_length: int = 3) -> Iterator[bytes]:
    """``count`` distinct series in 64 KiB chunks, as a target streams them."""
    yield b"# TYPE s gauge\n"
    extra = "".join(f',l{i}="{"v" * value_length}"' for i in range(labels - 1))
    out: list[bytes] = []
    size = 0
    for i in range(count):
        line = f's{{n="{i}"{extra}}} 1\n'.encode()
        out.append(line)
        size += len(line)
        if size >= 1 << 16:
            yield b"".join(out)
            out, size = [], 0
    yield b"".join(out)


def _read_until_refused(
    parser: Parser, limits: reading.Limits, chunks: Iterator[bytes]
) -> tuple[int, reading.LimitExceeded]:
    """Bytes fed when the parser refused the body, and why; fails if it never does."""
    p = parser(limits)
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        try:
            p.feed(chunk)
        except reading.LimitExceeded as exc:
            return fed, exc
    pytest.fail("the limit was never applied")


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(
    ("limits", "limit", "series", "shape"),
    [
        (reading.Limits(body_bytes=1 << 20), "body_bytes", 1_000_000, {}),
        (reading.Limits(samples=5000), "samples", 1_000_000, {}),
        (reading.Limits(memory_bytes=8 << 20), "memory_bytes", 1_000_000, {}),
        (reading.Limits(labels=8), "labels", 100_000, {"labels": 9}),
        (
            reading.Limits(label_value_length=100),
            "label_value_length",
            100_000,
            {"labels": 2, "value_length": 101},
        ),
    ],
)
def test_limits_stop_the_read_within_a_chunk_of_passing_them(
    parser: Parser, limits: reading.Limits, limit: str, series: int, shape: dict[str, int]
) -> None:
    fed, refused = _read_until_refused(parser, limits, _series(series, **shape))
    assert refused.limit == limit
    assert "limit" in str(refused) or "budget" in str(refused)
    # Refused long before the body's end: within two chunks of the limit.
    if limit == "body_bytes":
        assert fed <= limits.body_bytes + (2 << 16)
    elif limit == "memory_bytes":
        assert reading.estimate(lines=fed // 20, size=fed) <= limits.memory_bytes * 4
        assert fed < 8 << 20
    else:
        assert fed <= 4 << 16


@pytest.mark.parametrize("parser", PARSERS)
def test_a_body_within_its_limits_parses_as_without_them(parser: Parser) -> None:
    limits = reading.Limits(
        body_bytes=10 << 20, samples=20_000, labels=3, label_value_length=10, memory_bytes=64 << 20
    )
    chunks = list(_series(20_000, labels=3))
    if parser is openmetrics.OpenMetricsParser:
        chunks.append(b"# EOF\n")
    p = parser(limits)
    for chunk in chunks:
        p.feed(chunk)
    assert sum(len(f.samples) for f in p.close()) == 20_000
