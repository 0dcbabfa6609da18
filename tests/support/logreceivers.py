"""Local receivers for the logs agent's HTTP sinks, each implementing one documented API.

None of them is the real product: Loki, Elasticsearch and an OpenTelemetry collector cannot be
installed from the package registries this project may use. Each is instead a local server that
implements the documented wire contract faithfully, including the parts a sink can get wrong:
content types, gzip, body shapes, timestamp forms, per-item bulk results, Loki's de-duplication,
OTLP partial success. Each validates strictly and refuses a malformed body the way the real
service would (status and a message in its style), so a test passing against it says something.

All run an aiohttp server on 127.0.0.1 (port 0, then the same port for the server's life) in a
thread of their own with its own event loop, and are used as context managers. Their controls are
safe to call from the test's thread:

- ``fail_next(n, status, retry_after=None)``: answer the next ``n`` requests with ``status``
  (whole-request failures), without taking anything in;
- ``down()`` / ``up()``: close the listening socket and every open connection, so connections are
  refused, then listen again on the same port;
- counters: ``requests`` (every request that arrived), ``gzipped`` (requests with a gzip body),
  ``last_headers``.

Everything is bounded: request bodies (before and after gzip) by ``max_body``, stored records by
``max_records`` (past it the receiver answers 503), waits by timeouts.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

Handler = Callable[[web.Request, bytes], Awaitable[web.Response]]

_DIGITS = re.compile(r"[0-9]+")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HEX = re.compile(r"[0-9a-fA-F]*")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?")


@dataclass
class _Failure:
    remaining: int
    status: int
    retry_after: str | None
    body: bytes


class Receiver:
    """The server, the thread and the controls every receiver shares."""

    def __init__(
        self,
        *,
        max_body: int = 32 << 20,
        max_records: int = 200_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_body = max_body
        self.max_records = max_records
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self.requests = 0
        self.gzipped = 0
        self.last_headers: dict[str, str] = {}
        self.port = 0
        self._stored = 0
        self._failures: list[_Failure] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- life ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # handed to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError(f"{type(self).__name__} did not start within 10 s")
        if errors:
            raise errors[0]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            self._call(self._close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "the receiver is not running; use it in a with block"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _listen(self) -> None:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_routes(
            [web.post(path, self._wrap(handler)) for path, handler in self.routes()]
        )
        # Bodies are decompressed here, with a bound, not by aiohttp: the receiver must see
        # what the client really sent.
        runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        if not self.port:
            self.port = int(runner.addresses[0][1])

    async def _close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def down(self) -> None:
        """Stop listening and drop every connection: new connections are refused."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    # -- controls ---------------------------------------------------------------------------

    def fail_next(
        self, n: int, status: int, retry_after: float | str | None = None, body: bytes = b""
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After``), taking nothing."""
        text = None if retry_after is None else str(retry_after)
        with self.lock:
            self._failures.append(_Failure(n, status, text, body or f"injected {status}".encode()))

    # -- requests ---------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, Handler]]:
        raise NotImplementedError

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            with self.lock:
                self.requests += 1
                self.last_headers = dict(request.headers)
                failure = self._failures[0] if self._failures else None
                if failure is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.pop(0)
            raw = await request.read()
            if failure is not None:
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
                return web.Response(status=failure.status, body=failure.body, headers=headers)
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding == "gzip":
                with self.lock:
                    self.gzipped += 1
                body = self._gunzip(raw)
                if body is None:
                    return self.refuse(400, "gzip: invalid header or truncated body")
            elif encoding == "identity":
                body = raw
            else:
                return self.refuse(415, f"unsupported Content-Encoding {encoding!r}")
            if len(body) > self.max_body:
                return self.refuse(413, f"body larger than {self.max_body} bytes")
            return await handler(request, body)

        return handle

    def _gunzip(self, data: bytes) -> bytes | None:
        decompressor = zlib.decompressobj(31)
        try:
            out = decompressor.decompress(data, self.max_body + 1)
        except zlib.error:
            return None
        if len(out) <= self.max_body and (not decompressor.eof or decompressor.unused_data):
            return None
        return out

    def refuse(self, status: int, message: str) -> web.Response:
        """A refusal in the receiver's own style (plain text unless overridden)."""
        return web.Response(status=status, text=message + "\n")

    def _room(self, n: int) -> bool:
        """Reserve room for ``n`` more records, if the bound allows (call under the lock)."""
        if self._stored + n > self.max_records:
            return False
        self._stored += n
        return True


