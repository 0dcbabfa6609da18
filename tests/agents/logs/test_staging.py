"""The compiled stages on events: grep, modify, redact, parse, throttle, sample, and what they
count."""

from __future__ import annotations

from typing import Any

from sidecarkit import metering
from sidecarkit.agents.logs import records, redaction, stages, staging

T0 = 1_764_000_000 * 10**9


def _run(config: list[dict[str, Any]], events: list[records.Event], **kw: Any) -> list[Any]:
    pipeline = staging.compile(stages.from_config(config, "stages"), **kw)
    assert pipeline is not None
    return pipeline(events, T0)


def _lines(*texts: str, fields: dict[str, Any] | None = None) -> list[records.Event]:
    return [(n, text, dict(fields) if fields else None, None) for n, text in enumerate(texts)]


def test_no_stages_compile_to_nothing_so_records_take_the_plain_path() -> None:
    assert staging.compile(()) is None
    assert staging.compile((stages.Multiline("multiline", preset="java"),)) is None


def test_grep_keeps_and_drops_by_regex_on_the_message() -> None:
    events = _lines("GET /healthz 200", "GET /cart 200", "POST /checkout 500")
    kept = _run([{"type": "grep", "keep": ["GET", "POST"], "drop": "healthz"}], events)
    assert [e[1] for e in kept] == ["GET /cart 200", "POST /checkout 500"]


def test_grep_on_a_field_treats_a_record_without_it_as_not_matching() -> None:
    events: list[records.Event] = [
        (0, "a", {"level": "debug"}, None),
        (1, "b", {"level": "info"}, None),
        (2, "c", None, None),
        (3, "d", {"level": 40}, None),
    ]
    dropped = _run([{"type": "grep", "field": "level", "drop": "^debug$"}], events)
    assert [e[1] for e in dropped] == ["b", "c", "d"]
    kept = _run([{"type": "grep", "field": "level", "keep": "^(info|40)$"}], events)
    assert [e[1] for e in kept] == ["b", "d"]


def test_modify_renames_removes_adds_sets_and_copies_pod_metadata_in_that_order() -> None:
    events: list[records.Event] = [(7, "m", {"msg_id": 1, "env": "dev", "password": "x"}, 5)]
    out = _run(
        [
            {
                "type": "modify",
                "rename": {"msg_id": "id"},
                "remove": ["password"],
                "add": {"env": "prod", "region": "eu"},
                "set": {"team": "payments"},
                "copy": {"k8s_pod": "pod", "app": "labels.app", "nope": "labels.none"},
            }
        ],
        events,
        metadata={"pod": "web-1", "labels.app": "shop"},
    )
    assert out == [
        (
            7,
            "m",
            {
                "id": 1,
                "env": "dev",
                "region": "eu",
                "team": "payments",
                "k8s_pod": "web-1",
                "app": "shop",
            },
            5,
        )
    ]


def test_modify_can_move_a_field_into_the_message_and_the_message_into_a_field() -> None:
    events: list[records.Event] = [(0, "original", {"text": "from the field"}, None)]
    out = _run([{"type": "modify", "rename": {"message": "raw", "text": "message"}}], events)
    assert out == [(0, "from the field", {"raw": "original"}, None)]


def test_modify_with_only_constants_adds_them_to_records_without_fields() -> None:
    out = _run([{"type": "modify", "add": {"env": "prod"}}], _lines("a"))
    assert out == [(0, "a", {"env": "prod"}, None)]


def test_redact_masks_emails_luhn_valid_cards_bearer_tokens_and_secret_values() -> None:
    text = (
        "jane.doe@example.com paid with 4111 1111 1111 1111, order 4111111111111112, "
        'Authorization: Bearer eyJhbG.abc-def, password=hunter2 {"api_key": "k-123"}'
    )
    out = _run(
        [{"type": "redact", "patterns": ["email", "card", "bearer", "secret"]}], _lines(text)
    )
    assert out[0][1] == (
        "[REDACTED] paid with [REDACTED], order 4111111111111112, "
        'Authorization: Bearer [REDACTED], password=[REDACTED] {"api_key": "[REDACTED]"}'
    )


