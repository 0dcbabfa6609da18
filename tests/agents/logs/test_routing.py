"""Routing: every sink gets the records its rule takes, and offsets wait for exactly those sinks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.logs import offsets, records, routing, settings, shipping, tailing
from tests.agents.logs.test_shipping import _offset, _Sink, _until


def _group(path: str, *fields: dict[str, Any] | None) -> records.Group:
    events: list[records.Event] = [(n, f"line {n}", f, None) for n, f in enumerate(fields)]
    return records.Group(path, path, events, 1_000)


def _rule(**given: Any) -> routing.Match:
    return routing.parse_match(given, "sinks.x.match")


def test_a_sink_without_a_rule_gets_the_whole_batch_as_it_is() -> None:
    groups = [_group("/a.log", None, None)]
    routes, unrouted = routing.Router([None]).split(groups, [20], 2, 20)
    assert routes[0] is not None
    assert routes[0].groups is groups
    assert (routes[0].events, routes[0].size, unrouted) == (2, 20, 0)


def test_file_rules_take_whole_groups_and_keep_raw_bytes() -> None:
    raw = records.Group("/var/log/app/audit.log", "k", [], 5, b"x\ny\n")
    other = records.Group("/var/log/app/app.log", "k2", [], 5, b"z\n")
    router = routing.Router([_rule(files="*/audit*.log"), _rule(files=["/var/log/app/app.log"])])
    routes, unrouted = router.split([raw, other], [4, 2], 3, 6)
    audit, app = routes
    assert audit is not None
    assert audit.groups == [raw]
    assert audit.groups[0] is raw
    assert (audit.events, audit.size) == (2, 4)
    assert app is not None
    assert app.groups == [other]
    assert (app.events, app.size) == (1, 2)
    assert unrouted == 0


def test_level_and_field_rules_pick_records_and_count_what_no_sink_took() -> None:
    group = _group(
        "/a.log",
        {"level": "ERROR", "team": "pay"},
        {"level": "info", "team": "pay"},
        {"level": "error", "team": "ops", "code": 500},
        None,
    )
    router = routing.Router(
        [
            _rule(level=["error", "fatal"]),
            _rule(fields={"team": "pay"}),
            _rule(fields={"code": 500}),
        ]
    )
    routes, unrouted = router.split([group], [400], 4, 400)
    errors, pay, code = routes
    assert errors is not None
    assert [e[1] for e in errors.groups[0].events] == ["line 0", "line 2"]
    assert errors.size == 200, "half the group's records: half its bytes"
    assert pay is not None
    assert [e[1] for e in pay.groups[0].events] == ["line 0", "line 1"]
    assert code is not None
    assert [e[1] for e in code.groups[0].events] == ["line 2"]
    assert errors.groups[0].events[1][3] == 1_000 + 2, "a record keeps its time in the group"
    assert unrouted == 1, "the record without fields went nowhere"


def test_an_unmatched_sink_gets_what_no_rule_took_and_a_catch_all_does_not_count() -> None:
    errors = _group("/a.log", {"level": "error"}, {"level": "info"}, None)
    audit = records.Group("/audit.log", "k", [], 5, b"x\ny\n")
    other = records.Group("/other.log", "k2", [], 5, b"z\n")
    router = routing.Router(
        [_rule(level="error"), _rule(files="/audit.log"), None, _rule(unmatched=True)]
    )
    routes, unrouted = router.split([errors, audit, other], [30, 4, 2], 6, 36)
    rest = routes[3]
    assert rest is not None
    assert [(g.source, [e[1] for e in g.events]) for g in rest.groups[:1]] == [
        ("/a.log", ["line 1", "line 2"])
    ]
    assert rest.groups[1] is other, "a group no rule took goes whole, bytes and all"
    assert (rest.events, rest.size) == (3, 20 + 2)
    assert routes[2] is not None
    assert routes[2].groups[0] is errors
    assert unrouted == 0
    assert routing.Router([_rule(level="error")]).split([errors], [30], 3, 30)[1] == 2
    assert _rule(unmatched=True).describe() == "what no other rule takes"


def test_a_rule_must_hold_in_every_part() -> None:
    group = _group("/x/app.log", {"level": "error"})
    router = routing.Router(
        [_rule(files="/y/*", level="error"), _rule(level="error", files="/x/*")]
    )
    routes, _ = router.split([group], [10], 1, 10)
    assert routes[0] is None
    assert routes[1] is not None
    assert routes[1].groups[0] is group


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "sinks.x.match: a match rule is a mapping"),
        ({"levels": "error"}, "sinks.x.match: unknown key 'levels'; a match rule takes files"),
        ({"level": []}, "sinks.x.match.level: give at least one value"),
        ({"fields": ["team"]}, "sinks.x.match.fields: a mapping of field names"),
        ({"fields": {"team": {"a": 1}}}, "sinks.x.match.fields.team: must be a value or a list"),
        ({"unmatched": "yes"}, "sinks.x.match: unmatched takes only the value true"),
        ({"unmatched": True, "level": "error"}, "sinks.x.match: unmatched takes only the value"),
    ],
)
def test_bad_rules_are_refused_with_the_key_and_the_fix(given: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        routing.parse_match(given, "sinks.x.match")


def test_sinks_as_a_mapping_of_names_with_rules() -> None:
    config = settings.from_mapping(
        {
            "sinks": {
                "errors": {"kind": "stdout", "match": {"level": "error"}},
                "everything": {"kind": "stdout", "endpoint": "json"},
            }
        },
        source="logs.yaml",
    )
    assert [(s.name, s.kind, s.endpoint) for s in config.sinks] == [
        ("errors", "stdout", None),
        ("everything", "stdout", "json"),
    ]
    assert config.sinks[0].match == routing.Match(levels=("error",))
    assert config.sinks[1].match is None


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        (
            {"a": {"kind": "stdout", "match": {"level": 3, "x": 1}}},
            "sinks.a.match: unknown key 'x'",
        ),
        ({"a": {"kind": "stdout", "matches": {}}}, "sinks.a: unknown key 'matches'"),
        ({"a": "stdout"}, "sinks.a: a sink is a mapping such as"),
        ({"a": {"kind": "nope"}}, "sinks.a: unknown sink 'nope'"),
        ({"a": {"kind": "stdout", "name": "b"}}, "sinks.a: the sink is named by its key"),
    ],
)
def test_bad_sink_mappings_name_the_sink(sinks: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^logs.yaml: " + message):
        settings.from_mapping({"sinks": sinks}, source="logs.yaml")


class _Fields:
    """A parser that reads ``LEVEL text`` lines into a level field."""

    held_bytes = 0
    held_lines = 0

    def feed(self, lines: list[str], first: int, now: float) -> list[records.Event]:
        return [(n, s, {"level": s.split(" ", 1)[0]}, None) for n, s in enumerate(lines, first)]

    def flush(self, now: float, *, force: bool = False) -> list[records.Event]:
        return []


def _routed(
    tmp: Path, sinks: list[records.Sink], rules: list[routing.Match | None], **tuning: int
) -> tuple[shipping.Shipper, Any]:
    store = offsets.OffsetStore(tmp / "state" / "offsets.json")
    source = shipping.Source("app", tailing.Tailer(str(tmp / "*.log"), read_size=4096), _Fields)
    params: dict[str, float | int] = {"batch_wait": 0.01, "poll": 0.01, "retry_initial": 0.01}
    params.update(tuning)
    shipper = shipping.Shipper(
        [source],
        sinks,
        labels={"pod": "p"},
        store=store,
        tuning=shipping.Tuning(checkpoint_interval=0.0, **params),  # type: ignore[arg-type]
        routes=rules,
    )
    return shipper, store


def test_offsets_wait_only_for_the_sinks_a_batch_went_to(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("info a\ninfo b\n")

    async def main() -> None:
        every, errors = _Sink("every"), _Sink("errors")
        errors.open.clear()  # stalled, but nothing is routed to it
        shipper, store = _routed(tmp_path, [every, errors], [None, _rule(level="error")])
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: _offset(store) == log.stat().st_size)
        assert every.got == ["info a", "info b"]
        assert errors.sends == 0
        with log.open("a") as f:
            f.write("error c\ninfo d\n")
        await _until(lambda: every.got[-1:] == ["info d"])
        await asyncio.sleep(0.1)
        assert _offset(store) == 14, "the error line waits for the stalled errors sink"
        errors.open.set()
        await _until(lambda: _offset(store) == log.stat().st_size)
        assert errors.got == ["error c"]
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_a_stalled_sink_lets_the_others_lead_by_max_lead_then_holds_reading(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    lines = [f"{'error' if i % 100 == 0 else 'info'} {i:07d} {'x' * 80}" for i in range(20_000)]
    log.write_text("".join(line + "\n" for line in lines))  # 1.8 MB

    async def main() -> None:
        every, errors = _Sink("every"), _Sink("errors")
        errors.open.clear()
        lead, inflight = 256 << 10, 64 << 10
        shipper, store = _routed(
            tmp_path,
            [every, errors],
            [None, _rule(level="error")],
            max_lead=lead,
            max_inflight=inflight,
            batch_bytes=8 << 10,
        )
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: len(every.got) > 0)
        await asyncio.sleep(0.5)
        read = shipper.sources[0].tailer.bytes_read
        assert read > 2 * inflight, "the healthy sink ran ahead of the stalled one"
        assert read <= lead + 4096, f"read {read} bytes past the stalled sink's oldest batch"
        assert _offset(store) == 0
        assert shipper.sink_lag()["errors"][0] > 0
        errors.open.set()
        await _until(lambda: _offset(store) == log.stat().st_size)
        assert every.got == lines
        assert errors.got == [line for line in lines if line.startswith("error")]
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_a_bad_rule_stops_the_agent_before_start_with_exit_status_2(
    tmp_path: Path,
) -> None:
    config = tmp_path / "logs.yaml"
    config.write_text(
        "paths: /tmp/none/*.log\n"
        "sinks:\n"
        "  errors:\n"
        "    kind: stdout\n"
        "    match: {levels: [error]}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "logs", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2  # every bad setting of the logs agent, as --check-config
    assert done.stderr.strip() == (
        f"sidecarkit: error: {config}: sinks.errors.match: unknown key 'levels'; "
        "a match rule takes files, level, fields, unmatched"
    )


def test_errors_to_one_sink_and_the_rest_to_another_every_line_once(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    lines = [f"{'error' if i % 7 == 0 else 'info'} {i}" for i in range(500)]
    log.write_text("".join(line + "\n" for line in lines))

    async def main() -> None:
        errors, rest = _Sink("errors"), _Sink("rest")
        shipper, store = _routed(
            tmp_path, [errors, rest], [_rule(level="error"), _rule(unmatched=True)]
        )
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: _offset(store) == log.stat().st_size)
        assert errors.got == [line for line in lines if line.startswith("error")]
        assert rest.got == [line for line in lines if line.startswith("info")]
        assert "sidecarkit_logs_events_unrouted_total 0" in shipper.metrics.render().decode()
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_check_config_prints_each_sinks_match_rule(tmp_path: Path) -> None:
    config = tmp_path / "logs.yaml"
    config.write_text(
        "paths: /tmp/none/*.log\n"
        "sinks:\n"
        "  errors: {kind: stdout, match: {level: [error, fatal]}}\n"
        "  rest: {kind: stdout, match: {unmatched: true}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "logs", "--check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "  errors: stdout (takes level error or fatal)\n" in done.stdout
    assert "  rest: stdout (takes what no other rule takes)\n" in done.stdout
    assert "spool of a stalled sink: none (a stalled sink pauses reading" in done.stdout


def test_check_config_says_where_a_stalled_sink_is_spooled(tmp_path: Path) -> None:
    config = tmp_path / "logs.yaml"
    config.write_text(
        f"paths: /tmp/none/*.log\noffsets_dir: {tmp_path}/state\nspool_max: 1048576\n"
        "spool_after: 2s\nsinks:\n  a: {kind: stdout}\n  b: {kind: stdout}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "logs", "--check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"spool of a stalled sink: {tmp_path}/state/spool, 1048576 bytes per sink, after 2 s\n"
        in done.stdout
    )
