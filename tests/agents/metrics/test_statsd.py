"""StatsD and DogStatsD parsing and aggregation."""

from __future__ import annotations

import pytest

from sidecarkit.agents.metrics import mapping, openmetrics, rendering, settings, statsd


def _samples(agg: statsd.Aggregator) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.labels): s.value for f in agg.families() for s in f.samples}


def test_counters_gauges_sets_with_rates_and_tags() -> None:
    agg = statsd.Aggregator()
    agg.add_packet(b"api.requests:1|c\napi.requests:1|c|@0.5\napi.requests:2|c|#route:/a,env:prod")
    agg.add_packet(b"queue:10|g\nqueue:+5|g\nqueue:-3|g\nusers:alice|s\nusers:bob|s\nusers:alice|s")
    got = _samples(agg)
    assert got[("api_requests_total", ())] == 3.0
    assert got[("api_requests_total", (("env", "prod"), ("route", "/a")))] == 2.0
    assert got[("queue", ())] == 12.0
    assert got[("users", ())] == 2.0


def test_timers_are_seconds_histograms_and_packed_values_count_each() -> None:
    agg = statsd.Aggregator(buckets=(0.01, 0.1, 1.0))
    agg.add_packet(b"db.query:5|ms\ndb.query:50|ms|@0.5\nsize:1:2:300|h")
    got = _samples(agg)
    assert got[("db_query_seconds_bucket", (("le", "0.01"),))] == 1.0
    assert got[("db_query_seconds_bucket", (("le", "0.1"),))] == 3.0
    assert got[("db_query_seconds_count", ())] == 3.0
    assert got[("db_query_seconds_sum", ())] == pytest.approx(0.005 + 2 * 0.05)
    assert got[("size_count", ())] == 3.0
    assert got[("size_bucket", (("le", "1.0"),))] == 1.0
    assert got[("size_bucket", (("le", "+Inf"),))] == 3.0


@pytest.mark.parametrize(
    "packet",
    [
        b"nocolon|c",
        b"a:1",
        b"a:1|x",
        b"a:x|c",
        b"a:1|c|@2",
        b"a:1|c|@0",
        b"a:1|c|junk",
        b":1|c",
        b"a:NaN|g",
        b"a:inf|c",
        b"\xff\xfe",
        b"a:|c",
        b"a:1|c|@x",
    ],
)
def test_malformed_lines_are_counted_not_fatal(packet: bytes) -> None:
    agg = statsd.Aggregator()
    agg.add_packet(packet + b"\nok:1|c")
    assert agg.malformed == 1
    assert _samples(agg)[("ok_total", ())] == 1.0


def test_names_are_sanitised_and_one_name_keeps_one_type() -> None:
    agg = statsd.Aggregator()
    agg.add_packet(b"9lives.x-y:1|c\n9lives.x-y:1|g")
    assert set(_samples(agg)) == {("_9lives_x_y_total", ())}
    assert agg.malformed == 1


def test_the_series_limit_bounds_memory() -> None:
    agg = statsd.Aggregator(max_series=10)
    for i in range(100):
        agg.add_packet(f"m:1|c|#id:{i}".encode())
    assert len(agg.counters) == 10
    assert agg.dropped == 90


def test_what_it_renders_is_valid_openmetrics() -> None:
    agg = statsd.Aggregator()
    agg.add_packet(b"a:1|c\nb:2|g\nc:3|ms\nd:4|h\ne:x|s")
    families = openmetrics.parse(rendering.render_openmetrics(agg.families()))
    assert [f.name for f in families] == ["a", "b", "c_seconds", "d", "e"]


def test_bucket_settings_are_checked() -> None:
    assert statsd.parse_buckets("0.1, 1,10") == (0.1, 1.0, 10.0)
    with pytest.raises(ValueError, match="must increase"):
        statsd.parse_buckets("1,0.5")
    with pytest.raises(ValueError, match="finite"):
        statsd.parse_buckets("1,inf")


class _Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_idle_series_expire_after_the_ttl_and_free_their_slot() -> None:
    clock = _Clock()
    agg = statsd.Aggregator(ttl=10.0, clock=clock, max_series=2)
    agg.add_packet(b"old.jobs:1|c\nqueue:3|g")
    clock.now = 6.0
    agg.add_packet(b"queue:4|g")
    clock.now = 12.0
    got = _samples(agg)
    assert ("old_jobs_total", ()) not in got
    assert got[("queue", ())] == 4.0
    assert agg.expired == 1
    agg.add_packet(b"new.jobs:2|c")  # the expired series' slot is free again
    assert _samples(agg)[("new_jobs_total", ())] == 2.0
    assert agg.dropped == 0


def test_without_a_ttl_series_stay() -> None:
    clock = _Clock()
    agg = statsd.Aggregator(clock=clock)
    agg.add_packet(b"jobs:1|c")
    clock.now = 1e9
    assert _samples(agg)[("jobs_total", ())] == 1.0


def test_a_full_set_counts_the_values_it_does_not_keep_and_says_so_once() -> None:
    agg = statsd.Aggregator()
    cap = statsd.MAX_SET_VALUES
    for i in range(cap + 5):
        agg.add_packet(b"users:u%d|s" % i)
    agg.add_packet(b"users:u0|s")  # already counted: not dropped
    assert _samples(agg)[("users", ())] == cap
    assert agg.set_values_dropped == 5
    assert agg.newly_capped == ["users"]


def test_mapped_names_become_a_metric_name_and_labels_as_statsd_exporter_maps_them() -> None:
    config = settings.from_mapping(
        {
            "statsd_mappings": [
                {
                    "match": "api.*.requests.*",
                    "name": "api_requests",
                    "labels": {"service": "$1", "code": "$2"},
                },
                {
                    "match": r"db\.(\w+)\.query",
                    "match_type": "regex",
                    "name": "db_queries",
                    "labels": {"table": "${1}"},
                },
            ]
        },
        source="metrics.yaml",
    )
    agg = statsd.Aggregator(mapper=mapping.Mapper(config.statsd_mappings))
    agg.add_packet(
        b"api.checkout.requests.200:3|c|#region:eu\napi.checkout.requests.200:2|c|#region:eu\n"
        b"db.orders.query:7|ms\nunmapped.name:1|c\napi.too.many.parts.here:1|c"
    )
    got = _samples(agg)
    key = (("service", "checkout"), ("code", "200"), ("region", "eu"))
    assert got[("api_requests_total", tuple(sorted(key)))] == 5
    assert got[("db_queries_seconds_count", (("table", "orders"),))] == 1
    assert got[("unmapped_name_total", ())] == 1
    assert got[("api_too_many_parts_here_total", ())] == 1  # * is one part: no match


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "x"}, "needs match"),
        ({"match": "a.*", "name": "x", "match_type": "prefix"}, "is not glob or regex"),
        ({"match": "a(", "name": "x", "match_type": "regex"}, "does not compile"),
        ({"match": "a.*", "name": "x", "labels": {"bad-name": "$1"}}, "is not"),
        ({"match": "a.*", "name": "x", "timeout": 1}, "unknown key 'timeout'"),
    ],
)
def test_a_wrong_mapping_is_named_with_its_place(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"metrics.yaml: statsd_mappings\[0\]") as caught:
        settings.from_mapping({"statsd_mappings": [rule]}, source="metrics.yaml")
    assert message in str(caught.value)