def test_redact_masks_ipv4_addresses_but_not_longer_dotted_numbers() -> None:
    out = _run(
        [{"type": "redact", "patterns": ["ipv4"]}],
        _lines('10.1.2.3 - - "GET /" from 192.168.0.1. build 1.2.3.4.5, 5.1.2.3.4 12345.1.1.1'),
    )
    assert out[0][1] == (
        '[REDACTED] - - "GET /" from [REDACTED]. build 1.2.3.4.5, 5.1.2.3.4 12345.1.1.1'
    )


def test_redact_takes_your_own_regex_and_fields_other_than_the_message() -> None:
    events: list[records.Event] = [(0, "session=abc123", {"url": "/x?session=zz9", "n": 3}, None)]
    out = _run(
        [
            {
                "type": "redact",
                "fields": ["message", "url", "n"],
                "patterns": [{"regex": "(session=)\\w+", "replacement": "\\1***"}],
            }
        ],
        events,
    )
    assert out == [(0, "session=***", {"url": "/x?session=***", "n": 3}, None)]


def test_the_luhn_check_tells_card_numbers_from_other_long_numbers() -> None:
    assert redaction.luhn("4111 1111 1111 1111")
    assert redaction.luhn("5500-0000-0000-0004")
    assert not redaction.luhn("4111111111111112")


def test_parse_reads_logfmt_json_regex_and_cri_into_fields() -> None:
    logfmt = _run(
        [{"type": "parse", "format": "logfmt"}],
        _lines('level=warn msg="disk at 91%" used=91 ts=2024-01-02T03:04:05Z'),
    )
    assert logfmt == [(0, "disk at 91%", {"level": "warn", "used": "91"}, 1704164645 * 10**9)]
    events: list[records.Event] = [(0, "x", {"log": '{"msg": "hi", "severity": "error"}'}, None)]
    json = _run([{"type": "parse", "format": "json", "field": "log"}], events)
    assert json == [(0, "hi", {"level": "error"}, None)]
    regex = _run(
        [{"type": "parse", "format": "regex", "regex": "^(?<level>\\w+) (?<message>.*)$"}],
        _lines("ERROR it broke"),
    )
    assert regex == [(0, "it broke", {"level": "ERROR"}, None)]
    cri = _run(
        [{"type": "parse", "format": "cri"}],
        _lines("2024-01-02T03:04:05.5Z stderr P part of a line"),
    )
    assert cri == [
        (0, "part of a line", {"stream": "stderr", "partial": True}, 1704164645_500_000_000)
    ]


def test_what_parse_cannot_parse_passes_unchanged_and_is_counted() -> None:
    registry = metering.Registry()
    events = _lines("not json", '{"message": "json"}')
    out = _run([{"type": "parse", "format": "json"}], events, metrics=registry)
    assert [e[1] for e in out] == ["not json", "json"]
    assert 'sidecarkit_logs_stage_unparsed_total{stage="parse"} 1' in registry.render().decode()


