"""Parsers of the logs agent: formats, partial and multiline joining, held bytes, errors.

The Fluent Bit cases in ``../shared/corpus/logs`` are the reference. Fluent Bit's records keep
the newline each line ended with and add one when it joins lines; our events are lines without
their newline, joined with ``\\n``. So an expected Fluent Bit record corresponds to our message
with its one final ``\\n`` removed; nothing else is adjusted.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecarkit.agents.logs import parsing, records

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "logs"
MULTILINE = CORPUS / "fluent-bit-multiline"
TAIL = CORPUS / "fluent-bit-tail"

needs_corpus = pytest.mark.skipif(
    not MULTILINE.is_dir(), reason="../shared/corpus is not next to the repository"
)

# Each case's Fluent Bit parser chain, as a spec. "docker, cri" chains are our per-line
# "container" format; a case fed to Fluent Bit as {"log": line} is a raw line to us.
MULTILINE_CASES: dict[str, parsing.ParserSpec] = {
    "container_mix": parsing.ParserSpec(format="container"),
    "cri": parsing.ParserSpec(format="container"),
    "docker": parsing.ParserSpec(format="container"),
    "docker_cri_chain": parsing.ParserSpec(format="container"),
    "elastic": parsing.ParserSpec(multiline_start=r"^\[", multiline_continue=r"^\s+"),
    "endswith": parsing.ParserSpec(multiline="backslash"),
    "go": parsing.ParserSpec(multiline="go"),
    "issue_3817_1": parsing.ParserSpec(
        format="cri", multiline_start=r"- $", multiline_continue=r"^([1-9]).*$"
    ),
    "java": parsing.ParserSpec(multiline="java"),
    "python": parsing.ParserSpec(multiline="python"),
    "ruby": parsing.ParserSpec(multiline="ruby"),
}

# in_tail's docker mode with Docker_Mode_Parser docker_multiline, whose regex
# `(?<log>^{"log":"\d{4}-\d{2}-\d{2}.*)` matches the raw line of a record's first line: for us,
# a message starting with a date.
DOCKER_DATED = parsing.ParserSpec(format="docker", multiline_start=r"^\d{4}-\d{2}-\d{2}")
TAIL_CASES: dict[str, parsing.ParserSpec] = {
    "3943": parsing.ParserSpec(),
    "dockermode": parsing.ParserSpec(format="docker"),
    "dockermode_splitted_line": parsing.ParserSpec(format="docker"),
    "dockermode_multiple_lines": DOCKER_DATED,
    "dockermode_splitted_multiple_lines": DOCKER_DATED,
    "dockermode_firstline_detection": DOCKER_DATED,
    # parsers_multiline_json.conf: parser json, key_content message, rules start_state
    # /(Dec \d+ \d+\:\d+\:\d+)(.*)/ -> cont /^\s+at.*/.
    "multiline_001": parsing.ParserSpec(
        format="json",
        message_key="message",
        multiline_start=r"(Dec \d+ \d+\:\d+\:\d+)(.*)",
        multiline_continue=r"^\s+at.*",
    ),
}


def _run(
    spec: parsing.ParserSpec, lines: list[str], chunk: int | None = None, first: int = 0
) -> list[records.Event]:
    parser = parsing.compile(spec)()
    step = chunk or max(len(lines), 1)
    events: list[records.Event] = []
    for at in range(0, len(lines), step):
        events += parser.feed(lines[at : at + step], first + at, 0.0)
    events += parser.flush(0.0, force=True)
    assert parser.held_bytes == 0
    return events


def _case(name: str) -> dict[str, Any]:
    case: dict[str, Any] = json.loads((MULTILINE / f"{name}.json").read_text())
    return case


def _file_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8", "surrogateescape") for line in lines]


def _size(lines: list[str]) -> int:
    return sum(len(line.encode("utf-8", "surrogateescape")) + 1 for line in lines)


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


# --- the Fluent Bit multiline corpus --------------------------------------------------------------


@needs_corpus
def test_every_multiline_case_of_the_corpus_has_a_spec() -> None:
    assert {p.stem for p in MULTILINE.glob("*.json")} == set(MULTILINE_CASES)
    assert {p.stem for p in (MULTILINE / "rendered").glob("*.log")} <= set(MULTILINE_CASES)


@needs_corpus
@pytest.mark.parametrize("name", sorted(MULTILINE_CASES))
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_multiline_case_joins_records_as_fluent_bit_does(name: str, chunk: int | None) -> None:
    case = _case(name)
    # A record is one line; those ending in a newline carry it, the ones that contain a raw
    # newline inside (docker's deliberately broken JSON) are still one record, fed as one line.
    lines = [record.removesuffix("\n") for record in case["input_records"]]
    events = _run(MULTILINE_CASES[name], lines, chunk)
    assert [e[1] for e in events] == [r.removesuffix("\n") for r in case["expected_records"]]
    assert len({e[0] for e in events}) == len(events)
    assert all(0 <= e[0] < len(lines) for e in events)


@needs_corpus
@pytest.mark.parametrize("name", sorted(p.stem for p in (MULTILINE / "rendered").glob("*.log")))
@pytest.mark.parametrize("chunk", [None, 1, 2, 7])
def test_rendered_file_parses_like_its_records(name: str, chunk: int | None) -> None:
    lines = _file_lines(MULTILINE / "rendered" / f"{name}.log")
    case = _case(name)
    assert len(lines) == len(case["input_records"])
    events = _run(MULTILINE_CASES[name], lines, chunk)
    assert [e[1] for e in events] == [r.removesuffix("\n") for r in case["expected_records"]]
    records_fed = [record.removesuffix("\n") for record in case["input_records"]]
    assert events == _run(MULTILINE_CASES[name], records_fed)


@needs_corpus
def test_first_lines_of_records_are_their_line_numbers() -> None:
    lines = _file_lines(MULTILINE / "rendered" / "java.log")
    assert [e[0] for e in _run(MULTILINE_CASES["java"], lines, first=100)] == [100, 107]
    cri = _file_lines(MULTILINE / "rendered" / "cri.log")
    assert [e[0] for e in _run(MULTILINE_CASES["cri"], cri, 1)] == [0, 3, 6, 9, 12, 13, 14, 15]
    mix = [r.removesuffix("\n") for r in _case("container_mix")["input_records"]]
    # Completion order: stdout's docker partial (line 2) completes only at line 13.
    assert [e[0] for e in _run(MULTILINE_CASES["container_mix"], mix)] == [
        0, 1, 4, 6, 7, 10, 2, 14,
    ]  # fmt: skip


@needs_corpus
def test_container_events_carry_stream_and_time() -> None:
    cri = _file_lines(MULTILINE / "rendered" / "cri.log")
    first = _run(MULTILINE_CASES["cri"], cri)[0]
    assert first == (
        0,
        "1a. some multiline log",
        {"stream": "stdout"},
        _ns("2019-05-07T18:57:50+00:00") + 904275087,
    )
    mix = [r.removesuffix("\n") for r in _case("container_mix")["input_records"]]
    joined = _run(MULTILINE_CASES["container_mix"], mix)[6]
    assert joined == (2, "bbccdd-out", {"stream": "stdout"}, _ns("2021-02-01T16:45:03Z") + 12320000)


# --- the Fluent Bit tail corpus ---------------------------------------------------------------


@needs_corpus
def test_every_tail_case_of_the_corpus_has_a_spec() -> None:
    assert {p.stem for p in (TAIL / "log").glob("*.log")} == set(TAIL_CASES)
    assert '(?<log>^{"log":"\\d{4}-\\d{2}-\\d{2}.*)' in (TAIL / "parsers.conf").read_text()
    rules = (TAIL / "parsers_multiline_json.conf").read_text()
    spec = TAIL_CASES["multiline_001"]
    assert f'"/{spec.multiline_start}/"' in rules
    assert f'"/{spec.multiline_continue}/"' in rules
    assert re.search(r"key_content\s+message", rules)


@needs_corpus
@pytest.mark.parametrize("name", sorted(TAIL_CASES))
@pytest.mark.parametrize("chunk", [None, 1])
def test_tail_case_gives_fluent_bits_records(name: str, chunk: int | None) -> None:
    lines = _file_lines(TAIL / "log" / f"{name}.log")
    expected = [
        json.loads(text) for text in (TAIL / "out" / f"{name}.out").read_text().splitlines()
    ]
    events = _run(TAIL_CASES[name], lines, chunk)
    if name == "multiline_001":
        # The json parser maps the time key out of the record; the rest of it are our fields.
        got: list[dict[str, Any]] = [
            {**(fields or {}), "message": message, "time_ns": time_ns}
            for _, message, fields, time_ns in events
        ]
        want = [
            {**{k: v for k, v in record.items() if k != "time"}, "time_ns": _ns(record["time"])}
            for record in expected
        ]
        assert got == want
        assert len(expected) == 1
        assert expected[0]["message"].count("\n") == 5
    else:
        # Records of the docker and raw cases hold just "log", with docker's final newline.
        assert all(set(record) == {"log"} for record in expected)
        assert [(e[1], e[2], e[3]) for e in events] == [
            (record["log"].removesuffix("\n"), None, None) for record in expected
        ]


# --- formats ----------------------------------------------------------------------------------


def test_raw_gives_one_event_per_line_without_fields() -> None:
    parser = parsing.compile(parsing.ParserSpec())()
    lines = ["a", "", "é \udcff", "tail\r"]
    assert parser.feed(lines, 41, 0.0) == [
        (41, "a", None, None),
        (42, "", None, None),
        (43, "é \udcff", None, None),
        (44, "tail", None, None),
    ]
    assert parser.held_bytes == 0
    assert parser.flush(9.0, force=True) == []


def test_json_maps_message_time_and_level_and_keeps_the_rest() -> None:
    parser = parsing.compile(parsing.ParserSpec(format="json"))()
    lines = [
        '{"msg": "started", "ts": 1700000000, "severity": "info", "port": 8080}',
        '{"message": "ms", "time": 1700000000123, "level": "warn"}',
        '{"log": "rfc", "@timestamp": "2024-01-02T03:04:05.5+01:00", "user": {"id": 1}}',
        '{"message": {"nested": true}, "time": "yesterday"}',
        '{"no": "message key"}',
        "[1, 2]",
        "not json {",
        '{"message": "raw control\tchar", "lvl": "debug"}',
    ]
    assert parser.feed(lines, 0, 0.0) == [
        (0, "started", {"port": 8080, "level": "info"}, 1700000000 * 10**9),
        (1, "ms", {"level": "warn"}, 1700000000123 * 10**6),
        (2, "rfc", {"user": {"id": 1}}, _ns("2024-01-02T02:04:05+00:00") + 500_000_000),
        (3, '{"nested":true}', {"time": "yesterday"}, None),
        (4, '{"no": "message key"}', {"no": "message key"}, None),
        (5, "[1, 2]", None, None),
        (6, "not json {", None, None),
        (7, "raw control\tchar", {"level": "debug"}, None),
    ]


@pytest.mark.parametrize(
    ("value", "time_ns"),
    [
        ('"1700000000"', 1700000000 * 10**9),
        ("1700000000.25", 1700000000250000000),
        ("1700000000123456", 1700000000123456000),
        ('"2024-01-02 03:04:05.1234567891+00:00"', 1704164645123456789),
        ('"nan"', None),
        ('"inf"', None),
        ('"\u00b2"', None),
        ("true", None),
        ('"2024-01-02T03:04:05.+00:00"', None),
        ('"2024-01-02T03:04:05+0100"', None),
    ],
)
def test_json_times_in_every_accepted_form_and_the_rest_kept_as_fields(
    value: str, time_ns: int | None
) -> None:
    parser = parsing.compile(parsing.ParserSpec(format="json"))()
    [event] = parser.feed(['{"message": "m", "time": ' + value + "}"], 0, 0.0)
    assert event[3] == time_ns
    assert event[2] == (None if time_ns is not None else {"time": json.loads(value)})


def test_json_keys_can_be_named() -> None:
    spec = parsing.ParserSpec(format="json", message_key="text", time_key="at", level_key="sev")
    line = '{"text": "hi", "at": "2024-01-02T03:04:05Z", "sev": "E", "message": "other"}'
    event = parsing.compile(spec)().feed([line], 0, 0.0)[0]
    assert event == (0, "hi", {"message": "other", "level": "E"}, _ns("2024-01-02T03:04:05Z"))


def test_regex_takes_named_groups_and_passes_other_lines_through() -> None:
    spec = parsing.ParserSpec(
        format="regex",
        regex=r"^(?<time>\S+) (?P<level>[A-Z]+) \[(?P<thread>[^\]]+)\] (?P<message>.*)$",
    )
    parser = parsing.compile(spec)()
    events = parser.feed(
        ["2024-01-02T03:04:05.000001Z INFO [main] hello world", "no match here"], 5, 0.0
    )
    assert events == [
        (5, "hello world", {"level": "INFO", "thread": "main"}, _ns("2024-01-02T03:04:05Z") + 1000),
        (6, "no match here", None, None),
    ]


def test_regex_reads_onigmo_groups_but_not_escaped_parentheses() -> None:
    spec = parsing.ParserSpec(format="regex", regex=r"^\(?<x> (?<message>.*)$")
    events = parsing.compile(spec)().feed(["(<x> hello", "<x> bye", "x y"], 0, 0.0)
    assert events == [(0, "hello", None, None), (1, "bye", None, None), (2, "x y", None, None)]


def test_cri_reads_times_with_offsets_and_empty_content() -> None:
    parser = parsing.compile(parsing.ParserSpec(format="cri"))()
    events = parser.feed(
        [
            "2024-01-02T03:04:05.123456789+02:00 stderr F boom  with  spaces",
            "2024-01-02T03:04:05Z stdout F",
            "2024-01-02T03:04:05-05:30 stdout F ",
            "2024-13-02T03:04:05Z stdout F not a valid date",
            "2024-01-02T03:04:05Z stdin F not a stream",
        ],
        0,
        0.0,
    )
    base = _ns("2024-01-02T03:04:05Z")
    assert events == [
        (0, "boom  with  spaces", {"stream": "stderr"}, base - 7200 * 10**9 + 123456789),
        (1, "", {"stream": "stdout"}, base),
        (2, "", {"stream": "stdout"}, base + 19800 * 10**9),
        (3, "2024-13-02T03:04:05Z stdout F not a valid date", None, None),
        (4, "2024-01-02T03:04:05Z stdin F not a stream", None, None),
    ]


def test_docker_keeps_extra_keys_and_drops_the_final_newline_only() -> None:
    parser = parsing.compile(parsing.ParserSpec(format="docker"))()
    lines = [
        '{"log":"a\\r\\n","stream":"stdout","time":"2024-01-02T03:04:05.1Z","attrs":{"k":"v"}}',
        '{"log":"two\\n\\n","stream":"stderr"}',
    ]
    assert parser.feed(lines, 0, 0.0) == [
        (0, "a", {"stream": "stdout", "attrs": {"k": "v"}}, _ns("2024-01-02T03:04:05Z") + 10**8),
        (1, "two\n", {"stream": "stderr"}, None),
    ]


def test_a_line_outside_the_container_format_ends_what_is_held_first() -> None:
    spec = parsing.ParserSpec(format="cri", multiline="java")
    parser = parsing.compile(spec)()
    events = parser.feed(
        [
            "2024-01-02T03:04:05Z stdout F java.lang.Error: x",
            "2024-01-02T03:04:05Z stdout F \tat a.B.c(B.java:1)",
            "2024-01-02T03:04:05Z stderr P half ",
            "plain text",
        ],
        0,
        0.0,
    )
    assert [e[:2] for e in events] == [
        (0, "java.lang.Error: x\n\tat a.B.c(B.java:1)"),
        (2, "half "),
    ]
    assert parser.held_bytes == len("plain text") + 1
    assert parser.flush(0.0, force=True) == [(3, "plain text", None, None)]


def test_container_passes_json_that_is_not_dockers_through_as_text() -> None:
    parser = parsing.compile(parsing.ParserSpec(format="container"))()
    lines = ['{"log":"d","stream":"stdout"}', '{"msg": "app json"}', f"{T} stdout F c"]
    assert parser.feed(lines, 0, 0.0) == [
        (0, "d", {"stream": "stdout"}, None),
        (1, '{"msg": "app json"}', None, None),
        (2, "c", {"stream": "stdout"}, _ns("2024-01-02T03:04:05Z") + 123000000),
    ]


def test_records_held_in_several_streams_leave_oldest_first() -> None:
    parser = parsing.compile(parsing.ParserSpec(format="cri", multiline="java"))()
    lines = [f"{T} stdout F a", f"{T} stderr F b", f"{T} stdout F c", "raw"]
    assert [e[:2] for e in parser.feed(lines, 0, 0.0)] == [(0, "a"), (1, "b"), (2, "c")]


# --- multiline presets beyond the corpus -------------------------------------------------------


def _messages(spec: parsing.ParserSpec, text: str) -> list[str]:
    return [e[1] for e in _run(spec, text.split("\n"))]


def test_java_joins_logback_message_exception_and_common_frames() -> None:
    text = (
        "12:00:00 ERROR request failed\n"
        "java.lang.IllegalStateException: bad\n"
        "\tat a.B.c(B.java:1)\n"
        "Caused by: java.io.IOException: disk\n"
        "\t... 12 common frames omitted\n"
        "12:00:01 INFO next"
    )
    first, *rest = text.split("\n")
    assert _messages(parsing.ParserSpec(multiline="java"), text) == [
        "\n".join([first, *rest[:-1]]),
        rest[-1],
    ]


def test_python_joins_chained_tracebacks_and_releases_a_trailing_blank_line() -> None:
    trace = (
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n'
        "    d['x']\n"
        "    ~^^^^^\n"
        "KeyError: 'x'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "a.py", line 3, in <module>\n'
        "    raise ValueError\n"
        "ValueError"
    )
    text = "ERROR:root:oops\n" + trace + "\n\nINFO:root:after"
    assert _messages(parsing.ParserSpec(multiline="python"), text) == [
        "ERROR:root:oops\n" + trace,
        "",
        "INFO:root:after",
    ]


def test_go_panics_keep_blank_lines_inside_and_not_after() -> None:
    text = (
        "fatal error: all goroutines are asleep - deadlock!\n"
        "\n"
        "goroutine 1 gp=0xc000002380 m=0 mp=0x5f4f40 [chan receive]:\n"
        "main.(*T).run({0x1, 0x2})\n"
        "\t/app/main.go:9 +0x2d\n"
        "created by main.main in goroutine 1\n"
        "\t/app/main.go:5 +0x58\n"
        "\n"
        "exit status 2"
    )
    assert _messages(parsing.ParserSpec(multiline="go"), text) == [
        text.rsplit("\n\n", 1)[0],
        "",
        "exit status 2",
    ]


def test_custom_start_alone_joins_every_other_line() -> None:
    spec = parsing.ParserSpec(multiline_start=r"^\d{4}-")
    text = "orphan\n2024- a\n  b\nc\n2024- d"
    assert _messages(spec, text) == ["orphan", "2024- a\n  b\nc", "2024- d"]


def test_custom_continue_alone_lets_any_line_begin_a_record() -> None:
    spec = parsing.ParserSpec(multiline_continue=r"^\s")
    assert _messages(spec, "a\n b\nc\nd\n e") == ["a\n b", "c", "d\n e"]


def test_multiline_applies_to_json_messages_and_keeps_the_first_records_fields() -> None:
    spec = parsing.ParserSpec(format="json", multiline="java")
    lines = [
        '{"msg": "java.lang.Error: x", "level": "error", "ts": 1}',
        '{"msg": "\\tat a.B.c(B.java:1)", "level": "error", "ts": 2}',
    ]
    assert _run(spec, lines) == [
        (0, "java.lang.Error: x\n\tat a.B.c(B.java:1)", {"level": "error"}, 10**9)
    ]


# --- flush timeout and max_lines ---------------------------------------------------------------


def test_a_held_record_waits_flush_timeout_after_its_last_line() -> None:
    parser = parsing.compile(parsing.ParserSpec(multiline="java", flush_timeout=4.0))()
    assert parser.feed(["java.lang.Error: x"], 0, 100.0) == []
    assert parser.held_bytes == len("java.lang.Error: x") + 1
    assert parser.flush(103.9) == []
    assert parser.feed(["\tat a.B.c(B.java:1)"], 1, 103.0) == []
    assert parser.flush(106.9) == []
    assert parser.held_bytes == len("java.lang.Error: x\n\tat a.B.c(B.java:1)\n")
    assert parser.flush(107.0) == [(0, "java.lang.Error: x\n\tat a.B.c(B.java:1)", None, None)]
    assert parser.held_bytes == 0
    assert parser.flush(999.0, force=True) == []


def test_a_partial_cri_line_is_emitted_as_it_is_after_flush_timeout() -> None:
    parser = parsing.compile(parsing.ParserSpec(format="cri", flush_timeout=0.5))()
    line = "2024-01-02T03:04:05Z stdout P unfinished"
    assert parser.feed([line], 7, 1.0) == []
    assert parser.held_bytes == len(line) + 1
    assert parser.flush(1.4) == []
    assert parser.flush(1.5) == [
        (7, "unfinished", {"stream": "stdout"}, _ns("2024-01-02T03:04:05Z"))
    ]
    assert parser.held_bytes == 0


def test_force_flush_releases_a_trailing_tentative_line_on_its_own() -> None:
    parser = parsing.compile(parsing.ParserSpec(multiline="go"))()
    assert parser.feed(["panic: x", "", "goroutine 1 [running]:", "main.main()", ""], 0, 0.0) == []
    assert parser.held_bytes == len("panic: x\n\ngoroutine 1 [running]:\nmain.main()\n\n")
    assert parser.flush(0.0, force=True) == [
        (0, "panic: x\n\ngoroutine 1 [running]:\nmain.main()", None, None),
        (4, "", None, None),
    ]


def test_max_lines_cuts_a_record_and_the_rest_goes_on_as_new_records() -> None:
    spec = parsing.ParserSpec(multiline="java", max_lines=3)
    lines = ["java.lang.Error: x", *[f"\tat f{i}(F.java:{i})" for i in range(6)], "next"]
    events = _run(spec, lines)
    assert [(e[0], e[1].count("\n") + 1) for e in events] == [(0, 3), (3, 3), (6, 1), (7, 1)]
    assert "\n".join(e[1] for e in events) == "\n".join(lines)


def test_max_lines_bounds_partial_pieces_too() -> None:
    spec = parsing.ParserSpec(format="cri", max_lines=2)
    parser = parsing.compile(spec)()
    tags = ["P a", "P b", "P c", "F d", "F e"]
    events = parser.feed([f"2024-01-02T03:04:05Z stdout {t}" for t in tags], 0, 0.0)
    assert [e[:2] for e in events] == [(0, "ab"), (2, "cd"), (4, "e")]


def test_max_lines_counts_tentative_lines_too() -> None:
    spec = parsing.ParserSpec(multiline="go", max_lines=3)
    lines = ["panic: x", "", "", "", "", "", "goroutine 1 [running]:"]
    assert [e[:2] for e in _run(spec, lines)] == [
        (0, "panic: x\n\n"),
        (3, "\n\n"),
        (6, "goroutine 1 [running]:"),
    ]


def test_max_lines_one_emits_every_line() -> None:
    spec = parsing.ParserSpec(multiline="java", max_lines=1)
    assert _messages(spec, "java.lang.Error: x\n\tat a") == ["java.lang.Error: x", "\tat a"]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (parsing.ParserSpec(format="xml"), r"format 'xml' is not known: use one of raw, json"),
        (parsing.ParserSpec(format="regex"), r"regex is required with format 'regex'"),
        (
            parsing.ParserSpec(format="regex", regex="(?P<message>.*"),
            r"regex '\(\?P<message>\.\*' is not a valid regular expression: missing \), unterminated subpattern.*fix the pattern",
        ),
        (
            parsing.ParserSpec(regex="x"),
            r"regex is only used with format 'regex'.*set format to 'regex' or remove regex",
        ),
        (
            parsing.ParserSpec(format="cri", message_key="m"),
            r"message_key is only used with format 'json'",
        ),
        (
            parsing.ParserSpec(multiline="php"),
            r"multiline 'php' is not a preset: use one of java, python, go, ruby, backslash, or multiline_start",
        ),
        (
            parsing.ParserSpec(multiline="java", multiline_start="^x"),
            r"exclude each other: keep the preset or the custom regexes",
        ),
        (
            parsing.ParserSpec(multiline_start="[unclosed"),
            r"multiline_start '\[unclosed' is not a valid regular expression: unterminated character set",
        ),
        (
            parsing.ParserSpec(multiline_continue="a{2,1}"),
            r"multiline_continue 'a\{2,1\}' is not a valid regular expression",
        ),
        (
            parsing.ParserSpec(flush_timeout=0),
            r"flush_timeout must be a positive number of seconds, not 0",
        ),
        (parsing.ParserSpec(max_lines=0), r"max_lines must be at least 1, not 0"),
    ],
)
def test_a_bad_spec_is_refused_with_the_field_and_the_fix(
    spec: parsing.ParserSpec, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        spec.validate()
    with pytest.raises(ValueError, match=message):
        parsing.compile(spec)


def test_each_file_gets_its_own_parser_state() -> None:
    make = parsing.compile(parsing.ParserSpec(format="cri"))
    one, two = make(), make()
    assert one.feed(["2024-01-02T03:04:05Z stdout P a"], 0, 0.0) == []
    assert [e[1] for e in two.feed(["2024-01-02T03:04:05Z stdout F b"], 0, 0.0)] == ["b"]
    assert one.held_bytes > 0
    assert two.held_bytes == 0


# --- properties -------------------------------------------------------------------------------

T = "2024-01-02T03:04:05.123Z"
LINES = [
    f"{T} stdout P part ",
    f"{T} stdout F end",
    f"{T} stderr P err ",
    f"{T} stderr F err end",
    '{"log":"piece ","stream":"stdout"}',
    '{"log":"done\\n","stream":"stdout"}',
    '{"log":"e\\n","stream":"stderr","time":"' + T + '"}',
    '{"msg":"java.lang.Error: boom","level":"error"}',
    "java.lang.IllegalStateException: x",
    "\tat com.example.A.b(A.java:1)",
    "Caused by: java.io.IOException",
    "\t... 3 more",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "ValueError: no",
    "panic: boom",
    "goroutine 7 [running]:",
    "main.main()",
    "continued \\",
    "",
    "plain line",
    "é ünïcödé \udcfe\udc80",
    "crlf\r",
    "2024-03-04 dated start",
]
SPECS = [
    parsing.ParserSpec(),
    parsing.ParserSpec(format="container"),
    parsing.ParserSpec(format="container", multiline="java"),
    parsing.ParserSpec(format="cri", multiline_start=r"^\d{4}-", max_lines=3),
    parsing.ParserSpec(format="docker", multiline="python"),
    parsing.ParserSpec(format="json", multiline="java"),
    parsing.ParserSpec(multiline="go", max_lines=4),
    parsing.ParserSpec(multiline="python"),
    parsing.ParserSpec(multiline="backslash"),
    parsing.ParserSpec(multiline="ruby"),
    parsing.ParserSpec(multiline_continue=r"^\s", max_lines=2),
]
SINGLE_STREAM = [spec for spec in SPECS if spec.format in ("raw", "json")]

# Whole shapes the parsers join, so that random inputs reach every path, not only single lines.
FRAGMENTS = [
    [LINES[0], LINES[2], LINES[0], LINES[1], LINES[3]],  # interleaved partials of two streams
    [LINES[4], LINES[4], LINES[5]],  # a docker partial run
    [f"{T} stdout F java.lang.Error: x", f"{T} stdout F \tat a.B(B.java:1)", f"{T} stderr P y"],
    LINES[8:12],  # a Java trace
    [*LINES[12:15], "", "During handling of the above exception, another exception occurred:",
     "", *LINES[12:15], ""],  # a chained Python traceback with blank lines, one trailing
    [LINES[15], "", LINES[16], LINES[17], "\t/x.go:1 +0x1", "", LINES[16], LINES[17], ""],
    [LINES[18], LINES[18], LINES[20]],  # backslash continuations
]  # fmt: skip
inputs = st.lists(
    st.one_of(st.sampled_from(LINES).map(lambda line: [line]), st.sampled_from(FRAGMENTS)),
    max_size=25,
).map(lambda parts: [line for part in parts for line in part])
cuts = st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=20)


def _chunks(lines: list[str], sizes: list[int]) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    at, index = 0, 0
    while at < len(lines):
        size = sizes[index % len(sizes)]
        out.append((at, lines[at : at + size]))
        at += size
        index += 1
    return out


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(SPECS), lines=inputs, sizes=cuts, first=st.integers(0, 10**6))
def test_any_chunking_gives_the_same_events_and_exact_held_bytes(
    spec: parsing.ParserSpec, lines: list[str], sizes: list[int], first: int
) -> None:
    whole = _run(spec, lines, first=first)
    parser = parsing.compile(spec)()
    emitted: list[tuple[int, list[records.Event], int]] = []
    for at, chunk in _chunks(lines, sizes):
        events = parser.feed(chunk, first + at, 0.0)
        emitted.append((at + len(chunk), events, parser.held_bytes))
        assert parser.flush(1.0) == []  # well within flush_timeout: nothing leaves
    final = parser.flush(0.0, force=True)
    assert parser.held_bytes == 0
    assert [e for _, events, _ in emitted for e in events] + final == whole
    # held_bytes after each feed: exactly the lines from the first line of the oldest record not
    # yet emitted to the end of what was fed.
    later = final
    for fed, events, held in reversed(emitted):
        oldest = min((e[0] - first for e in later), default=fed)
        assert oldest <= fed
        assert held == _size(lines[oldest:fed])
        later = events + later
    assert len({e[0] for e in whole}) == len(whole)
    assert all(first <= e[0] < first + len(lines) for e in whole)


@settings(max_examples=200, deadline=None)
@given(spec=st.sampled_from(SINGLE_STREAM), lines=inputs, sizes=cuts)
def test_one_stream_records_are_consecutive_lines_in_order(
    spec: parsing.ParserSpec, lines: list[str], sizes: list[int]
) -> None:
    events: list[records.Event] = []
    parser = parsing.compile(spec)()
    for at, chunk in _chunks(lines, sizes):
        events += parser.feed(chunk, at, 0.0)
    events += parser.flush(0.0, force=True)
    starts = [e[0] for e in events]
    assert starts == sorted(starts)
    assert starts[:1] == [0][: len(lines)]
    if spec.format == "raw" and lines:
        text = "\n".join(line.removesuffix("\r") for line in lines)
        assert "\n".join(e[1] for e in events) == text
        for event, following in zip(events, [*starts[1:], len(lines)], strict=True):
            assert following - event[0] == event[1].count("\n") + 1


@settings(max_examples=200, deadline=None)
@given(
    spec=st.sampled_from([s for s in SPECS if s.format == "raw"]),
    lines=inputs,
    sizes=cuts,
    gaps=st.lists(st.sampled_from([0.0, 1.0, 4.0, 10.0]), min_size=1, max_size=10),
)
def test_timed_flushes_keep_every_line_exactly_once_and_held_bytes_exact(
    spec: parsing.ParserSpec, lines: list[str], sizes: list[int], gaps: list[float]
) -> None:
    parser = parsing.compile(spec)()
    now = 0.0
    steps: list[tuple[int, list[records.Event], int]] = []
    for index, (at, chunk) in enumerate(_chunks(lines, sizes)):
        events = parser.feed(chunk, at, now)
        now += gaps[index % len(gaps)]
        events += parser.flush(now)
        steps.append((at + len(chunk), events, parser.held_bytes))
    final = parser.flush(now, force=True)
    events = [e for _, step, _ in steps for e in step] + final
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    assert "\n".join(e[1] for e in events) == "\n".join(line.removesuffix("\r") for line in lines)
    later = final
    for fed, step, held in reversed(steps):
        oldest = min((e[0] for e in later), default=fed)
        assert held == _size(lines[oldest:fed])
        later = step + later
