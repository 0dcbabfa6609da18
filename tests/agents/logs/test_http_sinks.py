"""The HTTP sinks against local receivers that implement each documented API, over real sockets.

Each receiver in ``tests.support.receivers`` is a local server implementing the API as its
documentation describes it (Loki push, Elasticsearch ``_bulk``, OTLP/HTTP logs, NDJSON), not the
product itself, and validates strictly; the last tests here prove that it refuses malformed
bodies, so a sink passing against it is not passing against a pushover.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import ssl
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import uvloop

from sidecarkit.agents.logs import records, sinks
from sidecarkit.agents.logs.sinks import _http, elasticsearch, loki, otlp
from sidecarkit.agents.logs.sinks import http as http_sink
from tests.support.receivers.base import Receiver
from tests.support.receivers.elasticsearch import ElasticsearchReceiver, filtered
from tests.support.receivers.loki import LokiReceiver
from tests.support.receivers.ndjson import NdjsonReceiver
from tests.support.receivers.otlp import LogRecord, OtlpReceiver
from tests.support.webhooks import make_tls

T = TypeVar("T")

NOW = time.time_ns()
OWN_TIME = NOW - 1_000_000
APP = "/var/log/app/app.log"
AUDIT = "/var/log/app/audit.log"
LABELS = {"pod": "web-1", "namespace": "shop", "node": "node-a", "container": "app"}
TRACE = "5B8EFFF798038103D269B633813FC60C"
APP_FIELDS = {"stream": "stderr", "level": "error", "code": 7}
OWN_FIELDS = {"level": "info", "ok": True, "ctx": {"user": "ann"}, "trace_id": TRACE}


def make_batch() -> records.Batch:
    """Two files; non-ASCII text, an undecodable byte (a lone surrogate), fields, own times."""
    app = records.Group(
        APP,
        "64769:1234:9f86d081",
        [
            (0, "GET / 200", None, None),
            (1, "héllo wörld — ✓ 日本語", None, None),
            (2, "bad byte \udcff here", dict(APP_FIELDS), None),
            (4, "own time", dict(OWN_FIELDS), OWN_TIME),
        ],
        NOW,
    )
    audit = records.Group(AUDIT, "64769:99:3e23e816", [(0, "audit one", None, None)], NOW + 1000)
    return records.Batch([app, audit], dict(LABELS), events=5, size=100, seq=1)


# (source, message after cleaning, fields, time) of every event of make_batch, in order.
EXPECTED = [
    (APP, "GET / 200", None, NOW),
    (APP, "héllo wörld — ✓ 日本語", None, NOW + 1),
    (APP, "bad byte \ufffd here", APP_FIELDS, NOW + 2),
    (APP, "own time", OWN_FIELDS, OWN_TIME),
    (AUDIT, "audit one", None, NOW + 1000),
]


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{ns % 10**9:09d}Z"
    )


class Loop:
    """Runs a coroutine to completion on a fresh event loop of one kind."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.factory = factory

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=self.factory) as runner:
            return runner.run(coro)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> Loop:
    """The data path runs on both loops the agent may use."""
    if request.param == "uvloop":
        return Loop(uvloop.new_event_loop)
    return Loop(asyncio.new_event_loop)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def send_all(sink: records.Sink, *batches: records.Batch) -> list[records.Outcome]:
    """Send each batch in turn on one session; close the sink after."""
    try:
        return [await sink.send(batch) for batch in batches]
    finally:
        await sink.close()


def spec(kind: str, endpoint: str, **options: Any) -> sinks.Spec:
    return sinks.Spec(kind, endpoint, options)


# -- Loki -----------------------------------------------------------------------------------


def loki_key(source: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**LABELS, "filename": source}.items()))


def test_loki_stores_every_line_with_its_timestamp_labels_and_metadata(loop: Loop) -> None:
    with LokiReceiver() as loki:
        sink = sinks.create(spec("loki", loki.url, tenant="team-a"))
        (outcome,) = loop.run(send_all(sink, make_batch()))
        assert outcome == records.Outcome()
        assert loki.entries() == {
            loki_key(APP): [
                (NOW, "GET / 200", {}),
                (NOW + 1, "héllo wörld — ✓ 日本語", {}),
                (
                    NOW + 2,
                    "bad byte \ufffd here",
                    {"stream": "stderr", "level": "error", "code": "7"},
                ),
                (
                    OWN_TIME,
                    "own time",
                    {"level": "info", "ok": "true", "ctx": '{"user":"ann"}', "trace_id": TRACE},
                ),
            ],
            loki_key(AUDIT): [(NOW + 1000, "audit one", {})],
        }
        assert loki.tenants == ["team-a"]
        assert loki.last_headers["Content-Type"] == "application/json"


