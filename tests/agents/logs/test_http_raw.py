"""The HTTP sinks' bulk path for groups that travel as bytes (``Group.raw``, no events).

A raw group must reach Elasticsearch and Loki exactly as its events would: same documents, same
ids, same timestamps, same escaping, whatever the bytes hold. Each test sends the same lines once
as events (the ``raw`` parser's output) and once as bytes, to a local receiver implementing the
documented API, and compares what was stored.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecarkit.agents.logs import parsing, records, sinks
from sidecarkit.agents.logs.sinks import _lines, elasticsearch
from tests.support.receivers.elasticsearch import ElasticsearchReceiver
from tests.support.receivers.loki import LokiReceiver

LABELS = {"pod": "web-1", "namespace": "shop"}
APP = "/var/log/app/app.log"
KEY = "64769:1234:9f86d081"

TRICKY = (
    b"plain line\n"
    b'{"json":"with \\"quotes\\" and \\\\ backslashes","n":1}\n'
    b"tab\there and a bell \x07 and escape \x1b[31mred\x1b[0m\n"
    b"windows line\r\n"
    b"a lone \r inside\n"
    b"\n"
    b"del \x7f char\n"
    b"h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xe2\x80\xa8 sep\n"
    b"not utf-8: \xff\xfe end\n"
    b"ends with a backslash \\\n"
    b'","looks like a separator","\n'
)


def events_of(raw: bytes, first: int, now: int) -> list[records.Event]:
    """What the ``raw`` parser makes of ``raw`` (as the shipper feeds it)."""
    lines = raw.decode("utf-8", "surrogateescape").split("\n")
    lines.pop()
    events = parsing.compile(parsing.ParserSpec())().feed(lines, first, 0.0)
    return [(line, message, fields, now + n) for n, (line, message, fields, _) in enumerate(events)]


def twins(raw: bytes, *, first: int = 40, now: int | None = None) -> tuple[records.Batch, ...]:
    """The same lines as one batch of events and one batch of bytes alone."""
    now = time.time_ns() if now is None else now
    as_events = records.Group(APP, KEY, events_of(raw, first, now), now)
    as_bytes = records.Group(APP, KEY, [], now, raw, first=first)
    count = raw.count(b"\n")
    return (
        records.Batch([as_events], dict(LABELS), count),
        records.Batch([as_bytes], dict(LABELS), count),
    )


async def send(sink: records.Sink, batch: records.Batch) -> records.Outcome:
    try:
        return await sink.send(batch)
    finally:
        await sink.close()


def es_store(batch: records.Batch, **options: Any) -> dict[str, dict[str, Any]]:
    with ElasticsearchReceiver() as es:
        sink = sinks.create(sinks.Spec("elasticsearch", es.url, options))
        assert asyncio.run(send(sink, batch)) == records.Outcome()
        return {
            f"{index}/{doc_id}": doc
            for index in es.indices
            for doc_id, doc in es.docs(index).items()
        }


def test_elasticsearch_stores_a_group_of_bytes_as_it_stores_its_events() -> None:
    events, raw = twins(TRICKY)
    stored = es_store(raw)
    assert stored == es_store(events)
    assert len(stored) == TRICKY.count(b"\n")
    ids = [elasticsearch.document_id(KEY, line) for line in range(40, 40 + len(stored))]
    assert sorted(stored) == sorted(f"logs-sidecarkit/{i}" for i in ids)
    messages = {doc["message"] for doc in stored.values()}
    assert "windows line" in messages
    assert "not utf-8: \ufffd\ufffd end" in messages
    assert "tab\there and a bell \x07 and escape \x1b[31mred\x1b[0m" in messages


def test_a_group_with_its_events_and_its_bytes_is_encoded_from_its_events() -> None:
    """The shipper keeps a raw read's bytes on a group of events when another sink wants events;
    such a group has no ``first``: its events name the lines."""
    now = time.time_ns()
    events, _ = twins(TRICKY, now=now)
    both = events.groups[0]
    both.raw = TRICKY
    assert both.first == 0
    assert es_store(events) == es_store(twins(TRICKY, now=now)[0])
    assert loki_store(events) == loki_store(twins(TRICKY, now=now)[0])
    ids = [elasticsearch.document_id(KEY, line) for line in range(40, 40 + TRICKY.count(b"\n"))]
    assert sorted(es_store(events)) == sorted(f"logs-sidecarkit/{i}" for i in ids)


def test_elasticsearch_bytes_whose_times_cross_a_second_and_a_day_go_to_each_days_index() -> None:
    day = 1_755_734_400 * 10**9  # 2025-08-21T00:00:00Z
    raw = b"".join(b"line %d\n" % n for n in range(2500))
    events, as_bytes = twins(raw, first=998, now=day - 1200)
    stored = es_store(as_bytes, index="app-%Y.%m.%d")
    assert stored == es_store(events, index="app-%Y.%m.%d")
    before = [k for k in stored if k.startswith("app-2025.08.20/")]
    assert len(before) == 1200
    assert stored[f"app-2025.08.21/{elasticsearch.document_id(KEY, 998 + 1200)}"] == {
        "@timestamp": "2025-08-21T00:00:00.000000000Z",
        "message": "line 1200",
        "log": {"file": {"path": APP}},
        **LABELS,
    }


def test_elasticsearch_retries_only_the_failed_lines_of_bytes_with_their_ids_and_times() -> None:
    now = time.time_ns()
    _, batch = twins(b"zero\none\ntwo\nthree\n", first=7, now=now)
    ids = [elasticsearch.document_id(KEY, n) for n in range(7, 11)]
    with ElasticsearchReceiver() as es:
        es.fail_items({ids[1], ids[3]}, 429, "es_rejected_execution_exception")
        sink = sinks.create(sinks.Spec("elasticsearch", es.url, {}))

        async def scenario() -> tuple[records.Outcome, records.Outcome]:
            first = await sink.send(batch)
            assert first.retry is not None
            second = await sink.send(first.retry)
            await sink.close()
            return first, second

        first, second = asyncio.run(scenario())
        assert first.retry is not None
        assert first.retry.events == 2
        assert [e for g in first.retry.groups for e in g.events] == [
            (8, "one", None, now + 1),
            (10, "three", None, now + 3),
        ]
        assert second == records.Outcome()
        docs = es.docs("logs-sidecarkit")
        assert sorted(docs) == sorted(ids)
        assert docs[ids[3]]["message"] == "three"


def loki_store(batch: records.Batch) -> dict[Any, Any]:
    with LokiReceiver() as loki:
        sink = sinks.create(sinks.Spec("loki", loki.url, {}))
        assert asyncio.run(send(sink, batch)) == records.Outcome()
        return {key: list(stream) for key, stream in loki.streams.items()}


def test_loki_stores_a_group_of_bytes_as_it_stores_its_events() -> None:
    events, raw = twins(TRICKY)
    stored = loki_store(raw)
    assert stored == loki_store(events)
    ((_, entries),) = stored.items()
    assert len(entries) == TRICKY.count(b"\n")


def test_loki_mixes_groups_of_bytes_and_of_events_in_one_stream_per_file() -> None:
    now = time.time_ns()
    _, first = twins(b"a\nb\n", now=now)
    events, _ = twins(b"c\n", first=2, now=now + 2)
    audit = records.Group("/var/log/audit.log", "k2", [], now, b"x\n", first=0)
    empty = records.Group(APP, KEY, [], now + 9, b"", first=3)
    groups = [*first.groups, *events.groups, audit, empty]
    stored = loki_store(records.Batch(groups, dict(LABELS), 4))
    lines = {dict(key)["filename"]: [e[1] for e in v] for key, v in stored.items()}
    assert lines == {APP: ["a", "b", "c"], "/var/log/audit.log": ["x"]}


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12), st.integers(0, 2500), st.sampled_from([0, 9, 19]))
def test_numbers_spell_every_number_of_a_range(start: int, count: int, width: int) -> None:
    if width and start + count > 10**width:
        start = 10**width - count
    highs, lows = _lines.numbers(start, count, width=width, before=b"<", after=b">")
    wanted = [b"<%0*d>" % (width, n) for n in range(start, start + count)]
    assert [h + low for h, low in zip(highs, lows, strict=True)] == wanted


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30))
def test_json_strings_escape_each_line_as_orjson_does(lines: list[bytes]) -> None:
    raw = b"".join(line + b"\n" for line in lines)
    texts = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n").split("\n")[:-1]
    wanted = [orjson.dumps(records.clean(t))[1:-1] for t in texts]
    assert _lines.json_strings(raw) == wanted
