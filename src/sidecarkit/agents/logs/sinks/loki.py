"""Loki: the push API in its JSON form, one stream per file, fields as structured metadata.

``POST <endpoint>/loki/api/v1/push`` with ``Content-Type: application/json``::

    {"streams": [{"stream": {"pod": "web-1", ..., "filename": "/var/log/app/app.log"},
                  "values": [["1755771072000000000", "GET / 200"],
                             ["1755771072000000001", "oops", {"level": "error"}]]}]}

The stream's labels are the batch's labels plus ``filename``; names Loki would refuse are mended
(``[a-zA-Z_][a-zA-Z0-9_]*``, anything else becomes ``_``) and empty values left out. Timestamps are
strings of nanoseconds, as Loki requires: the event's own time, else the group's read time plus the
event's index in its group, so every line has its own timestamp and a resent batch carries the
same ones. That matters because Loki drops an entry whose timestamp *and* line equal one it already
holds in the stream: replays after a crash or a retry do not duplicate, and repeated identical
lines (heartbeats) are not collapsed.

Answers: any 2xx is delivered (Loki says 204). 429 and 5xx other than 501 are retried, after
``Retry-After`` if given. 400 and every other status are refused for good: Loki has then taken the
entries it could and says why for the others (too old, out of order, line too long); when its
message counts them (``total ignored: N out of M``), only those ``N`` are counted as rejected.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from sidecarkit.agents.logs import records, sinks
from sidecarkit.agents.logs.sinks import _http, _lines

__all__ = ["LokiSink", "create"]

PATH: Final = "/loki/api/v1/push"
OPTIONS: Final = {
    "tenant": "the tenant ID sent as X-Scope-OrgID",
    "structured_metadata": "true or false: send event fields as structured metadata",
}

_IGNORED: Final = re.compile(r"total ignored: (\d+) out of \d+")
_LABEL: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NOT_LABEL: Final = re.compile(r"[^a-zA-Z0-9_]")
_REASONS: Final = (
    ("too far behind", "entry too far behind"),
    ("out of order", "entry out of order"),
    ("timestamp too old", "timestamp too old"),
    ("timestamp too new", "timestamp too new"),
    ("max entry size", "line too long"),
    ("structured metadata", "structured metadata refused"),
    ("label", "bad labels"),
)
"""Phrases of Loki's refusals -> the short reason they are counted under."""


def create(spec: sinks.Spec) -> LokiSink:
    common, own = _http.settings(spec, path=PATH, own=OPTIONS, example="http://loki:3100")
    options = _http.Options(common.name, own)
    tenant = options.text("tenant")
    headers = {"X-Scope-OrgID": tenant} if tenant else None
    client = _http.Client(common, content_type="application/json", headers=headers)
    return LokiSink(common.name, client, metadata=options.flag("structured_metadata", True))


def label_name(name: str) -> str:
    """``name`` as Loki accepts label names: invalid characters become ``_``."""
    if _LABEL.fullmatch(name):
        return name
    mended = _NOT_LABEL.sub("_", name)
    return mended if mended and not mended[0].isdigit() else f"_{mended}"


class LokiSink:
    """Pushes batches to one Loki (or anything that speaks its push API)."""

    __slots__ = ("_labels", "_names", "client", "metadata", "name", "raw")

    def __init__(self, name: str, client: _http.Client, *, metadata: bool = True) -> None:
        self.name = name
        self.raw = True
        """Groups of a ``raw`` source may come as their bytes alone (``Group.raw``, no events):
        the shipper then skips making an event per line, and ``body`` makes values in bulk."""
        self.client = client
        self.metadata = metadata
        """Send event fields as structured metadata (Loki 3 with schema v13 or later)."""
        self._labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._names: dict[str, str] = {}

    def body(self, batch: records.Batch) -> bytes:
        """The push request for ``batch``: one stream per file.

        The values of a group that travels as its bytes alone (``Group.raw``, no events) are
        made in bulk (see ``_raw``); those of a group of events by one orjson call.
        """
        key = tuple(batch.labels.items())
        labels = self._labels.get(key)
        if labels is None:
            if len(self._labels) > 64:
                self._labels.clear()
            labels = {label_name(k): v for k, v in key if v}
            self._labels[key] = labels
        streams: dict[str, list[bytes]] = {}
        metadata = self.metadata
        for group in batch.groups:
            pieces = streams.get(group.source)
            if pieces is None:
                pieces = streams[group.source] = []
            if group.raw is not None and not group.events:
                pieces += self._raw(group)
                continue
            values: list[list[Any]] = []
            start = group.time_ns
            for index, (_, message, fields, time_ns) in enumerate(group.events):
                stamp = str(start + index if time_ns is None else time_ns)
                if fields and metadata:
                    values.append([stamp, message, self._metadata(fields)])
                else:
                    values.append([stamp, message])
            if values:
                pieces += (orjson.dumps(values)[1:-1], b",")
        out = [b'{"streams":[']
        for source, pieces in streams.items():
            if not pieces:
                continue
            pieces.pop()  # the last comma
            stream = orjson.dumps({**labels, "filename": source})
            out += (b'{"stream":', stream, b',"values":[', *pieces, b"]},")
        if len(out) > 1:
            out[-1] = b"]}]}"
        else:
            out.append(b"]}")
        return b"".join(out)

    def _raw(self, group: records.Group) -> list[bytes]:
        """The values of a group of bytes alone, each followed by a comma, in pieces.

        The same values as for its events (``[time_ns + i, line]``), made without a Python call
        per line: three pieces per value, filled by slice assignment::

            [previous value's end +] '["' + nanoseconds // 1000
            nanoseconds % 1000 + '","'
            the escaped line
        """
        assert group.raw is not None
        lines = _lines.json_strings(group.raw)
        if not lines:
            return []
        n = len(lines)
        leads, lows = _lines.numbers(group.time_ns, n, before=b'"],["', after=b'","')
        leads[0] = leads[0][3:]
        parts = leads * 3
        parts[0::3] = leads
        parts[1::3] = lows
        parts[2::3] = lines
        parts += (b'"]', b",")
        return parts

    def _metadata(self, fields: dict[str, Any]) -> dict[str, str]:
        names = self._names
        out = {}
        for key, value in fields.items():
            if value is None:
                continue
            name = names.get(key)
            if name is None:
                if len(names) > 1024:
                    names.clear()
                name = names[key] = label_name(key)
            out[name] = value if type(value) is str else orjson.dumps(value).decode()
        return out

    async def send(self, batch: records.Batch) -> records.Outcome:
        reply = await self.client.post(_http.encode(self.body, batch))
        status = reply.status
        if reply.ok:
            return records.Outcome()
        if status == 429 or (status >= 500 and status != 501):
            return records.Outcome(retry=batch, retry_after=reply.retry_after)
        text = reply.text()
        reason = f"http {status}"
        lowered = text.lower()
        for phrase, name in _REASONS:
            if phrase in lowered:
                reason = f"{reason}: {name}"
                break
        events = _http.count(batch)
        ignored = sum(int(n) for n in _IGNORED.findall(text))
        if 0 < ignored < events:
            events = ignored
        detail = f"HTTP {status}: {_http.short(text)}"
        return _http.refuse(self.name, batch, reason, detail, events=events)

    async def close(self) -> None:
        await self.client.close()
