"""The syslog sink over UDP (RFC 5426) and TLS (RFC 5425), against real rsyslog and syslog-ng.

Each daemon is started by the test on 127.0.0.1 from its own folder (``tests/support/syslogd``)
and writes every message it parsed as JSON; the test compares every field with what was sent.
TLS uses a CA made by the test: the daemon's certificate is for 127.0.0.1, and with ``mutual``
the daemon requires a client certificate from the same CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.logs import records
from sidecarkit.agents.logs.sinks import Spec, _udp, create, syslog
from sidecarkit.webhook import certificates
from tests.agents.logs.test_syslog_sink import (
    FACILITY,
    OPTIONS,
    SD_PARAMS,
    SPECIAL,
    SPECIAL_SEVERITIES,
    SPECIAL_TEXTS,
    _batch,
    _daemon,
    _expected,
    _expected_time,
    _many,
)
from tests.support import syslogd
from tests.support.controlplane import _client_cert
from tests.support.webhooks import make_tls


def _check(kind: str, got: list[dict[str, Any]], want: list[tuple[int, Any, str]]) -> None:
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


async def _ship(sink: records.Sink, *batches: records.Batch) -> None:
    for batch in batches:
        await sink.send(batch)
    await sink.close()


@pytest.mark.parametrize("kind", ["rsyslog", "syslog-ng"])
def test_udp_datagrams_reach_a_real_daemon_one_message_each(kind: str, tmp_path: Path) -> None:
    # A few hundred messages: a burst of thousands overflows a busy daemon's socket buffer,
    # which is what UDP does (the docs say to use tcp:// or tls:// where every line matters).
    daemon = _daemon(kind)
    groups = [SPECIAL, _many(300, 1)]
    batch = _batch(groups)
    want = [
        (
            4 if g else SPECIAL_SEVERITIES[i],
            _expected_time(g, i, event[3]),
            event[1] if g else SPECIAL_TEXTS[i],
        )
        for g, events in enumerate(groups)
        for i, event in enumerate(events)
    ]
    with syslogd.receiving(daemon, tmp_path, syslogd.Transport("udp")) as receiver:
        sink = create(Spec("syslog", f"udp://127.0.0.1:{receiver.port}", OPTIONS))
        asyncio.run(_ship(sink, batch))
        got = receiver.wait_records(len(want))
    assert len(got) == len(want)
    cut = got[7]["msg"]
    assert cut == "x" * len(cut), "the 20,000-byte line is cut to one datagram"
    assert 7000 < len(cut) < _udp.MAX_MESSAGE
    _check(kind, got[:7] + got[8:], want[:7] + want[8:])


@pytest.mark.parametrize("mutual", [False, True], ids=["server-cert", "client-cert"])
@pytest.mark.parametrize("kind", ["rsyslog", "syslog-ng"])
def test_tls_delivers_to_a_real_daemon_with_a_custom_ca(
    kind: str, mutual: bool, tmp_path: Path
) -> None:
    daemon = _daemon(kind)
    if not daemon.tls:
        pytest.skip(f"{kind} has no TLS module here; {syslogd.INSTALL_HINT}")
    tls = make_tls(tmp_path / "tls")
    certificates.write_pair(_client_cert(tls.ca, user="log-agent"), tmp_path / "tls", stem="client")
    transport = syslogd.Transport("tls", tls.cert, tls.key, tls.ca_file if mutual else None)
    batch, want = _expected()
    options: dict[str, Any] = {**OPTIONS, "ca_file": str(tls.ca_file)}
    if mutual:
        options |= {
            "cert_file": str(tmp_path / "tls" / "client.crt"),
            "key_file": str(tmp_path / "tls" / "client.key"),
        }
    with syslogd.receiving(daemon, tmp_path / "run", transport) as receiver:
        endpoint = f"tls://127.0.0.1:{receiver.port}"
        asyncio.run(_ship(create(Spec("syslog", endpoint, options)), batch))
        got = receiver.wait_records(len(want))
        if mutual:  # without a client certificate the daemon takes nothing
            bare = create(Spec("syslog", endpoint, {**OPTIONS, "ca_file": str(tls.ca_file)}))
            with contextlib.suppress(OSError):  # the handshake may fail on this side already
                asyncio.run(_ship(bare, _batch([_many(5, 3)])))
            asyncio.run(_ship(create(Spec("syslog", endpoint, options)), _batch([_many(1, 3)])))
            after = receiver.wait_records(len(want) + 1)
            assert len(after) == len(want) + 1, "only the certified client's message arrived"
    assert len(got) == len(want)
    _check(kind, got, want)


def test_udp_to_a_port_nobody_listens_on_raises_so_the_batch_is_sent_again() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = create(Spec("syslog", f"udp://127.0.0.1:{port}"))

    async def main() -> str:
        try:
            for _ in range(3):  # the ICMP answer to the first datagram fails a later send
                await sink.send(_batch([_many(5, 3)]))
                await asyncio.sleep(0.05)
        except ConnectionRefusedError as exc:
            return str(exc)
        finally:
            await sink.close()
        return "no error"

    assert "nothing listens there" in asyncio.run(main())


def test_udp_cuts_a_message_longer_than_max_message_at_a_character_boundary() -> None:
    frames = b"5 <14>x" + b"12 <14>1 " + "é".encode() * 2 + b"-"
    messages, cut = _udp.messages(frames, 9)
    assert messages == [b"<14>x", b"<14>1 " + "é".encode()]
    assert cut == 1
    with pytest.raises(ValueError, match="max_message applies to udp:// only"):
        create(Spec("syslog", "tcp://127.0.0.1:514", {"max_message": 2048}))
    with pytest.raises(ValueError, match="use a number of bytes from 480 to 65000"):
        create(Spec("syslog", "udp://127.0.0.1:514", {"max_message": 100}))
    with pytest.raises(ValueError, match="option ca_file needs a tls:// endpoint"):
        create(Spec("syslog", "udp://127.0.0.1:514", {"ca_file": "/x"}))
    sink = create(Spec("syslog", "udp://127.0.0.1:514", {"max_message": 2048}))
    assert isinstance(sink, syslog.SyslogSink)
    assert sink.max_message == 2048