def test_loki_replay_of_the_same_batch_is_deduplicated_by_the_receiver() -> None:
    with LokiReceiver() as loki:
        sink = sinks.create(spec("loki", loki.url))
        outcomes = run(send_all(sink, make_batch(), make_batch()))
        assert outcomes == [records.Outcome(), records.Outcome()]
        assert loki.duplicates == 5
        assert sum(len(entries) for entries in loki.entries().values()) == 5


def test_loki_identical_lines_in_a_group_get_distinct_timestamps_and_are_all_kept() -> None:
    heartbeat = records.Group(APP, "k", [(n, "ping", None, None) for n in range(3)], NOW)
    with LokiReceiver() as loki:
        sink = sinks.create(spec("loki", loki.url))
        run(send_all(sink, records.Batch([heartbeat], {"pod": "p"})))
        (entries,) = loki.entries().values()
        assert [ts for ts, _, _ in entries] == [NOW, NOW + 1, NOW + 2]


def test_loki_gzip_body_is_decoded_by_the_receiver() -> None:
    with LokiReceiver() as loki:
        sink = sinks.create(spec("loki", loki.url, gzip=True))
        run(send_all(sink, make_batch()))
        assert loki.gzipped == 1
        assert loki.last_headers["Content-Encoding"] == "gzip"
        assert [line for _, line, _ in loki.entries()[loki_key(AUDIT)]] == ["audit one"]


def test_loki_label_names_are_mended_and_metadata_can_be_turned_off() -> None:
    batch = records.Batch(
        [records.Group(APP, "k", [(0, "x", {"level": "warn"}, None)], NOW)],
        {"app.kubernetes.io/name": "shop", "9lives": "cat", "empty": ""},
    )
    with LokiReceiver() as loki:
        sink = sinks.create(spec("loki", loki.url, structured_metadata=False))
        run(send_all(sink, batch))
        (key,) = loki.entries()
        assert dict(key) == {"app_kubernetes_io_name": "shop", "_9lives": "cat", "filename": APP}
        assert loki.entries()[key] == [(NOW, "x", {})]


def test_loki_too_old_entries_are_refused_with_lokis_reason_and_the_rest_kept() -> None:
    week_ago = NOW - 8 * 86400 * 10**9
    batch = records.Batch(
        [records.Group(APP, "k", [(0, "old", None, week_ago), (1, "new", None, None)], NOW)],
        dict(LABELS),
    )
    with LokiReceiver() as loki:
        sink = sinks.create(spec("loki", loki.url))
        (outcome,) = run(send_all(sink, batch))
        assert outcome.retry is None
        # Loki names no count for this refusal, so the whole batch is reported refused.
        assert outcome.rejected == 2
        assert outcome.reasons == {"http 400: timestamp too old": 2}
        assert [line for _, line, _ in loki.entries()[loki_key(APP)]] == ["new"]


def test_loki_counts_only_what_its_message_says_was_ignored() -> None:
    body = (
        b"entry with timestamp 2026-08-21 10:00:00 +0000 UTC ignored, reason: 'entry out of "
        b'order\' for stream: {pod="web-1"},\ntotal ignored: 2 out of 5'
    )
    with LokiReceiver() as loki:
        loki.fail_next(1, 400, body=body)
        sink = sinks.create(spec("loki", loki.url))
        (outcome,) = run(send_all(sink, make_batch()))
        assert outcome == records.Outcome(rejected=2, reasons={"http 400: entry out of order": 2})


# -- Elasticsearch --------------------------------------------------------------------------


def es_doc(source: str, message: str, fields: dict[str, Any] | None, ns: int) -> dict[str, Any]:
    return {
        "@timestamp": rfc3339(ns),
        "message": message,
        "log": {"file": {"path": source}},
        **LABELS,
        **(fields or {}),
    }


def es_ids(batch: records.Batch) -> list[str]:
    return [
        elasticsearch.document_id(group.key, event[0])
        for group in batch.groups
        for event in group.events
    ]


def test_elasticsearch_creates_each_document_under_its_deterministic_id(loop: Loop) -> None:
    batch = make_batch()
    with ElasticsearchReceiver() as es:
        sink = sinks.create(spec("elasticsearch", es.url))
        (outcome,) = loop.run(send_all(sink, batch))
        assert outcome == records.Outcome()
        expected = dict(zip(es_ids(batch), (es_doc(*e) for e in EXPECTED), strict=True))
        assert es.docs("logs-sidecarkit") == expected
        assert es.last_headers["Content-Type"] == "application/x-ndjson"