def _content_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


# -- Loki ---------------------------------------------------------------------------------------

Entry = tuple[int, str, dict[str, str]]
"""``(timestamp ns, line, structured metadata)``."""
StreamKey = tuple[tuple[str, str], ...]


class LokiReceiver(Receiver):
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

    def routes(self) -> list[tuple[str, Handler]]:
        return [("/loki/api/v1/push", self._push)]

    def entries(self) -> dict[StreamKey, list[Entry]]:
        """A copy of what is stored: stream labels (sorted) -> entries in arrival order."""
        with self.lock:
            return {key: list(values) for key, values in self.streams.items()}

    async def _push(self, request: web.Request, body: bytes) -> web.Response:
        if _content_type(request) != "application/json":
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


# -- Elasticsearch --------------------------------------------------------------------------

ItemMatch = Callable[[str, str, dict[str, Any]], bool]
"""``(index, _id, source) -> True`` for the items a failure applies to."""

_META = frozenset(
    {
        "_index",
        "_id",
        "routing",
        "pipeline",
        "require_alias",
        "version",
        "version_type",
        "if_seq_no",
        "if_primary_term",
        "dynamic_templates",
        "op_type",
        "retry_on_conflict",
    }
)


@dataclass
class _ItemFailure:
    match: ItemMatch
    status: int
    error_type: str
    requests: int | None


@dataclass
class _Doc:
    source: dict[str, Any]
    version: int = 1
    seq_no: int = 0


@dataclass
class _Index:
    docs: dict[str, _Doc] = field(default_factory=dict)
    seq_no: int = 0


