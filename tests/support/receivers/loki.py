"""A local receiver for the Loki push API (JSON form)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from tests.support.receivers import base

_DIGITS = re.compile(r"[0-9]+")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Entry = tuple[int, str, dict[str, str]]
"""``(timestamp ns, line, structured metadata)``."""
StreamKey = tuple[tuple[str, str], ...]


class LokiReceiver(base.Receiver):
    """A local server that implements the Loki push API as documented, not Loki.

    ``POST /loki/api/v1/push``, JSON form only (``Content-Type: application/json``; anything else
    is parsed as Loki would parse protobuf, and fails as ``snappy: corrupt input``). Checks the
    body's shape, that every stream has valid labels, that timestamps are strings of digits and
    structured metadata a flat map of strings. Drops an entry whose timestamp and line equal an
    entry already in its stream, as Loki does, and refuses entries older than ``max_age`` (Loki's
    ``reject_old_samples``, default one week) with Loki's message while keeping the others.
    Answers 204.
    """

    def __init__(self, *, max_age: float | None = 7 * 86400, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_age = max_age
        self.streams: dict[StreamKey, list[Entry]] = {}
        self.duplicates = 0
        self.tenants: list[str | None] = []

    def routes(self) -> list[tuple[str, base.Handler]]:
        return [("/loki/api/v1/push", self._push)]

    def entries(self) -> dict[StreamKey, list[Entry]]:
        """A copy of what is stored: stream labels (sorted) -> entries in arrival order."""
        with self.lock:
            return {key: list(values) for key, values in self.streams.items()}

    async def _push(self, request: web.Request, body: bytes) -> web.Response:
        if base.content_type(request) != "application/json":
            return self.refuse(400, "snappy: corrupt input")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self.refuse(400, f"loghttp.PushRequest: ReadObjectCB: {exc}")
        streams = parsed.get("streams") if isinstance(parsed, dict) else None
        if not isinstance(streams, list):
            return self.refuse(400, "loghttp.PushRequest: streams must be an array")
        accepted: list[tuple[StreamKey, list[Entry]]] = []
        for i, stream in enumerate(streams):
            problem = _loki_stream(i, stream)
            if isinstance(problem, str):
                return self.refuse(400, problem)
            accepted.append(problem)
        too_old = None
        oldest = None if self.max_age is None else time.time_ns() - int(self.max_age * 1e9)
        with self.lock:
            self.tenants.append(request.headers.get("X-Scope-OrgID"))
            if not self._room(sum(len(entries) for _, entries in accepted)):
                return self.refuse(503, "receiver full")
            for key, entries in accepted:
                stored = self.streams.setdefault(key, [])
                seen = {(ts, line) for ts, line, _ in stored}
                for entry in entries:
                    if oldest is not None and entry[0] < oldest:
                        too_old = too_old or (
                            f"entry for stream '{_render(key)}' has timestamp too old: "
                            f"{_iso(entry[0])}, oldest acceptable timestamp is: {_iso(oldest)}"
                        )
                    elif (entry[0], entry[1]) in seen:
                        self.duplicates += 1
                    else:
                        seen.add((entry[0], entry[1]))
                        stored.append(entry)
        if too_old:
            return self.refuse(400, too_old)
        return web.Response(status=204)


def _render(key: StreamKey) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in key) + "}"


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _loki_stream(i: int, stream: Any) -> tuple[StreamKey, list[Entry]] | str:
    """The stream's key and entries, or Loki's message for what is wrong with it."""
    where = f"loghttp.PushRequest.Streams: []loghttp.LogProtoStream: streams[{i}]"
    if not isinstance(stream, dict):
        return f"{where}: expects an object"
    labels = stream.get("stream")
    if not isinstance(labels, dict) or not labels:
        return "error at least one label pair is required per stream"
    for name, value in labels.items():
        if not _LABEL.fullmatch(name) or not isinstance(value, str):
            return f"error parsing labels '{labels}': invalid label name or value {name!r}"
    values = stream.get("values")
    if not isinstance(values, list):
        return f"{where}: values must be an array"
    entries: list[Entry] = []
    for j, value in enumerate(values):
        if not isinstance(value, list) or len(value) not in (2, 3):
            return f"{where}: values[{j}] must be [timestamp, line] or [timestamp, line, metadata]"
        ts, line = value[0], value[1]
        if not isinstance(ts, str) or not _DIGITS.fullmatch(ts):
            return (
                f"{where}: unmarshalerDecoder: values[{j}][0] is {orjson.dumps(ts).decode()}, "
                f"not a string of Unix epoch nanoseconds"
            )
        if not isinstance(line, str):
            return f"{where}: unmarshalerDecoder: values[{j}][1] must be a string"
        metadata: dict[str, str] = {}
        if len(value) == 3:
            meta = value[2]
            if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
            ):
                return f"{where}: values[{j}][2] (structured metadata) must map strings to strings"
            metadata = meta
        entries.append((int(ts), line, metadata))
    return tuple(sorted(labels.items())), entries