def test_elasticsearch_replay_is_409_counted_as_delivered_without_duplicates() -> None:
    with ElasticsearchReceiver() as es:
        sink = sinks.create(spec("elasticsearch", es.url, gzip=True))
        outcomes = run(send_all(sink, make_batch(), make_batch()))
        assert outcomes == [records.Outcome(), records.Outcome()]
        assert len(es.docs("logs-sidecarkit")) == 5
        assert es.requests == 2
        assert es.gzipped == 2


def test_elasticsearch_partial_failure_returns_only_the_failed_items() -> None:
    batch = make_batch()
    ids = es_ids(batch)
    with ElasticsearchReceiver() as es:
        es.fail_items({ids[1], ids[4]}, 429, "es_rejected_execution_exception")
        es.fail_items({ids[2]}, 400, "mapper_parsing_exception", requests=None)
        sink = sinks.create(spec("elasticsearch", es.url))

        async def scenario() -> tuple[records.Outcome, records.Outcome]:
            first = await sink.send(batch)
            assert first.retry is not None
            second = await sink.send(first.retry)
            await sink.close()
            return first, second

        first, second = run(scenario())
        assert first.rejected == 1
        assert first.reasons == {"mapper_parsing_exception": 1}
        assert first.retry is not None
        retried = [(g.source, e[1]) for g in first.retry.groups for e in g.events]
        assert retried == [(APP, "héllo wörld — ✓ 日本語"), (AUDIT, "audit one")]
        assert first.retry.events == 2
        assert second == records.Outcome()
        assert sorted(es.docs("logs-sidecarkit")) == sorted([ids[0], ids[1], ids[3], ids[4]])


ONE = records.Batch([records.Group(APP, "k", [(0, "one", None, None)], NOW)], {}, 1)


@pytest.mark.parametrize(
    ("answer", "retried"),
    [
        (b'{"took":3,"errors":false,"items":[{"create":{"status":201}}]}', False),
        (b'{ "errors" : false , "items" : [ ] }', False),
        (b'{"errors":false}', False),
        (b'{"took":3,"errors":false,"items":[{"create":{"status":201}', True),
        (b'{"items":[{"create":{"status":503,"error":{"errors":false}}}],"errors":true}', True),
        (b'{"took":3,"errors":true,"items":[]}', True),
    ],
)
def test_elasticsearch_reads_items_only_when_the_answer_does_not_say_errors_false(
    answer: bytes, retried: bool
) -> None:
    with ElasticsearchReceiver() as es:
        es.fail_next(1, 200, body=answer)
        sink = sinks.create(spec("elasticsearch", es.url))
        (outcome,) = run(send_all(sink, ONE))
        assert (outcome.retry is not None) is retried
        assert outcome.rejected == 0


def test_elasticsearch_receiver_filters_its_answer_as_filter_path_says() -> None:
    answer = {
        "took": 3,
        "errors": True,
        "items": [
            {"create": {"_index": "i", "_id": "a", "status": 201, "result": "created"}},
            {"create": {"_index": "i", "_id": "b", "status": 400, "error": {"type": "x"}}},
        ],
    }
    paths = [p.split(".") for p in elasticsearch.FILTER_PATH.split("=")[1].split(",")]
    assert filtered(answer, paths) == {
        "errors": True,
        "items": [
            {"create": {"status": 201}},
            {"create": {"status": 400, "error": {"type": "x"}}},
        ],
    }
    assert filtered(answer, [["took"]]) == {"took": 3}
    assert filtered(answer, [["nothing"]]) is not answer


def test_elasticsearch_index_may_carry_the_events_utc_date() -> None:
    day = 1_755_734_400 * 10**9  # 2025-08-21T00:00:00Z
    batch = records.Batch(
        [records.Group(APP, "k", [(0, "late", None, day - 1), (1, "early", None, day)], day)],
        {},
    )
    with ElasticsearchReceiver() as es:
        sink = sinks.create(spec("elasticsearch", es.url, index="app-%Y.%m.%d"))
        run(send_all(sink, batch))
        assert [d["message"] for d in es.docs("app-2025.08.20").values()] == ["late"]
        assert [d["message"] for d in es.docs("app-2025.08.21").values()] == ["early"]


def test_elasticsearch_fields_never_replace_the_shippers_keys() -> None:
    fields = {"message": "spoof", "@timestamp": "yesterday", "user": "ann"}
    batch = records.Batch([records.Group(APP, "k", [(0, "real", fields, None)], NOW)], {})
    with ElasticsearchReceiver() as es:
        sink = sinks.create(spec("elasticsearch", es.url + "/_bulk"))
        (outcome,) = run(send_all(sink, batch))
        assert outcome == records.Outcome()
        (doc,) = es.docs("logs-sidecarkit").values()
        assert doc == {
            "@timestamp": rfc3339(NOW),
            "message": "real",
            "log": {"file": {"path": APP}},
            "user": "ann",
        }


# -- OTLP -----------------------------------------------------------------------------------


