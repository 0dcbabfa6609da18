"""A local receiver for OTLP/HTTP log export in the JSON encoding, with partial success."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.support.receivers import base

_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]*")

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


class OtlpReceiver(base.Receiver):
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

    def routes(self) -> list[tuple[str, base.Handler]]:
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
        kind = base.content_type(request)
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
