"""A local receiver for generic NDJSON (or JSON array) log endpoints."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.support.receivers import base


class NdjsonReceiver(base.Receiver):
    """A local server that takes newline-delimited JSON (``application/x-ndjson``: one object per
    line, every line ending in a newline) or a JSON array of objects (``application/json``) on
    ``path``, as generic log endpoints such as Fluentd's ``in_http`` do; not any one product.
    A line that is not a JSON object is 400 naming the line; other content types are 415."""

    def __init__(self, *, path: str = "/ingest", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.objects: list[dict[str, Any]] = []
        self.content_types: list[str] = []

    def routes(self) -> list[tuple[str, base.Handler]]:
        return [(self.path, self._ingest)]

    def stored(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects)

    async def _ingest(self, request: web.Request, body: bytes) -> web.Response:
        kind = base.content_type(request)
        objects: list[Any]
        if kind == "application/x-ndjson":
            if body and not body.endswith(b"\n"):
                return self.refuse(400, "the last line does not end with a newline")
            objects = []
            for n, line in enumerate(body.split(b"\n")[:-1], 1):
                try:
                    objects.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    return self.refuse(400, f"line {n} is not JSON: {exc}")
        elif kind == "application/json":
            try:
                objects = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return self.refuse(400, f"body is not JSON: {exc}")
            if not isinstance(objects, list):
                return self.refuse(400, "body must be a JSON array of objects")
        else:
            return self.refuse(415, f"unsupported content type {kind!r}")
        for n, item in enumerate(objects, 1):
            if not isinstance(item, dict):
                return self.refuse(400, f"record {n} is not a JSON object")
        with self.lock:
            if not self._room(len(objects)):
                return self.refuse(503, "receiver full")
            self.content_types.append(kind)
            self.objects.extend(objects)
        return web.Response(status=204)