RESOURCE = {
    "k8s.pod.name": "web-1",
    "k8s.namespace.name": "shop",
    "k8s.node.name": "node-a",
    "k8s.container.name": "app",
}


def test_otlp_exports_records_with_resource_severity_and_typed_attributes(loop: Loop) -> None:
    with OtlpReceiver() as collector:
        sink = sinks.create(spec("otlp", collector.url))
        (outcome,) = loop.run(send_all(sink, make_batch()))
        assert outcome == records.Outcome()
        scope = {"name": "sidecarkit", "version": "0.1.0", "attributes": {}}

        def record(source: str, body: str, ns: int, observed: int, **extra: Any) -> LogRecord:
            values: dict[str, Any] = {
                "severity_number": None,
                "severity_text": None,
                "trace_id": None,
                "span_id": None,
                "attributes": {"log.file.path": source},
            }
            values.update(extra)
            return LogRecord(
                resource=RESOURCE,
                scope=scope,
                time_unix_nano=ns,
                observed_time_unix_nano=observed,
                body=body,
                **values,
            )

        assert collector.stored() == [
            record(APP, "GET / 200", NOW, NOW),
            record(APP, "héllo wörld — ✓ 日本語", NOW + 1, NOW),
            record(
                APP,
                "bad byte \ufffd here",
                NOW + 2,
                NOW,
                severity_number=17,
                severity_text="error",
                attributes={"log.file.path": APP, "log.iostream": "stderr", "code": 7},
            ),
            record(
                APP,
                "own time",
                OWN_TIME,
                NOW,
                severity_number=9,
                severity_text="info",
                trace_id=TRACE.lower(),
                attributes={"log.file.path": APP, "ok": True, "ctx": {"user": "ann"}},
            ),
            record(AUDIT, "audit one", NOW + 1000, NOW + 1000),
        ]


def test_otlp_partial_success_is_counted_and_not_retried() -> None:
    with OtlpReceiver() as collector:
        collector.reject_next(2)
        sink = sinks.create(spec("otlp", collector.url, gzip=True))
        (outcome,) = run(send_all(sink, make_batch()))
        assert outcome.retry is None
        assert outcome.rejected == 2
        assert outcome.reasons == {"partial success: 2 record(s) refused": 2}
        assert len(collector.stored()) == 3
        assert collector.requests == 1
        assert collector.gzipped == 1


def test_otlp_severity_names_map_to_numbers() -> None:
    assert otlp.SEVERITY["WARNING"] == otlp.SEVERITY["warn"] == 13
    assert otlp.SEVERITY["Critical"] == 22
    batch = records.Batch([records.Group(APP, "k", [(0, "m", {"level": "NoTiCe"}, None)], NOW)], {})
    with OtlpReceiver() as collector:
        run(send_all(sinks.create(spec("otlp", collector.url, service_name="shop")), batch))
        (stored,) = collector.stored()
        assert (stored.severity_number, stored.severity_text) == (10, "NoTiCe")
        assert stored.resource == {"service.name": "shop"}


# -- generic HTTP ---------------------------------------------------------------------------


def http_object(source: str, message: str, fields: dict[str, Any] | None, ns: int) -> Any:
    return {"time": rfc3339(ns), "message": message, "file": source, **LABELS, **(fields or {})}


@pytest.mark.parametrize(
    ("form", "content_type"), [("ndjson", "application/x-ndjson"), ("json", "application/json")]
)
def test_http_posts_one_object_per_event(loop: Loop, form: str, content_type: str) -> None:
    with NdjsonReceiver() as receiver:
        sink = sinks.create(spec("http", receiver.url + "/ingest", format=form))
        (outcome,) = loop.run(send_all(sink, make_batch()))
        assert outcome == records.Outcome()
        assert receiver.stored() == [http_object(*e) for e in EXPECTED]
        assert receiver.content_types == [content_type]


# -- the retry matrix -----------------------------------------------------------------------


@contextmanager
def receiving(kind: str) -> Iterator[tuple[Receiver, str, Callable[[], int]]]:
    """A receiver for ``kind``, the sink endpoint for it, and a count of what it stored."""
    if kind == "loki":
        with LokiReceiver() as loki:
            yield loki, loki.url, lambda: sum(map(len, loki.entries().values()))
    elif kind == "elasticsearch":
        with ElasticsearchReceiver() as es:
            yield es, es.url, lambda: len(es.docs("logs-sidecarkit"))
    elif kind == "otlp":
        with OtlpReceiver() as collector:
            yield collector, collector.url, lambda: len(collector.stored())
    else:
        with NdjsonReceiver() as receiver:
            yield receiver, receiver.url + "/ingest", lambda: len(receiver.stored())