class ElasticsearchReceiver(Receiver):
    """A local server that implements the Elasticsearch ``_bulk`` API as documented, not
    Elasticsearch.

    ``POST /_bulk`` and ``POST /<index>/_bulk`` with ``Content-Type: application/x-ndjson`` (or
    ``application/json``; anything else is 406). The body must end with a newline; every action
    line must be an object with one of ``index``, ``create``, ``update``, ``delete`` and known
    metadata, followed by its source line (none for ``delete``); a malformed request is refused
    whole with Elasticsearch's error shape. Items are answered in request order with their own
    status: ``create`` of an existing ``_id`` is 409 ``version_conflict_engine_exception``;
    a source that is not a JSON object, or an ``@timestamp`` that is not a date, is 400
    ``document_parsing_exception``. Documents are stored per index and ``_id``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.indices: dict[str, _Index] = {}
        self._item_failures: list[_ItemFailure] = []

    def routes(self) -> list[tuple[str, Handler]]:
        return [("/_bulk", self._bulk), ("/{index}/_bulk", self._bulk)]

    def fail_items(
        self,
        match: ItemMatch | set[str] | list[str],
        status: int,
        error_type: str,
        *,
        requests: int | None = 1,
    ) -> None:
        """Fail the items ``match`` selects (a predicate or a set of ``_id``) with ``status``
        and ``error_type``, in the next ``requests`` bulk requests (``None``: until cleared)."""
        if not callable(match):
            ids = set(match)

            def by_id(index: str, doc_id: str, source: dict[str, Any]) -> bool:
                return doc_id in ids

            match = by_id
        with self.lock:
            self._item_failures.append(_ItemFailure(match, status, error_type, requests))

    def clear_item_failures(self) -> None:
        with self.lock:
            self._item_failures.clear()

    def docs(self, index: str) -> dict[str, dict[str, Any]]:
        """A copy of the documents of ``index``: ``_id`` -> source."""
        with self.lock:
            stored = self.indices.get(index)
            return {} if stored is None else {k: d.source for k, d in stored.docs.items()}

    def refuse(
        self, status: int, message: str, kind: str = "illegal_argument_exception"
    ) -> web.Response:
        error = {"root_cause": [{"type": kind, "reason": message}], "type": kind, "reason": message}
        return web.json_response({"error": error, "status": status}, status=status)

    async def _bulk(self, request: web.Request, body: bytes) -> web.Response:
        kind = _content_type(request)
        if kind not in ("application/x-ndjson", "application/json"):
            header = request.headers.get("Content-Type", "")
            return web.json_response(
                {"error": f"Content-Type header [{header}] is not supported", "status": 406},
                status=406,
            )
        if not body:
            return self.refuse(
                400,
                "Validation Failed: 1: no requests added;",
                "action_request_validation_exception",
            )
        if not body.endswith(b"\n"):
            return self.refuse(400, "The bulk request must be terminated by a newline [\\n]")
        lines = body.split(b"\n")[:-1]
        default_index = request.match_info.get("index")
        operations: list[tuple[str, dict[str, Any], bytes | None]] = []
        n = 0
        while n < len(lines):
            number = n + 1
            try:
                action = orjson.loads(lines[n])
            except orjson.JSONDecodeError:
                return self.refuse(
                    400,
                    f"Malformed action/metadata line [{number}], expected START_OBJECT or "
                    f"END_OBJECT but found [VALUE_STRING]",
                )
            if not isinstance(action, dict) or len(action) != 1:
                return self.refuse(
                    400, f"Malformed action/metadata line [{number}], expected a simple value"
                )
            ((op, meta),) = action.items()
            if op not in ("index", "create", "update", "delete") or not isinstance(meta, dict):
                return self.refuse(
                    400, f"Malformed action/metadata line [{number}], unknown action [{op}]"
                )
            for key in meta:
                if key not in _META:
                    return self.refuse(
                        400,
                        f"Action/metadata line [{number}] contains an unknown parameter [{key}]",
                    )
            if "_index" not in meta and default_index is None:
                return self.refuse(
                    400,
                    "Validation Failed: 1: index is missing;",
                    "action_request_validation_exception",
                )
            meta = {"_index": default_index, **meta}
            source = None
            if op != "delete":
                n += 1
                if n >= len(lines):
                    return self.refuse(
                        400,
                        f"Validation Failed: 1: source is missing for line [{number}];",
                        "action_request_validation_exception",
                    )
                source = lines[n]
            operations.append((op, meta, source))
            n += 1
        started = time.monotonic()
        with self.lock:
            items = [self._apply(op, meta, source) for op, meta, source in operations]
            for failure in self._item_failures:
                if failure.requests is not None:
                    failure.requests -= 1
            self._item_failures = [
                f for f in self._item_failures if f.requests is None or f.requests > 0
            ]
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        took = int((time.monotonic() - started) * 1000)
        return web.json_response({"took": took, "errors": errors, "items": items})

    def _apply(self, op: str, meta: dict[str, Any], raw: bytes | None) -> dict[str, Any]:
        name = str(meta["_index"])
        doc_id = str(meta.get("_id") or secrets.token_urlsafe(15))
        index = self.indices.setdefault(name, _Index())

        def answer(status: int, **rest: Any) -> dict[str, Any]:
            return {op: {"_index": name, "_id": doc_id, "status": status, **rest}}

        def error(status: int, kind: str, reason: str) -> dict[str, Any]:
            return answer(status, error={"type": kind, "reason": reason, "index": name})

        source: Any = None
        if raw is not None:
            try:
                source = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return error(400, "document_parsing_exception", f"failed to parse: {exc}")
            if not isinstance(source, dict):
                return error(400, "document_parsing_exception", "failed to parse: not an object")
            stamp = source.get("@timestamp")
            if stamp is not None and not (
                (isinstance(stamp, str) and _DATE.fullmatch(stamp))
                or (isinstance(stamp, int) and not isinstance(stamp, bool))
            ):
                return error(
                    400,
                    "document_parsing_exception",
                    f"failed to parse field [@timestamp] of type [date] in document with id "
                    f"'{doc_id}'. Preview of field's value: '{stamp}'",
                )
        for failure in self._item_failures:
            if failure.match(name, doc_id, source or {}):
                return error(failure.status, failure.error_type, "injected item failure")
        existing = index.docs.get(doc_id)
        if op == "delete":
            if existing is None:
                return answer(404, result="not_found")
            del index.docs[doc_id]
            return answer(200, result="deleted")
        if op == "update":
            partial = source.get("doc") if isinstance(source, dict) else None
            if existing is None or not isinstance(partial, dict):
                return error(404, "document_missing_exception", f"[{doc_id}]: document missing")
            existing.source = {**existing.source, **partial}
            existing.version += 1
            return answer(200, result="updated", _version=existing.version)
        if existing is not None and op == "create":
            return error(
                409,
                "version_conflict_engine_exception",
                f"[{doc_id}]: version conflict, document already exists "
                f"(current version [{existing.version}])",
            )
        if existing is None and not self._room(1):
            return error(429, "es_rejected_execution_exception", "receiver full")
        index.seq_no += 1
        version = 1 if existing is None else existing.version + 1
        assert isinstance(source, dict)
        index.docs[doc_id] = _Doc(source, version, index.seq_no)
        return answer(
            201 if existing is None else 200,
            result="created" if existing is None else "updated",
            _version=version,
            _seq_no=index.seq_no,
            _primary_term=1,
            _shards={"total": 1, "successful": 1, "failed": 0},
        )


# -- OTLP/HTTP ------------------------------------------------------------------------------

_ANY = (
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
)


@dataclass(frozen=True)
class LogRecord:
    """One stored OTLP log record, its attribute values decoded to Python."""

    resource: dict[str, Any]
    scope: dict[str, Any]
    time_unix_nano: int | None
    observed_time_unix_nano: int | None
    severity_number: int | None
    severity_text: str | None
    body: Any
    attributes: dict[str, Any]
    trace_id: str | None
    span_id: str | None


class OtlpReceiver(Receiver):
    """A local server that implements OTLP/HTTP log export (JSON encoding) as the OTLP
    specification documents it, not an OpenTelemetry collector.

    ``POST /v1/logs`` with ``Content-Type: application/json`` (protobuf is answered 415: only the
    JSON encoding is implemented). The body must be an ``ExportLogsServiceRequest``: lowerCamelCase
    keys, 64-bit integers as decimal strings or numbers, ``traceId``/``spanId`` as hex of 32/16
    digits, ``AnyValue`` with one known variant, severity numbers 0-24; unknown fields are ignored
    as the spec requires. A bad request is 400 with a ``google.rpc.Status`` body. Success is 200
    with ``{}``, or with ``partialSuccess`` after ``reject_next``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.records: list[LogRecord] = []
        self._reject = 0

    def routes(self) -> list[tuple[str, Handler]]:
        return [("/v1/logs", self._export)]

    def reject_next(self, n_records: int) -> None:
        """Refuse the last ``n_records`` records of the next request (partial success)."""
        with self.lock:
            self._reject = n_records

    def stored(self) -> list[LogRecord]:
        with self.lock:
            return list(self.records)

    def refuse(self, status: int, message: str) -> web.Response:
        return web.json_response({"code": 3, "message": message}, status=status)

    async def _export(self, request: web.Request, body: bytes) -> web.Response:
        kind = _content_type(request)
        if kind != "application/json":
            return web.json_response(
                {"code": 3, "message": f"unsupported content type {kind!r}: send application/json"},
                status=415,
            )
        try:
            parsed = orjson.loads(body)
            records = _otlp_request(parsed)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return self.refuse(400, str(exc))
        with self.lock:
            reject, self._reject = min(self._reject, len(records)), 0
            keep = records[: len(records) - reject]
            if not self._room(len(keep)):
                return self.refuse(503, "receiver full")
            self.records.extend(keep)
        if reject:
            partial = {
                "rejectedLogRecords": str(reject),
                "errorMessage": f"{reject} record(s) refused",
            }
            return web.json_response({"partialSuccess": partial})
        return web.json_response({})


