"""The syslog sink against real rsyslog and syslog-ng, a TLS receiver, and broken receivers."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.logs import records
from sidecarkit.agents.logs.sinks import Spec, create, rfc5424, syslog
from tests.support import syslogd
from tests.support.webhooks import make_tls

BASE_NS = 1_764_437_184_123_456_789  # 2025-11-29T17:26:24.123456789Z
LABELS = {
    "pod": "web-1",
    "namespace": "shop",
    "container": "app",
    "app.kubernetes.io/name": "web",
    "odd": 'quote " bracket ] backslash \\ end',
    "bad key=x": "ok",
}
SD_PARAMS = {
    "pod": "web-1",
    "namespace": "shop",
    "container": "app",
    "app.kubernetes.io/name": "web",
    "odd": 'quote " bracket ] backslash \\ end',
    "bad_key_x": "ok",
}
"""What the receiver must read back from STRUCTURED-DATA (``bad key=x`` made an SD-NAME)."""


def _run(loop: str, coro: Coroutine[Any, Any, Any]) -> Any:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    loop: str = request.param
    return lambda coro: _run(loop, coro)


def _event(line: int, message: str, level: Any = None, time_ns: int | None = None) -> records.Event:
    return (line, message, None if level is None else {"level": level}, time_ns)


def _batch(
    groups: list[list[records.Event]], labels: dict[str, str] | None = None
) -> records.Batch:
    made = [
        records.Group(f"/var/log/app/{n}.log", f"key-{n}", events, BASE_NS + n * 10_000_000)
        for n, events in enumerate(groups)
    ]
    count = sum(len(g.events) for g in made)
    return records.Batch(made, dict(LABELS if labels is None else labels), count)


def _expected_time(group: int, index: int, own: int | None) -> datetime.datetime:
    ns = own if own is not None else BASE_NS + group * 10_000_000 + index
    return datetime.datetime.fromtimestamp(ns // 1000 / 1e6, datetime.UTC)


SPECIAL = [
    _event(0, "plain ascii line"),
    _event(1, 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'),
    _event(2, "non-ASCII: grüße ✓ 日本語 🚀", level="warn"),
    _event(3, "undecodable \udcff byte", level="ERROR"),
    _event(4, "pino level", level=50),
    _event(5, "unknown level", level="verbose"),
    _event(6, "own time", level="debug", time_ns=1_700_000_000_000_001_999),
    _event(7, "x" * 20_000),
    _event(8, 'tricky "]\\ in the message [sd="no"]'),
]
SPECIAL_SEVERITIES = [4, 4, 4, 3, 3, 4, 7, 4, 4]  # option severity=warning is the default
SPECIAL_TEXTS = [e[1].replace("\udcff", "\ufffd") for e in SPECIAL]


def _many(count: int, group: int) -> list[records.Event]:
    return [_event(i, f"group {group} line {i:05d} of {count}") for i in range(count)]


def _expected() -> tuple[records.Batch, list[tuple[int, datetime.datetime, str]]]:
    """A batch exercising every shape, and (severity, time, text) for each of its events."""
    groups = [SPECIAL, _many(2500, 1), SPECIAL[:3]]
    batch = _batch(groups)
    want = []
    for g, events in enumerate(groups):
        for i, event in enumerate(events):
            special = event[0] if g != 1 else None
            severity = 4 if special is None else SPECIAL_SEVERITIES[special]
            text = event[1] if special is None else SPECIAL_TEXTS[special]
            want.append((severity, _expected_time(g, i, event[3]), text))
    return batch, want


OPTIONS = {"facility": "local3", "severity": "warning"}
FACILITY = 19


def _daemon(kind: str) -> syslogd.Daemon:
    daemon = syslogd.rsyslog() if kind == "rsyslog" else syslogd.syslog_ng()
    if daemon is None:
        pytest.skip(f"{kind} is not installed here; {syslogd.INSTALL_HINT}")
    return daemon


@pytest.mark.parametrize("kind", ["rsyslog", "syslog-ng"])
def test_a_real_daemon_receives_every_message_intact(
    kind: str, tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    daemon = _daemon(kind)
    batch, want = _expected()
    second = _batch([_many(50, 3)])
    with syslogd.receiving(daemon, tmp_path) as receiver:
        sink = create(Spec("syslog", f"tcp://127.0.0.1:{receiver.port}", OPTIONS))

        async def ship() -> int:
            await sink.send(batch)
            await sink.send(second)
            await sink.close()
            assert isinstance(sink, syslog.SyslogSink)
            return sink.connects

        assert run(ship()) == 1
        got = receiver.wait_records(len(want) + 50)
    assert len(got) == len(want) + 50
    for record, (severity, when, text) in zip(got, want, strict=False):
        assert int(record["pri"]) == FACILITY * 8 + severity, record
        assert datetime.datetime.fromisoformat(record["time"]) == when, record
        assert (record["host"], record["app"]) == ("web-1", "app")
        assert record["msg"] == text
        if kind == "rsyslog":
            params = json.loads(record["params"])["sidecarkit@32473"]
        else:
            prefix = ".SDATA.sidecarkit@32473."
            params = {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)}
        assert params == SD_PARAMS
    assert [r["msg"] for r in got[len(want) :]] == [e[1] for e in second.groups[0].events]


def test_frames_parse_back_to_every_field() -> None:
    batch, want = _expected()
    encoder = rfc5424.Encoder(rfc5424.Options(facility=FACILITY, severity=4))
    messages = [syslogd.parse(m) for m in syslogd.frames(encoder.encode(batch))]
    assert len(messages) == len(want)
    for message, (severity, when, text) in zip(messages, want, strict=True):
        assert message.pri == FACILITY * 8 + severity
        assert message.version == 1
        assert message.timestamp == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert (message.hostname, message.app_name, message.procid, message.msgid) == (
            "web-1",
            "app",
            "-",
            "-",
        )
        assert message.sd == [(rfc5424.SD_ID, list(SD_PARAMS.items()))]
        assert message.msg.decode("utf-8") == text


def test_events_in_one_microsecond_share_a_timestamp_and_the_next_one_moves_on() -> None:
    group = records.Group("f", "k", _many(1500, 0), time_ns=1_000_000_000_000_000_999)
    encoded = rfc5424.Encoder(rfc5424.Options()).encode(records.Batch([group], {}, 1500))
    stamps = [syslogd.parse(m).timestamp for m in syslogd.frames(encoded)]
    assert stamps[0] == "2001-09-09T01:46:40.000000Z"  # ...999 ns
    assert stamps[1] == stamps[1000] == "2001-09-09T01:46:40.000001Z"
    assert stamps[1001] == stamps[-1] == "2001-09-09T01:46:40.000002Z"
    assert len(set(stamps[1:1001])) == 1


def test_without_labels_there_is_no_structured_data_and_the_defaults_name_the_sender() -> None:
    group = records.Group("f", "k", [_event(0, "hello")], time_ns=BASE_NS)
    encoded = rfc5424.Encoder(rfc5424.Options()).encode(records.Batch([group], {}, 1))
    assert encoded == b"58 <14>1 2025-11-29T17:26:24.123456Z - sidecarkit - - - hello"


def test_options_name_host_and_app_and_mostly_distinct_own_times_are_kept() -> None:
    events = [_event(i, f"m{i}", time_ns=BASE_NS + i * 1_000_001) for i in range(20)]
    events.append(_event(20, "far future", time_ns=10**21))
    group = records.Group("f", "k", events, time_ns=0)
    encoder = rfc5424.Encoder(rfc5424.Options(hostname="node-7", app_name="payments"))
    messages = [
        syslogd.parse(m)
        for m in syslogd.frames(encoder.encode(records.Batch([group], {"pod": "p"}, 21)))
    ]
    assert [m.timestamp for m in messages[:3]] == [
        "2025-11-29T17:26:24.123456Z",
        "2025-11-29T17:26:24.124456Z",
        "2025-11-29T17:26:24.125456Z",
    ]
    assert messages[-1].timestamp == "-"  # the year 33658 has no RFC 3339 form
    assert {(m.hostname, m.app_name) for m in messages} == {("node-7", "payments")}


def test_a_group_that_travels_as_bytes_is_framed_like_its_lines() -> None:
    raw = b'plain\r\nnon-ASCII gr\xc3\xbc\xc3\x9fe\nbad \xff byte\n\n{"level":"error"}\n'
    texts = ["plain", "non-ASCII grüße", "bad \udcff byte", "", '{"level":"error"}']
    events = [_event(i, text) for i, text in enumerate(texts)]
    encoder = rfc5424.Encoder(rfc5424.Options())
    as_bytes = records.Group("f", "k", [], BASE_NS, raw)
    as_events = records.Group("f", "k", events, BASE_NS)
    framed = encoder.encode(records.Batch([as_bytes], LABELS, 5))
    assert framed == encoder.encode(records.Batch([as_events], LABELS, 5))
    messages = [syslogd.parse(m).msg.decode() for m in syslogd.frames(framed)]
    assert messages == ["plain", "non-ASCII grüße", "bad \ufffd byte", "", '{"level":"error"}']
    assert create(Spec("syslog", "tcp://127.0.0.1:514")).raw is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("labels", [{}, LABELS])
def test_length_prefixes_are_right_for_every_size(labels: dict[str, str]) -> None:
    sizes = [0, 1, 8, 9, 99, 4000, 4100, 9000, 65_000, 70_000, 5]
    events = [_event(i, chr(0x61 + i) * size) for i, size in enumerate(sizes)]
    groups = [
        records.Group("f", "k", events, BASE_NS),
        records.Group("f", "k", [], BASE_NS, b"".join(e[1].encode() + b"\n" for e in events)),
    ]
    encoded = rfc5424.Encoder(rfc5424.Options()).encode(records.Batch(groups, labels, 22))
    messages = [syslogd.parse(m).msg for m in syslogd.frames(encoded)]
    assert messages == [e[1].encode() for e in events] * 2


def test_bad_label_names_and_values_are_made_valid() -> None:
    sd = rfc5424.structured_data({"a" * 40: "v", "": "empty", "k": "\udcff]"})
    assert sd == f'[sidecarkit@32473 {"a" * 32}="v" _="empty" k="\ufffd\\]"]'


# -- TLS, reconnects, timeouts -----------------------------------------------------------------


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[syslogd.Receiver, Path]]:
    tls = make_tls(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    receiver = syslogd.Receiver(tls=context).start()
    yield receiver, tls.ca_file
    receiver.stop()


def test_tls_delivers_to_a_receiver_whose_certificate_the_ca_file_vouches_for(
    tls_receiver: tuple[syslogd.Receiver, Path], run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    receiver, ca_file = tls_receiver
    batch, want = _expected()
    sink = create(
        Spec("syslog", f"tls://127.0.0.1:{receiver.port}", {"ca_file": str(ca_file), **OPTIONS})
    )

    async def ship() -> None:
        await sink.send(batch)
        await sink.close()

    run(ship())
    got = receiver.wait_frames(len(want))
    assert [syslogd.parse(m).msg.decode() for m in got] == [text for _, _, text in want]
    assert receiver.errors == []


def test_tls_refuses_a_certificate_for_another_name_unless_told_not_to_verify(
    tls_receiver: tuple[syslogd.Receiver, Path], run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    receiver, ca_file = tls_receiver
    endpoint = f"tls://127.0.0.1:{receiver.port}"
    wrong = create(
        Spec("syslog", endpoint, {"ca_file": str(ca_file), "server_name": "other.example"})
    )
    unverified = create(Spec("syslog", endpoint, {"tls_verify": False}))
    batch = _batch([_many(3, 0)])

    async def ship() -> None:
        with pytest.raises(OSError, match="certificate verify failed"):
            await wrong.send(batch)
        await unverified.send(batch)
        await unverified.close()

    run(ship())
    assert len(receiver.wait_frames(3)) == 3


def test_a_stopped_receiver_makes_send_raise_and_the_next_send_reconnects(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    first = syslogd.Receiver().start()
    port = first.port
    sink = create(Spec("syslog", f"tcp://127.0.0.1:{port}"))
    assert isinstance(sink, syslog.SyslogSink)
    batches = [_batch([_many(10, n)]) for n in range(3)]
    second = syslogd.Receiver(port=port)

    async def ship() -> None:
        await sink.send(batches[0])
        first.wait_frames(10)
        first.stop()
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            await sink.send(batches[1])
        second.start()
        await sink.send(batches[1])
        await sink.send(batches[2])
        await sink.close()

    try:
        run(ship())
        got = second.wait_frames(20)
    finally:
        first.stop()
        second.stop()
    assert [syslogd.parse(m).msg for m in got] == [
        e[1].encode() for b in batches[1:] for e in b.groups[0].events
    ]
    assert sink.connects == 2


def test_a_receiver_restarted_between_batches_gets_the_next_batch_on_a_new_connection(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    first = syslogd.Receiver().start()
    second = syslogd.Receiver(port=first.port)
    sink = create(Spec("syslog", f"tcp://127.0.0.1:{first.port}"))
    assert isinstance(sink, syslog.SyslogSink)

    async def ship() -> None:
        await sink.send(_batch([_many(5, 0)]))
        first.wait_frames(5)
        first.stop()
        second.start()
        await sink.send(_batch([_many(7, 1)]))
        await sink.close()

    try:
        run(ship())
        assert len(second.wait_frames(7)) == 7
    finally:
        first.stop()
        second.stop()
    assert sink.connects == 2


def test_a_receiver_that_stops_reading_times_the_write_out_and_the_next_send_reconnects(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    accepted: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(5)
        port = listener.getsockname()[1]
        sink = create(Spec("syslog", f"tcp://127.0.0.1:{port}", {"write_timeout": 0.5}))
        assert isinstance(sink, syslog.SyslogSink)
        big = _batch([[_event(i, "y" * 16_000) for i in range(4000)]])  # 64 MB: beyond any buffer
        small = _batch([_many(1, 0)])
        acceptor = threading.Thread(
            target=lambda: accepted.extend(listener.accept()[0] for _ in range(2))
        )
        acceptor.start()

        async def ship() -> None:
            with pytest.raises(TimeoutError, match="write_timeout"):
                await sink.send(big)
            await sink.send(small)
            await sink.close()

        try:
            run(ship())
            acceptor.join(5)
        finally:
            for conn in accepted:
                conn.close()
    assert sink.connects == 2
    assert len(accepted) == 2


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "options", "message"),
    [
        (None, {}, "no endpoint; use tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT"),
        ("http://127.0.0.1:514", {}, "has scheme 'http'; use tcp://HOST:PORT"),
        ("127.0.0.1:514", {}, "use tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT"),
        ("tcp://127.0.0.1", {}, "needs a host and a port"),
        ("tcp://127.0.0.1:99999", {}, "has a bad port"),
        ("tcp://127.0.0.1:514/path", {}, "more than scheme, host and port"),
        ("tcp://h:514", {"facilty": "user"}, "unknown option 'facilty'; use any of: facility"),
        ("tcp://h:514", {"facility": "bogus"}, "facility='bogus' is not valid; use a number 0-23"),
        ("tcp://h:514", {"facility": 24}, "facility=24 is not valid"),
        ("tcp://h:514", {"severity": "loud"}, "severity='loud' is not valid; use a number 0-7"),
        (
            "tcp://h:514",
            {"hostname": "two words"},
            "hostname='two words' is not valid; use 1-255 printable",
        ),
        ("tcp://h:514", {"app_name": "a" * 49}, "use 1-48 printable ASCII"),
        ("tcp://h:514", {"ca_file": "/ca.crt"}, "option ca_file needs a tls:// endpoint"),
        (
            "tls://h:6514",
            {"ca_file": "/nonexistent/ca.crt"},
            "ca_file='/nonexistent/ca.crt' is not valid; it cannot be read",
        ),
        (
            "tls://h:6514",
            {"tls_verify": "maybe"},
            "tls_verify='maybe' is not valid; use true or false",
        ),
        ("tls://h:6514", {"key_file": "/k.pem"}, "give cert_file too"),
        (
            "tcp://h:514",
            {"write_timeout": 0},
            "write_timeout=0 is not valid; use a number of seconds",
        ),
    ],
)
def test_a_bad_endpoint_or_option_names_itself_and_the_fix(
    endpoint: str | None, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="sink 'syslog'") as caught:
        create(Spec("syslog", endpoint, options))
    assert message in str(caught.value)


def test_options_accept_names_and_numbers() -> None:
    sink = create(
        Spec(
            "syslog", "tls://[::1]:6514", {"facility": 16, "severity": "ERR", "tls_verify": "false"}
        )
    )
    assert isinstance(sink, syslog.SyslogSink)
    assert (sink.host, sink.port) == ("::1", 6514)
    assert (sink.encoder.options.facility, sink.encoder.options.severity) == (16, 3)
    assert sink.tls is not None
    assert sink.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert sink.tls.verify_mode == ssl.CERT_NONE