RETRIED = "retried"
REFUSED = "refused"
MATRIX = [
    ("loki", 429, RETRIED),
    ("loki", 500, RETRIED),
    ("loki", 503, RETRIED),
    ("loki", 501, REFUSED),
    ("loki", 400, REFUSED),
    ("loki", 404, REFUSED),
    ("elasticsearch", 429, RETRIED),
    ("elasticsearch", 500, RETRIED),
    ("elasticsearch", 503, RETRIED),
    ("elasticsearch", 400, REFUSED),
    ("elasticsearch", 401, REFUSED),
    ("elasticsearch", 413, REFUSED),
    ("otlp", 429, RETRIED),
    ("otlp", 502, RETRIED),
    ("otlp", 503, RETRIED),
    ("otlp", 504, RETRIED),
    ("otlp", 500, REFUSED),
    ("otlp", 400, REFUSED),
    ("otlp", 413, REFUSED),
    ("http", 408, RETRIED),
    ("http", 429, RETRIED),
    ("http", 500, RETRIED),
    ("http", 400, REFUSED),
    ("http", 404, REFUSED),
]


@pytest.mark.parametrize(("kind", "status", "expected"), MATRIX)
def test_whole_request_failures_are_retried_or_refused(
    kind: str, status: int, expected: str
) -> None:
    batch = make_batch()
    with receiving(kind) as (receiver, endpoint, stored):
        receiver.fail_next(1, status, retry_after=7 if status in (429, 503) else None)
        sink = sinks.create(spec(kind, endpoint))
        (outcome,) = run(send_all(sink, batch))
        assert stored() == 0
        if expected == RETRIED:
            assert outcome.retry is batch
            assert outcome.rejected == 0
            assert outcome.retry_after == (7.0 if status in (429, 503) else None)
        else:
            assert outcome.retry is None
            assert outcome.rejected == 5
            (reason,) = outcome.reasons
            assert str(status) in reason
            assert outcome.reasons[reason] == 5


@pytest.mark.parametrize("kind", ["loki", "elasticsearch", "otlp", "http"])
def test_a_retried_batch_is_delivered_once_the_receiver_recovers(kind: str) -> None:
    with receiving(kind) as (receiver, endpoint, stored):
        receiver.fail_next(2, 503, retry_after=1)
        sink = sinks.create(spec(kind, endpoint))

        async def scenario() -> list[records.Outcome]:
            outcomes = []
            batch: records.Batch | None = make_batch()
            for _ in range(5):  # the caller's loop, without its pauses
                if batch is None:
                    break
                outcome = await sink.send(batch)
                outcomes.append(outcome)
                batch = outcome.retry
            await sink.close()
            return outcomes

        outcomes = run(scenario())
        assert [o.retry is not None for o in outcomes] == [True, True, False]
        assert stored() == 5
        assert receiver.requests == 3


@pytest.mark.parametrize("kind", ["loki", "elasticsearch", "otlp", "http"])
def test_connection_refused_raises_and_recovers_when_the_receiver_is_back(kind: str) -> None:
    with receiving(kind) as (receiver, endpoint, stored):
        sink = sinks.create(spec(kind, endpoint, timeout=5))

        async def scenario() -> None:
            assert (await sink.send(make_batch())) == records.Outcome()
            receiver.down()
            with pytest.raises(ConnectionRefusedError):
                await sink.send(make_batch())
            with pytest.raises(ConnectionRefusedError):
                await sink.send(make_batch())
            receiver.up()
            assert (await sink.send(make_batch())) == records.Outcome()
            await sink.close()

        run(scenario())
        assert stored() >= 5


# -- security options -----------------------------------------------------------------------


def test_https_with_ca_file_verifies_and_without_it_fails(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(tls.cert), str(tls.key))
    with LokiReceiver(ssl_context=server) as loki:
        assert loki.url.startswith("https://")
        trusted = sinks.create(spec("loki", loki.url, ca_file=str(tls.ca_file)))
        assert run(send_all(trusted, make_batch())) == [records.Outcome()]
        untrusted = sinks.create(spec("loki", loki.url))
        with pytest.raises(ssl.SSLCertVerificationError):
            run(send_all(untrusted, make_batch()))
        unverified = sinks.create(spec("loki", loki.url, tls_verify=False))
        assert run(send_all(unverified, make_batch())) == [records.Outcome()]
        assert loki.requests == 2