def _otlp_request(parsed: Any) -> list[LogRecord]:
    if not isinstance(parsed, dict):
        raise ValueError("ExportLogsServiceRequest must be a JSON object")
    out: list[LogRecord] = []
    for i, rl in enumerate(_list(parsed, "resourceLogs", "request")):
        where = f"resourceLogs[{i}]"
        resource = _object(rl, "resource", where)
        attributes = _attributes(resource, f"{where}.resource")
        for j, sl in enumerate(_list(rl, "scopeLogs", where)):
            swhere = f"{where}.scopeLogs[{j}]"
            scope = _object(sl, "scope", swhere)
            scope_view = {
                "name": scope.get("name", ""),
                "version": scope.get("version", ""),
                "attributes": _attributes(scope, f"{swhere}.scope"),
            }
            for k, record in enumerate(_list(sl, "logRecords", swhere)):
                out.append(_record(record, f"{swhere}.logRecords[{k}]", attributes, scope_view))
    return out


def _list(parent: Any, key: str, where: str) -> list[Any]:
    if not isinstance(parent, dict):
        raise ValueError(f"{where} must be an object")
    value = parent.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{where}.{key} must be an array")
    return value


def _object(parent: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(parent, dict):
        raise ValueError(f"{where} must be an object")
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}.{key} must be an object")
    return value


