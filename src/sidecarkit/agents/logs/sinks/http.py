"""Generic HTTP: one JSON object per event, as NDJSON (default) or one JSON array, to any URL.

``POST <endpoint>`` (the URL exactly as given) with ``Content-Type: application/x-ndjson``::

    {"time":"2026-08-21T10:11:12.123456789Z","message":"GET / 200","file":"/app.log","pod":"web-1"}
    {"time":"2026-08-21T10:11:12.123456790Z","message":"oops","file":"/app.log","pod":"web-1","level":"error"}

Each object holds ``time`` (RFC 3339, UTC, nanoseconds), ``message``, ``file``, the batch's labels
and the event's fields; on a name clash the shipper's keys win. With ``format: json`` the body is
one array of the same objects (``Content-Type: application/json``), for receivers that want a
single JSON document (Fluentd's ``json_array``, many webhooks).

Answers: any 2xx is delivered; 408, 429 and 5xx are retried (after ``Retry-After``); every other
status is refused for good.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from sidecarkit.agents.logs import records, sinks
from sidecarkit.agents.logs.sinks import _http

__all__ = ["FORMATS", "HttpSink", "create"]

FORMATS: Final = ("ndjson", "json")
OPTIONS: Final = {"format": "ndjson (one object per line) or json (one array)"}
_OURS: Final = frozenset({"time", "message", "file"})


def create(spec: sinks.Spec) -> HttpSink:
    common, own = _http.settings(
        spec, path=None, own=OPTIONS, example="https://logs.example.com/ingest"
    )
    form = _http.Options(common.name, own).choice("format", FORMATS)
    content_type = "application/x-ndjson" if form == "ndjson" else "application/json"
    client = _http.Client(common, content_type=content_type)
    return HttpSink(common.name, client, array=form == "json")


class HttpSink:
    """Posts batches as JSON objects to one URL."""

    __slots__ = ("_tails", "array", "client", "name")

    def __init__(self, name: str, client: _http.Client, *, array: bool = False) -> None:
        self.name = name
        self.client = client
        self.array = array
        """One JSON array per request instead of NDJSON."""
        self._tails: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}

    def _tail(self, source: str, labels: dict[str, str]) -> bytes:
        """The constant end of an object without fields: ``,"file":...,<labels>}``."""
        key = (source, tuple(labels.items()))
        tail = self._tails.get(key)
        if tail is None:
            if len(self._tails) > 256:
                self._tails.clear()
            rest: dict[str, Any] = {"file": source, **labels}
            tail = self._tails[key] = b"," + orjson.dumps(rest)[1:]
        return tail

    def body(self, batch: records.Batch) -> bytes:
        """The request body for ``batch``: per event one ``orjson.dumps`` of the message and
        one bytes formatting with the group's constant end."""
        objects: list[bytes] = []
        add = objects.append
        labels = {k: v for k, v in batch.labels.items() if k not in _OURS}
        dumps, second = orjson.dumps, _http.second
        last, stamp = -1, b""
        for group in batch.groups:
            start, source = group.time_ns, group.source
            tail = self._tail(source, labels)
            for index, (_, message, fields, time_ns) in enumerate(group.events):
                seconds, fraction = divmod(
                    start + index if time_ns is None else time_ns, 1_000_000_000
                )
                if seconds != last:
                    last, stamp = seconds, second(seconds)
                if fields:
                    doc: dict[str, Any] = {
                        "time": (b"%b.%09dZ" % (stamp, fraction)).decode(),
                        "message": message,
                        "file": source,
                        **labels,
                    }
                    add(dumps({**doc, **fields, **doc}))
                else:
                    add(
                        b'{"time":"%b.%09dZ","message":%b%b'
                        % (stamp, fraction, dumps(message), tail)
                    )
        if self.array:
            return b"[" + b",".join(objects) + b"]"
        return b"\n".join(objects) + b"\n" if objects else b""

    async def send(self, batch: records.Batch) -> records.Outcome:
        reply = await self.client.post(_http.encode(self.body, batch))
        status = reply.status
        if reply.ok:
            return records.Outcome()
        if status in (408, 429) or status >= 500:
            return records.Outcome(retry=batch, retry_after=reply.retry_after)
        text = _http.short(reply.text())
        return _http.refuse(self.name, batch, f"http {status}", f"HTTP {status}: {text}")

    async def close(self) -> None:
        await self.client.close()
