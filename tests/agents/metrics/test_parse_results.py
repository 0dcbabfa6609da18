"""Both parsers give the recorded result for every input of ``../shared/corpus/promtext``.

``parse-results.json`` holds, per corpus file and parser, a digest of what the parser gave:
the ``repr`` of its families (every name, type, help, unit, sample, label, value, timestamp
and exemplar, in order) or the ParseError's message. The parsers' quick paths are tuned for
speed again and again; this pins that each tuning reads every input exactly as before, valid
or not, fed whole, fed in small pieces, and with a label-set cache kept from a previous parse
(as the agent keeps one per target). Limit errors are pinned by tests/agents/metrics/
test_reading.py.

``SIDECARKIT_REFRESH_GOLDEN=1 .venv/bin/pytest tests/agents/metrics/test_parse_results.py``
rewrites the file from the current parsers: only when a change of behaviour is intended; say
which in the CHANGELOG and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.metrics import openmetrics, promtext
from sidecarkit.agents.metrics.exposition import ParseError

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "promtext"
GOLDEN = Path(__file__).parent / "parse-results.json"
REFRESH = os.environ.get("SIDECARKIT_REFRESH_GOLDEN") == "1"
pytestmark = pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus is not there")

PARSERS: dict[str, Callable[..., Any]] = {
    "text": promtext.PrometheusTextParser,
    "openmetrics": openmetrics.OpenMetricsParser,
}
#: Inputs up to this size are fed in pieces too (it is the slow way: a call per piece).
PIECES_UP_TO = 64 * 1024
PIECE = 13


def _digest(make: Callable[..., Any], chunks: list[bytes], **kwargs: Any) -> str:
    """What the parser made of ``chunks``: a digest of its families, or its error."""
    parser = make(**kwargs)
    try:
        for chunk in chunks:
            parser.feed(chunk)
        families = parser.close()
    except ParseError as exc:
        return f"error: {exc}"
    return hashlib.sha256(repr(families).encode()).hexdigest()[:24]


def _results(path: Path) -> dict[str, str]:
    """Per parser, the result fed whole; the other ways of feeding must agree with it."""
    data = path.read_bytes()
    results = {}
    for kind, make in PARSERS.items():
        whole = _digest(make, [data])
        if len(data) <= PIECES_UP_TO:
            pieces = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]
            assert _digest(make, pieces) == whole, (path, kind, "fed in pieces")
        kept: dict[str, Any] = {}
        _digest(make, [data], label_sets=kept)
        assert _digest(make, [data], label_sets=kept) == whole, (path, kind, "cache kept")
        results[kind] = whole
    return results


def _inputs() -> list[Path]:
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.suffix not in (".json", ".md") and p.name != "LICENSE"
    )


def test_every_corpus_input_parses_as_recorded() -> None:
    inputs = _inputs()
    assert len(inputs) > 300
    results = {str(p.relative_to(CORPUS)): _results(p) for p in inputs}
    if REFRESH:
        GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    differ = sorted(
        (name, kind, recorded.get(name, {}).get(kind), got)
        for name, result in results.items()
        for kind, got in result.items()
        if recorded.get(name, {}).get(kind) != got
    )
    assert differ == []
    assert sorted(recorded) == sorted(results), "inputs gone from the corpus: refresh the file"