def _int64(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"{where} must be a non-negative integer or a string of digits, got {value!r}")


def _attributes(parent: dict[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for n, kv in enumerate(_list(parent, "attributes", where)):
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise ValueError(f"{where}.attributes[{n}] must be a KeyValue with a string key")
        out[kv["key"]] = _any(kv.get("value", {}), f"{where}.attributes[{n}].value")
    return out


def _any(value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an AnyValue object")
    present = [k for k in _ANY if k in value]
    if len(present) > 1:
        raise ValueError(f"{where} has more than one value: {', '.join(present)}")
    if not present:
        return None
    kind = present[0]
    item = value[kind]
    if kind == "stringValue" and isinstance(item, str):
        return item
    if kind == "boolValue" and isinstance(item, bool):
        return item
    if kind == "intValue":
        if isinstance(item, str) and re.fullmatch(r"-?[0-9]+", item):
            return int(item)
        if isinstance(item, int) and not isinstance(item, bool):
            return item
    if kind == "doubleValue" and isinstance(item, int | float) and not isinstance(item, bool):
        return float(item)
    if kind == "arrayValue" and isinstance(item, dict):
        return [
            _any(v, f"{where}.arrayValue.values[{n}]")
            for n, v in enumerate(_list(item, "values", where))
        ]
    if kind == "kvlistValue" and isinstance(item, dict):
        return _attributes({"attributes": _list(item, "values", where)}, f"{where}.kvlistValue")
    if kind == "bytesValue" and isinstance(item, str):
        return item
    raise ValueError(f"{where}.{kind} has the wrong type: {item!r}")


def _record(record: Any, where: str, resource: dict[str, Any], scope: dict[str, Any]) -> LogRecord:
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object")
    severity = record.get("severityNumber")
    if severity is not None and (
        isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 24
    ):
        raise ValueError(
            f"{where}.severityNumber must be an integer from 0 to 24, got {severity!r}"
        )
    text = record.get("severityText")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}.severityText must be a string")
    ids: dict[str, str | None] = {}
    for key, digits in (("traceId", 32), ("spanId", 16)):
        value = record.get(key)
        if value in (None, ""):
            ids[key] = None
        elif isinstance(value, str) and len(value) == digits and _HEX.fullmatch(value):
            ids[key] = value
        else:
            raise ValueError(f"{where}.{key} must be {digits} hex digits, got {value!r}")
    return LogRecord(
        resource=resource,
        scope=scope,
        time_unix_nano=_int64(record.get("timeUnixNano"), f"{where}.timeUnixNano"),
        observed_time_unix_nano=_int64(
            record.get("observedTimeUnixNano"), f"{where}.observedTimeUnixNano"
        ),
        severity_number=severity,
        severity_text=text,
        body=_any(record.get("body", {}), f"{where}.body"),
        attributes=_attributes(record, where),
        trace_id=ids["traceId"],
        span_id=ids["spanId"],
    )


# -- NDJSON ---------------------------------------------------------------------------------


class NdjsonReceiver(Receiver):
    """A local server that takes newline-delimited JSON (``application/x-ndjson``: one object per
    line, every line ending in a newline) or a JSON array of objects (``application/json``) on
    ``path``, as generic log endpoints such as Fluentd's ``in_http`` do; not any one product.
    A line that is not a JSON object is 400 naming the line; other content types are 415."""

    def __init__(self, *, path: str = "/ingest", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.objects: list[dict[str, Any]] = []
        self.content_types: list[str] = []

    def routes(self) -> list[tuple[str, Handler]]:
        return [(self.path, self._ingest)]

    def stored(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects)

    async def _ingest(self, request: web.Request, body: bytes) -> web.Response:
        kind = _content_type(request)
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