def test_basic_auth_bearer_token_and_headers_reach_the_receiver(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    with NdjsonReceiver() as receiver:
        endpoint = receiver.url + "/ingest"
        basic = sinks.create(
            spec("http", endpoint, username="ann", password="s3cret", headers={"X-Team": "a"})
        )
        run(send_all(basic, make_batch()))
        assert receiver.last_headers["Authorization"] == "Basic YW5uOnMzY3JldA=="
        assert receiver.last_headers["X-Team"] == "a"
        bearer = sinks.create(spec("http", endpoint, bearer_token_file=str(token)))

        async def rotate() -> None:
            await bearer.send(make_batch())
            assert receiver.last_headers["Authorization"] == "Bearer first"
            token.write_text("second\n")  # projected tokens are replaced in place
            await bearer.send(make_batch())
            await bearer.close()

        run(rotate())
        assert receiver.last_headers["Authorization"] == "Bearer second"


def test_elasticsearch_api_key_header() -> None:
    with ElasticsearchReceiver() as es:
        run(send_all(sinks.create(spec("elasticsearch", es.url, api_key="aWQ6a2V5")), make_batch()))
        assert es.last_headers["Authorization"] == "ApiKey aWQ6a2V5"


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "endpoint", "options", "message"),
    [
        (
            "loki",
            "http://loki:3100",
            {"tenat": "a"},
            "unknown option 'tenat'; accepted options: bearer_token_file, ca_file, cert_file, gzip, header_files, headers, key_file, password, structured_metadata, tenant, timeout, tls_verify, username",
        ),
        ("otlp", "http://c:4318", {"index": "x"}, "unknown option 'index'"),
        ("loki", None, {}, "needs an endpoint URL, e.g. endpoint: http://loki:3100"),
        ("loki", "loki:3100", {}, "must be an http:// or https:// URL with a host"),
        ("elasticsearch", "ftp://es:9200", {}, "must be an http:// or https:// URL"),
        (
            "loki",
            "http://loki:3100",
            {"timeout": -1},
            "option 'timeout' must be a positive number of seconds, e.g. 30, got -1",
        ),
        (
            "loki",
            "http://loki:3100",
            {"timeout": "30s"},
            "option 'timeout' must be a positive number",
        ),
        (
            "otlp",
            "http://c:4318",
            {"gzip": "yes"},
            "option 'gzip' must be true or false, got 'yes'",
        ),
        (
            "http",
            "http://h/x",
            {"format": "xml"},
            "option 'format' must be one of ndjson, json, got 'xml'",
        ),
        (
            "http",
            "http://h/x",
            {"username": "ann"},
            "basic auth needs both 'username' and 'password'; add 'password'",
        ),
        (
            "http",
            "http://h/x",
            {"ca_file": "/nonexistent/ca.pem"},
            "option 'ca_file': /nonexistent/ca.pem is not a readable file",
        ),
        ("http", "http://h/x", {"headers": ["X-A: b"]}, "option 'headers' must be a mapping"),
        (
            "http",
            "http://h/x",
            {"headers": {"X-A": "b\r\nX-B: c"}},
            "option 'headers.X-A' must be a single line",
        ),
        (
            "elasticsearch",
            "http://es:9200",
            {"index": "Logs"},
            "option 'index' 'Logs' is not a valid index name: use lowercase",
        ),
        ("elasticsearch", "http://es:9200", {"index": "logs-%H"}, "uses %H; only %Y %m %d %y %j"),
        ("loki", "http://loki:3100", {"tenant": ""}, "option 'tenant' must be a non-empty string"),
    ],
)
def test_bad_options_are_refused_with_the_option_and_the_fix(
    kind: str, endpoint: str | None, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="sink") as caught:
        sinks.create(sinks.Spec(kind, endpoint, options))
    assert message in str(caught.value)
    assert f"'{kind}'" in str(caught.value)


def test_ca_file_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"option 'ca_file'.*no usable PEM certificate"):
        sinks.create(spec("loki", "https://loki:3100", ca_file=str(bogus)))


FILTER = "?filter_path=errors,items.*.status,items.*.error"