def test_throttle_holds_the_rate_per_key_under_a_tenfold_flood_and_counts_the_drops() -> None:
    registry = metering.Registry()
    rate, seconds = 200, 20
    # Ten times the rate for each of two levels, every record stamped with its own time.
    events: list[records.Event] = []
    for n in range(rate * 20 * seconds):
        level = "debug" if n % 2 else "info"
        events.append((n, f"line {n}", {"level": level}, T0 + n * 10**9 // (rate * 20)))
    pipeline = staging.compile(
        stages.from_config([{"type": "throttle", "key": "level", "rate": rate}], "stages"),
        metrics=registry,
    )
    assert pipeline is not None
    passed: list[records.Event] = []
    for start in range(0, len(events), 1000):  # groups as the shipper hands them over
        passed += pipeline(events[start : start + 1000], T0)
    per_second: dict[tuple[str, int], int] = {}
    for event in passed:
        assert event[2] is not None
        assert event[3] is not None
        second = (event[3] - T0) // 10**9
        key = (event[2]["level"], second)
        per_second[key] = per_second.get(key, 0) + 1
    assert len(per_second) == 2 * seconds
    for (level, second), count in per_second.items():
        assert abs(count - rate) <= rate * 0.02, (level, second, count)
    text = registry.render().decode()
    dropped = len(events) - len(passed)
    assert dropped == 2 * seconds * (rate * 10 - rate)
    assert f'sidecarkit_logs_throttled_total{{stage="throttle",key="info"}} {dropped // 2}' in text
    assert f'sidecarkit_logs_stage_dropped_total{{stage="throttle"}} {dropped}' in text


def test_throttle_uses_the_read_time_for_records_without_their_own() -> None:
    pipeline = staging.compile((stages.Throttle("t", rate=3, per=1.0),))
    assert pipeline is not None
    assert len(pipeline(_lines(*"abcdef"), T0)) == 3
    assert len(pipeline(_lines(*"abcdef"), T0 + 10**9)) == 3


def test_a_record_stamped_far_in_the_future_does_not_silence_the_key() -> None:
    pipeline = staging.compile((stages.Throttle("t", rate=2, per=1.0),))
    assert pipeline is not None
    future: list[records.Event] = [(0, "2099", None, T0 + 3_000_000 * 10**9)]
    assert len(pipeline(future, T0)) == 1
    now: list[records.Event] = [(n, "now", None, T0 + n) for n in range(5)]
    assert len(pipeline(now, T0)) == 2


def test_each_stage_counts_what_it_took_in_passed_on_and_dropped() -> None:
    registry = metering.Registry()
    _run(
        [{"type": "grep", "drop": "noise"}, {"type": "redact", "patterns": "email"}],
        _lines("noise", "a@b.example", "noise", "ok"),
        metrics=registry,
    )
    text = registry.render().decode()
    assert 'sidecarkit_logs_stage_in_total{stage="grep"} 4' in text
    assert 'sidecarkit_logs_stage_out_total{stage="grep"} 2' in text
    assert 'sidecarkit_logs_stage_dropped_total{stage="grep"} 2' in text
    assert 'sidecarkit_logs_stage_in_total{stage="redact"} 2' in text
    assert 'sidecarkit_logs_stage_dropped_total{stage="redact"} 0' in text


def test_sample_keeps_one_record_in_rate_counting_across_groups_and_counts_the_rest_dropped() -> (
    None
):
    registry = metering.Registry()
    pipeline = staging.compile(
        stages.from_config([{"type": "sample", "rate": 10}], "stages"), metrics=registry
    )
    assert pipeline is not None
    kept: list[str] = []
    for group in range(7):  # groups of 13 lines: the count goes on from one to the next
        kept += [e[1] for e in pipeline(_lines(*(f"{group}-{n}" for n in range(13))), T0)]
    everything = [f"{g}-{n}" for g in range(7) for n in range(13)]
    assert kept == everything[::10]
    text = registry.render().decode()
    assert f'sidecarkit_logs_stage_dropped_total{{stage="sample"}} {91 - len(kept)}' in text
    assert 'sidecarkit_logs_stage_out_total{stage="sample"} 10' in text


def test_sample_by_key_keeps_or_drops_a_values_records_together_the_same_on_every_run() -> None:
    config = [{"type": "sample", "rate": 4, "key": "trace_id"}]
    events: list[records.Event] = [
        (n, f"line {n}", {"trace_id": f"{n % 200:032x}"}, None) for n in range(2000)
    ]
    kept = _run(config, events)
    traces = {event[2]["trace_id"] for event in kept if event[2]}
    assert 30 <= len(traces) <= 70, "about one trace in four"
    assert len(kept) == 10 * len(traces), "a kept trace keeps all its lines"
    again = _run(config, list(reversed(events)))
    assert {event[2]["trace_id"] for event in again if event[2]} == traces, (
        "the same on every run and agent"
    )


def test_sample_by_key_counts_records_without_the_key_one_in_rate() -> None:
    config = [{"type": "sample", "rate": 3, "key": "trace_id"}]
    kept = _run(config, _lines(*(f"no trace {n}" for n in range(9))))
    assert [e[1] for e in kept] == ["no trace 0", "no trace 3", "no trace 6"]
