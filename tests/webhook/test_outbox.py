"""Answers made in one turn of the event loop leave together at its end (``outboxes.Outbox``).

A client waiting on several connections is then woken once per burst of answers instead of
once per answer. Shown on a real webhook process (pipelined answers arrive in one TLS record,
not one record each) and in-process with recording transports: nothing is written before the
turn ends, each connection gets one write per turn, and an answer waits no longer than the
hold (a fake clock) nor past 64 KiB held on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from typing import Any

from sidecarkit.webhook import answering, guarding, outboxes
from tests.support import webhooks

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-", "labels": {"sidecarkit.io/inject": "true"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def _post(uid: str) -> bytes:
    body = json.dumps(webhooks.review_for(POD, uid=uid)).encode()
    return (
        b"POST /inject HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )


class _TlsClient:
    """TLS over a socket through memory BIOs, counting the server's TLS records."""

    def __init__(self, port: int, tls: webhooks.Tls) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = tls.client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname="127.0.0.1"
        )
        self.raw = b""
        self.records = 0
        self.plain = b""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.raw += chunk
        while len(self.raw) >= 5:  # whole records only: type, version, 2-byte length
            size = 5 + int.from_bytes(self.raw[3:5], "big")
            if len(self.raw) < size:
                break
            self.records += 1
            self.incoming.write(self.raw[:size])
            self.raw = self.raw[size:]
        try:
            while True:
                self.plain += self.tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):  # more to come; the server's end
            pass

    def send(self, data: bytes, *, then_close: bool = False) -> None:
        """Send ``data``; with ``then_close``, the TLS close_notify right behind it, in the
        same segment (the client's end of input arrives with its last requests)."""
        self.tls.write(data)
        if then_close:
            with contextlib.suppress(ssl.SSLWantReadError):
                self.tls.unwrap()
        self._flush()

    def responses(self, count: int) -> list[bytes]:
        """The bodies of the next ``count`` responses (Content-Length framed)."""
        bodies: list[bytes] = []
        while len(bodies) < count:
            head, sep, rest = self.plain.partition(b"\r\n\r\n")
            if sep:
                fields = dict(
                    line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line
                )
                length = int(fields[b"Content-Length"])
                if len(rest) >= length:
                    bodies.append(rest[:length])
                    self.plain = rest[length:]
                    continue
            self._receive()
        return bodies


def test_pipelined_answers_leave_in_one_burst_not_one_record_each(
    server: int, tls: webhooks.Tls
) -> None:
    client = _TlsClient(server, tls)
    try:
        client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # and any session tickets
        assert client.responses(1) == [b"ok\n"]
        before = client.records
        uids = [f"burst-{i}" for i in range(8)]
        client.send(b"".join(_post(uid) for uid in uids))
        bodies = client.responses(len(uids))
        assert [json.loads(b)["response"]["uid"] for b in bodies] == uids
        # One write of the eight answers is one or two records; writing each as it is made
        # was eight. (Three allows for a turn cut short by the hold on a loaded machine.)
        assert client.records - before <= 3, client.records - before
    finally:
        client.sock.close()


def test_requests_that_arrive_with_the_clients_end_of_input_are_answered(
    server: int, tls: webhooks.Tls
) -> None:
    """The TLS layer hands the last requests and the end of input over in one step; their
    answers, held for the end of the turn, must leave before the connection closes."""
    client = _TlsClient(server, tls)
    try:
        uids = ["last-1", "last-2"]
        client.send(b"".join(_post(uid) for uid in uids), then_close=True)
        bodies = client.responses(len(uids))
        assert [json.loads(b)["response"]["uid"] for b in bodies] == uids
    finally:
        client.sock.close()


# -- in-process, with recording transports -------------------------------------------------


class _Transport:
    def __init__(self, log: list[tuple[str, Any]], name: str) -> None:
        self.log, self.name = log, name
        self.closing = False

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))

    def close(self) -> None:
        self.closing = True
        self.log.append((self.name, "close"))

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _App:
    """Answers every request at once; ``tick`` advances the fake clock per answer."""

    def __init__(self, clock: list[float], tick: float = 0.0, size: int = 10) -> None:
        self.clock, self.tick, self.size = clock, tick, size
        self.answered = 0

    @property
    def draining(self) -> bool:
        return False

    def begin(self, request: answering.Request) -> None:
        pass

    def answer(self, request: answering.Request) -> answering.Answer:
        self.clock[0] += self.tick
        self.answered += 1
        return answering.Answer(200, b"%d" % self.answered + b"." * (self.size - 1))

    def end(self, request: answering.Request) -> None:
        pass