@pytest.mark.parametrize(
    ("kind", "endpoint", "url"),
    [
        ("loki", "http://loki:3100", "http://loki:3100/loki/api/v1/push"),
        ("loki", "http://loki:3100/", "http://loki:3100/loki/api/v1/push"),
        ("loki", "https://gw/tenant/loki/api/v1/push", "https://gw/tenant/loki/api/v1/push"),
        ("otlp", "http://collector:4318", "http://collector:4318/v1/logs"),
        ("otlp", "http://collector:4318/custom/logs", "http://collector:4318/custom/logs"),
        ("elasticsearch", "http://es:9200", f"http://es:9200/logs-sidecarkit/_bulk{FILTER}"),
        ("elasticsearch", "http://proxy/es/", f"http://proxy/es/logs-sidecarkit/_bulk{FILTER}"),
        (
            "elasticsearch",
            "http://es:9200/_bulk?pipeline=logs",
            f"http://es:9200/_bulk?pipeline=logs&{FILTER[1:]}",
        ),
        (
            "elasticsearch",
            "http://es:9200/_bulk?filter_path=took,errors,items",
            "http://es:9200/_bulk?filter_path=took,errors,items",
        ),
        ("http", "http://h:8080/in?token=x", "http://h:8080/in?token=x"),
    ],
)
def test_endpoint_paths(kind: str, endpoint: str, url: str) -> None:
    sink = sinks.create(spec(kind, endpoint))
    assert sink.client.settings.url == url  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("endpoint", "index", "url", "action"),
    [
        ("http://es:9200", "logs-app", "http://es:9200/logs-app/_bulk", b'{"create":{"_id":"'),
        (
            "http://es:9200/_bulk",
            "logs-app",
            "http://es:9200/_bulk",
            b'{"create":{"_index":"logs-app","_id":"',
        ),
        (
            "http://es:9200",
            "logs-%Y",
            "http://es:9200/_bulk",
            b'{"create":{"_index":"logs-2023","_id":"',
        ),
    ],
)
def test_elasticsearch_names_a_fixed_index_in_the_url_and_the_id_alone_in_each_action(
    endpoint: str, index: str, url: str, action: bytes
) -> None:
    sink = sinks.create(spec("elasticsearch", endpoint, index=index))
    assert sink.client.settings.url == f"{url}{FILTER}"  # type: ignore[attr-defined]
    when = 1_700_000_000 * 10**9  # in 2023
    batch = records.Batch([records.Group(APP, "k", [(0, "x", None, when)], when)], {})
    lines = sink.body(batch).split(b"\n")  # type: ignore[attr-defined]
    assert lines[0].startswith(action)


FACTORIES: dict[str, Callable[[sinks.Spec], records.Sink]] = {
    "loki": loki.create,
    "elasticsearch": elasticsearch.create,
    "otlp": otlp.create,
    "http": http_sink.create,
}
"""Typed as ``records.Sink`` factories, so mypy checks each sink against the protocol."""


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_the_registry_builds_each_sink_named_by_its_spec(kind: str) -> None:
    made = sinks.create(spec(kind, "http://127.0.0.1:9/x"))
    assert type(made) is type(FACTORIES[kind](spec(kind, "http://127.0.0.1:9/x")))
    assert made.name == kind
    assert sinks.create(sinks.Spec(kind, "http://127.0.0.1:9/x", name="primary")).name == "primary"


def test_retry_after_takes_seconds_or_a_date_capped_and_never_negative() -> None:
    now = 1_700_000_000.0
    assert _http.retry_after("7") == 7.0
    assert _http.retry_after(" 2.5 ") == 2.5
    assert _http.retry_after("-3") == 0.0
    assert _http.retry_after("86400") == _http.MAX_RETRY_AFTER
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert _http.retry_after(date, now=now) == 30.0
    assert _http.retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert _http.retry_after("soon") is None
    assert _http.retry_after(None) is None


def test_gzip_of_a_large_body_is_made_off_the_loop_and_still_decoded() -> None:
    lines: list[records.Event] = [(n, f"line {n} " + "x" * 100, None, None) for n in range(2000)]
    batch = records.Batch([records.Group(APP, "k", lines, NOW)], {})
    with NdjsonReceiver() as receiver:
        sink = sinks.create(spec("http", receiver.url + "/ingest", gzip=True))
        run(send_all(sink, batch))
        assert receiver.gzipped == 1
        assert [o["message"] for o in receiver.stored()] == [e[1] for e in lines]


# -- the receivers are strict ---------------------------------------------------------------


def post(
    url: str, path: str, body: bytes, content_type: str, *, encoding: str | None = None
) -> tuple[int, bytes]:
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_loki_receiver_refuses_malformed_pushes() -> None:
    push = "/loki/api/v1/push"
    with LokiReceiver() as loki:
        numeric = orjson.dumps({"streams": [{"stream": {"a": "b"}, "values": [[NOW, "x"]]}]})
        status, text = post(loki.url, push, numeric, "application/json")
        assert status == 400
        assert b"not a string of Unix epoch nanoseconds" in text
        no_labels = orjson.dumps({"streams": [{"stream": {}, "values": [[str(NOW), "x"]]}]})
        assert post(loki.url, push, no_labels, "application/json") == (
            400,
            b"error at least one label pair is required per stream\n",
        )
        good = orjson.dumps({"streams": [{"stream": {"a": "b"}, "values": [[str(NOW), "x"]]}]})
        assert post(loki.url, push, good, "application/x-protobuf")[0] == 400
        assert post(loki.url, push, good[:-3], "application/json")[0] == 400
        assert (
            post(loki.url, push, zlib.compress(good)[:10], "application/json", encoding="gzip")[0]
            == 400
        )
        assert loki.entries() == {}
        assert post(loki.url, push, good, "application/json")[0] == 204
        assert loki.entries() == {(("a", "b"),): [(NOW, "x", {})]}


