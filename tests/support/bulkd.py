"""A lean local receiver for the benchmark: Elasticsearch ``_bulk`` and Loki push, as documented.

Not Elasticsearch and not Loki: a small HTTP/1.1 server (a thread per connection, keep-alive,
``Content-Length`` or chunked bodies, ``Expect: 100-continue``, gzip request bodies) that takes
every well-formed request, answers in the documented shape and writes each body to a dump file,
to be checked after the timed run. It is lean so that it is never what limits the measured
sender: it does not parse documents while the clock runs. ``tests/support/receivers`` holds the
faithful receivers the tests use (item errors, duplicates, refusals).

- ``POST /_bulk``, ``POST /<index>/_bulk``: the body must end with a newline; every action line
  (``create``/``index``) is followed by its document. The answer is ``{"took":..,"errors":false,
  "items":[...]}`` with one item per action, as Elasticsearch 8 writes it (``_index``, ``_id``,
  ``_version``, ``result``, ``_shards``, ``_seq_no``, ``_primary_term``, ``status``); the
  ``filter_path`` query parameter keeps only the named parts (``errors``, ``took``, ``items``,
  ``items.*.<field>``), as Elasticsearch does.
- ``POST /loki/api/v1/push`` (JSON): counts the entries of every stream; answers 204.
- ``GET``/``HEAD`` anything: 200 with a small Elasticsearch info document (health checks).

    python -m tests.support.bulkd receive --expect N [--dump DIR]

prints ``READY <port>``, then ``{"done_at": ...}`` (CLOCK_MONOTONIC) once ``N`` documents or
entries arrived, and on SIGTERM a last line with every count.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import orjson

_ACTION = re.compile(rb'^\{"(create|index)":\{([^\n]*)\}\}$', re.M)
_ID = re.compile(rb'"_id":"((?:[^"\\]|\\.)*)"')
_INDEX = re.compile(rb'"_index":"((?:[^"\\]|\\.)*)"')
_ITEM_FIELDS = ("_index", "_id", "_version", "result", "_shards", "_seq_no", "_primary_term")
_INFO = b'{"name":"bulkd","cluster_name":"bench","version":{"number":"8.11.0"},"tagline":"You Know, for Search"}'


class BadRequest(Exception):
    """A request the receiver refuses with 400."""


@dataclass
class Receiver:
    """Counts documents (``_bulk``) and entries (Loki) on 127.0.0.1; see the module docstring."""

    port: int = 0
    dump: Path | None = None
    expect: int | None = None
    records: int = 0
    requests: int = 0
    bodies: int = 0
    connections: int = 0
    errors: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    done_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _listener: socket.socket | None = None

    def start(self) -> Receiver:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, "bulkd-accept")
        return self

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
            self._spawn(self._serve, f"bulkd-{number}", conn, number)

    def _serve(self, conn: socket.socket, number: int) -> None:
        dump = None
        try:
            conn.settimeout(0.1)
            if self.dump is not None:
                dump = (self.dump / f"conn-{number}.bin").open("wb")
            self._requests(conn, dump)
        except OSError as exc:
            if not self._stopping.is_set():
                self.errors.append(f"connection {number}: {exc}")
        finally:
            if dump is not None:
                dump.close()
            conn.close()

    def _recv(self, conn: socket.socket) -> bytes:
        while not self._stopping.is_set():
            try:
                return conn.recv(4 << 20)
            except TimeoutError:
                continue
        return b""

    def _requests(self, conn: socket.socket, dump: BinaryIO | None) -> None:
        buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                chunk = self._recv(conn)
                if not chunk:
                    return
                buf += chunk
                end = buf.find(b"\r\n\r\n")
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            method, target, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self._body(conn, buf, headers)
            if body is None:
                return
            status, kind, answer = self._answer(method, target, headers, body, dump)
            length = len(answer)
            if method == "HEAD":
                answer = b""
            reply = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
                status,
                b"OK" if status < 300 else b"Bad Request",
                kind,
                length,
            )
            conn.sendall(reply + answer)

    def _body(self, conn: socket.socket, buf: bytearray, headers: dict[str, str]) -> bytes | None:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line_end = buf.find(b"\r\n")
                while line_end < 0:
                    chunk = self._recv(conn)
                    if not chunk:
                        return None
                    buf += chunk
                    line_end = buf.find(b"\r\n")
                size = int(bytes(buf[:line_end]).split(b";")[0], 16)
                while len(buf) < line_end + 2 + size + 2:
                    chunk = self._recv(conn)
                    if not chunk:
                        return None
                    buf += chunk
                out += buf[line_end + 2 : line_end + 2 + size]
                del buf[: line_end + 2 + size + 2]
                if size == 0:
                    return bytes(out)
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = self._recv(conn)
            if not chunk:
                return None
            buf += chunk
        body = bytes(buf[:length])
        del buf[:length]
        return body

    def _answer(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        dump: BinaryIO | None,
    ) -> tuple[int, bytes, bytes]:
        with self._lock:
            self.requests += 1
        if method != "POST":
            return 200, b"application/json", _INFO
        if headers.get("content-encoding", "").lower() == "gzip":
            body = zlib.decompress(body, 31)
        url = urlsplit(target)
        try:
            if url.path.endswith("/_bulk"):
                count, answer = _bulk(body, parse_qs(url.query).get("filter_path", []))
                kind = b"application/json"
            elif url.path == "/loki/api/v1/push":
                count, answer = _push(body), b""
                kind = b"text/plain"
            else:
                raise BadRequest(f"no such API: {url.path}")
        except (BadRequest, ValueError) as exc:
            with self._lock:
                self.errors.append(str(exc)[:200])
            return 400, b"text/plain", str(exc).encode()
        if dump is not None:
            dump.write(b"%d\n%s" % (len(body), body))
        with self._lock:
            self.bodies += 1
            self.records += count
            if self.expect is not None and self.records >= self.expect and self.done_at is None:
                self.done_at = time.monotonic()
                self.done.set()
        return (204 if not answer else 200), kind, answer

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()


def _bulk(body: bytes, filter_path: list[str]) -> tuple[int, bytes]:
    """The number of documents in a ``_bulk`` body and the answer to it."""
    if not body.endswith(b"\n"):
        raise BadRequest("The bulk request must be terminated by a newline [\\n]")
    lines = body.count(b"\n")
    actions = _ACTION.findall(body)
    if lines != 2 * len(actions):
        raise BadRequest(f"{lines} lines for {len(actions)} create/index actions")
    keep = {p for spec in filter_path for p in spec.split(",") if p}
    top = [p for p in ("took", "errors", "items") if not keep or p in keep]
    fields = [f for f in (*_ITEM_FIELDS, "status") if not keep or "items" in keep]
    fields += [p.split(".", 2)[2] for p in keep if p.startswith("items.*.")]
    parts = []
    if "took" in top:
        parts.append(b'"took":1')
    if "errors" in top:
        parts.append(b'"errors":false')
    if fields:
        # One template per answer, the index and _id of each action filled in.
        sample: dict[str, Any] = {
            "_index": "\x00i",
            "_id": "\x00d",
            "_version": 1,
            "result": "created",
            "_shards": {"total": 2, "successful": 1, "failed": 0},
            "_seq_no": 0,
            "_primary_term": 1,
            "status": 201,
        }
        template = orjson.dumps({f: sample[f] for f in fields if f in sample})
        template = template.replace(b"%", b"%%").replace(b'"\\u0000i"', b'"%b"')
        template = b'{"%b":' + template.replace(b'"\\u0000d"', b'"%b"') + b"}"
        wants_index, wants_id = b"_index" in template, b"_id" in template
        items = []
        for op, meta in actions:
            values = [op]
            if wants_index:
                index = _INDEX.search(meta)
                values.append(index.group(1) if index else b"")
            if wants_id:
                found = _ID.search(meta)
                values.append(found.group(1) if found else b"auto")
            items.append(template % tuple(values))
        parts.append(b'"items":[' + b",".join(items) + b"]")
    return len(actions), b"{" + b",".join(parts) + b"}"


def _push(body: bytes) -> int:
    """The number of entries in a Loki push request (JSON)."""
    try:
        request = orjson.loads(body)
        return sum(len(stream["values"]) for stream in request["streams"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BadRequest(f"not a Loki push request: {exc}") from exc


def bodies(dump: Path) -> list[bytes]:
    """The request bodies written to one dump file, in order."""
    data = dump.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        size = int(data[pos:newline])
        out.append(data[newline + 1 : newline + 1 + size])
        pos = newline + 1 + size
    return out


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.bulkd")
    parser.add_argument("command", choices=["receive"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--dump", type=Path)
    args = parser.parse_args()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    receiver = Receiver(port=args.port, dump=args.dump, expect=args.expect).start()
    print(f"READY {receiver.port}", flush=True)
    while not stopping.is_set():
        if receiver.done.wait(0.05):
            print(json.dumps({"done_at": receiver.done_at}), flush=True)
            break
    stopping.wait()
    receiver.stop()
    result = {
        "frames": receiver.records,
        "requests": receiver.requests,
        "bodies": receiver.bodies,
        "connections": receiver.connections,
        "errors": receiver.errors[:5],
        "done_at": receiver.done_at,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _main()