def _connections(
    count: int,
    app: _App,
    outbox: outboxes.Outbox,
    log: list[tuple[str, Any]],
    limits: guarding.Limits | None = None,
) -> list[guarding.Guard]:
    guards = guarding.Guards(
        limits or guarding.Limits(),
        lambda guard: answering.Connection(app, guard, 1 << 20, outbox),
    )
    made = []
    for i in range(count):
        guard = guards.factory()
        guard.connection_made(_Transport(log, f"c{i}"))  # type: ignore[arg-type]
        made.append(guard)
    return made


_GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


def test_answers_of_one_turn_are_written_at_its_end_one_write_per_connection() -> None:
    async def scenario() -> None:
        clock, log = [0.0], list[tuple[str, Any]]()
        outbox = outboxes.Outbox(clock=lambda: clock[0])
        first, second = _connections(2, _App(clock), outbox, log)
        first.data_received(_GET * 3)
        second.data_received(_GET * 2)
        first.data_received(_GET)
        assert log == []  # still in the turn that made them
        await asyncio.sleep(0)
        assert [name for name, _ in log] == ["c0", "c1"]
        assert [data.count(b"HTTP/1.1 200") for _, data in log] == [4, 2]
        await asyncio.sleep(0)
        assert len(log) == 2  # nothing written twice

    asyncio.run(scenario())


def test_an_answer_waits_for_the_others_no_longer_than_the_hold() -> None:
    async def scenario() -> None:
        clock, log = [0.0], list[tuple[str, Any]]()
        outbox = outboxes.Outbox(hold=0.001, clock=lambda: clock[0])
        (guard,) = _connections(1, _App(clock, tick=0.0006), outbox, log)
        guard.data_received(_GET * 5)
        # Made at 0.6, 1.2 and 1.8 ms: the third finds the first held for 1.2 ms, past the hold.
        assert [data.count(b"HTTP/1.1 200") for _, data in log] == [3]
        await asyncio.sleep(0)
        assert [data.count(b"HTTP/1.1 200") for _, data in log] == [3, 2]

    asyncio.run(scenario())


def test_one_connection_holds_at_most_64_kib_of_answers() -> None:
    async def scenario() -> None:
        clock, log = [0.0], list[tuple[str, Any]]()
        outbox = outboxes.Outbox(clock=lambda: clock[0])
        (guard,) = _connections(1, _App(clock, size=20_000), outbox, log)
        guard.data_received(_GET * 5)
        assert [data.count(b"HTTP/1.1 200") for _, data in log] == [4]  # 80 KB >= 64 KiB
        await asyncio.sleep(0)
        assert [data.count(b"HTTP/1.1 200") for _, data in log] == [4, 1]

    asyncio.run(scenario())


def test_held_answers_are_written_before_the_connection_closes() -> None:
    async def scenario() -> None:
        clock, log = [0.0], list[tuple[str, Any]]()
        outbox = outboxes.Outbox(clock=lambda: clock[0])
        (guard,) = _connections(1, _App(clock), outbox, log)
        guard.data_received(_GET * 2 + b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert [data if data == "close" else data.count(b"HTTP/1.1 200") for _, data in log] == [
            3,
            "close",
        ]
        await asyncio.sleep(0)
        assert len(log) == 2

    asyncio.run(scenario())


def test_a_connection_evicted_at_the_cap_still_sends_the_answers_it_holds() -> None:
    """At the connection cap a new connection closes the longest-open idle one; one that has
    just been answered is idle, its answer still held for the end of the turn."""

    async def scenario() -> None:
        clock, log = [0.0], list[tuple[str, Any]]()
        outbox = outboxes.Outbox(clock=lambda: clock[0])
        limits = guarding.Limits(max_connections=1)
        (first,) = _connections(1, _App(clock), outbox, log, limits)
        first.data_received(_GET)
        guards = first.guards
        second = guards.factory()
        second.connection_made(_Transport(log, "c1"))  # type: ignore[arg-type]
        assert guards.evicted == 1
        assert [
            (name, data if data == "close" else data.count(b"HTTP/1.1 200")) for name, data in log
        ] == [
            ("c0", 1),
            ("c0", "close"),
        ]

    asyncio.run(scenario())


def test_answers_held_when_the_client_ends_its_input_are_written_before_it_returns() -> None:
    async def scenario() -> None:
        clock, log = [0.0], list[tuple[str, Any]]()
        outbox = outboxes.Outbox(clock=lambda: clock[0])
        (guard,) = _connections(1, _App(clock), outbox, log)
        guard.data_received(_GET * 2)
        guard.eof_received()  # the transport starts closing once this returns
        assert [data.count(b"HTTP/1.1 200") for _, data in log] == [2]

    asyncio.run(scenario())
