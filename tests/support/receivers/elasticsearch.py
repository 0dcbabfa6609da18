"""A local receiver for the Elasticsearch ``_bulk`` API, with per-item results."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.receivers import base

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?")

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


_GONE = object()


def filtered(value: Any, paths: list[list[str]]) -> Any:
    """``value`` with only the parts ``paths`` name, as ``filter_path`` does: each path is a
    list of field names, ``*`` matching any one; arrays are looked through; objects left empty
    are dropped. ``_GONE`` when nothing is left."""
    if any(not path for path in paths):
        return value
    if isinstance(value, list):
        items = [filtered(item, paths) for item in value]
        kept = [item for item in items if item is not _GONE]
        return kept if kept else _GONE
    if not isinstance(value, dict):
        return _GONE
    out = {}
    for key, item in value.items():
        rest = [path[1:] for path in paths if path[0] in ("*", key)]
        if rest:
            kept = filtered(item, rest)
            if kept is not _GONE:
                out[key] = kept
    return out if out else _GONE


class ElasticsearchReceiver(base.Receiver):
    """A local server that implements the Elasticsearch ``_bulk`` API as documented, not
    Elasticsearch.

    ``POST /_bulk`` and ``POST /<index>/_bulk`` with ``Content-Type: application/x-ndjson`` (or
    ``application/json``; anything else is 406). The body must end with a newline; every action
    line must be an object with one of ``index``, ``create``, ``update``, ``delete`` and known
    metadata, followed by its source line (none for ``delete``); a malformed request is refused
    whole with Elasticsearch's error shape. Items are answered in request order with their own
    status: ``create`` of an existing ``_id`` is 409 ``version_conflict_engine_exception``;
    a source that is not a JSON object, or an ``@timestamp`` that is not a date, is 400
    ``document_parsing_exception``. Documents are stored per index and ``_id``. The
    ``filter_path`` query parameter keeps only the named parts of the answer (dotted field names,
    ``*`` for any one field), as Elasticsearch's response filtering does.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.indices: dict[str, _Index] = {}
        self._item_failures: list[_ItemFailure] = []

    def routes(self) -> list[tuple[str, base.Handler]]:
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
        kind = base.content_type(request)
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
        answer = {"took": took, "errors": errors, "items": items}
        paths = [p.split(".") for p in request.query.get("filter_path", "").split(",") if p]
        if paths:
            kept = filtered(answer, paths)
            answer = kept if isinstance(kept, dict) else {}
        return web.json_response(answer)

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