def test_elasticsearch_receiver_refuses_malformed_bulk_bodies() -> None:
    create = b'{"create":{"_index":"i","_id":"1"}}\n{"message":"x"}'
    with ElasticsearchReceiver() as es:
        status, text = post(es.url, "/_bulk", create, "application/x-ndjson")
        assert status == 400
        assert (
            orjson.loads(text)["error"]["reason"]
            == "The bulk request must be terminated by a newline [\\n]"
        )
        assert post(es.url, "/_bulk", create + b"\n", "text/plain")[0] == 406
        typed = b'{"create":{"_index":"i","_type":"_doc","_id":"1"}}\n{"message":"x"}\n'
        status, text = post(es.url, "/_bulk", typed, "application/x-ndjson")
        assert status == 400
        assert b"unknown parameter [_type]" in text
        no_source = b'{"create":{"_index":"i","_id":"1"}}\n'
        assert post(es.url, "/_bulk", no_source, "application/x-ndjson")[0] == 400
        bad_items = (
            b'{"create":{"_index":"i","_id":"1"}}\n["not an object"]\n'
            b'{"create":{"_index":"i","_id":"2"}}\n{"@timestamp":"last tuesday"}\n'
        )
        status, text = post(es.url, "/_bulk", bad_items, "application/x-ndjson")
        answer = orjson.loads(text)
        assert status == 200
        assert answer["errors"] is True
        assert [item["create"]["status"] for item in answer["items"]] == [400, 400]
        assert es.docs("i") == {}
        status, text = post(
            es.url, "/i/_bulk", b'{"create":{"_id":"1"}}\n{"m":1}\n', "application/x-ndjson"
        )
        assert (status, orjson.loads(text)["items"][0]["create"]["status"]) == (200, 201)
        assert es.docs("i") == {"1": {"m": 1}}


def test_otlp_receiver_refuses_malformed_exports() -> None:
    def export(record: dict[str, Any]) -> bytes:
        return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})

    with OtlpReceiver() as collector:
        base64_trace = export({"traceId": "W47/95gDgQPSabYzgT/GDA==", "body": {"stringValue": "x"}})
        status, text = post(collector.url, "/v1/logs", base64_trace, "application/json")
        assert status == 400
        assert "traceId must be 32 hex digits" in orjson.loads(text)["message"]
        iso_time = export({"timeUnixNano": "2026-08-21T10:00:00Z"})
        assert post(collector.url, "/v1/logs", iso_time, "application/json")[0] == 400
        two_values = export({"body": {"stringValue": "x", "intValue": "1"}})
        assert post(collector.url, "/v1/logs", two_values, "application/json")[0] == 400
        assert post(collector.url, "/v1/logs", export({}), "application/x-protobuf")[0] == 415
        assert collector.stored() == []
        numeric_time = export({"timeUnixNano": 5, "unknownField": 1, "body": {"stringValue": "x"}})
        assert post(collector.url, "/v1/logs", numeric_time, "application/json") == (200, b"{}")
        assert [r.time_unix_nano for r in collector.stored()] == [5]


def test_ndjson_receiver_refuses_malformed_lines() -> None:
    with NdjsonReceiver() as receiver:
        assert post(receiver.url, "/ingest", b'{"a":1}', "application/x-ndjson")[0] == 400
        assert post(receiver.url, "/ingest", b'{"a":1}\n[1]\n', "application/x-ndjson")[0] == 400
        assert post(receiver.url, "/ingest", b'{"a":1}\nnope\n', "application/x-ndjson")[0] == 400
        assert post(receiver.url, "/ingest", b'{"a":1}\n', "text/plain")[0] == 415
        assert receiver.stored() == []
        assert post(receiver.url, "/ingest", b'{"a":1}\n', "application/x-ndjson")[0] == 204
        assert receiver.stored() == [{"a": 1}]


def test_receivers_bound_the_body_size_after_gzip() -> None:
    with NdjsonReceiver(max_body=1000) as receiver:
        bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
        body = bomb.compress(b'{"a":"' + b"x" * 100_000 + b'"}\n') + bomb.flush()
        assert len(body) < 1000
        assert (
            post(receiver.url, "/ingest", body, "application/x-ndjson", encoding="gzip")[0] == 413
        )
        assert receiver.stored() == []


def test_down_refuses_connections_until_up() -> None:
    with NdjsonReceiver() as receiver:
        receiver.down()
        with pytest.raises(ConnectionRefusedError):
            post(receiver.url, "/ingest", b'{"a":1}\n', "application/x-ndjson")
        receiver.up()
        assert post(receiver.url, "/ingest", b'{"a":1}\n', "application/x-ndjson")[0] == 204
