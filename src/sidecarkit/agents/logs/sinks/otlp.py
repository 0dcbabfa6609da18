"""OpenTelemetry: OTLP/HTTP logs in the JSON encoding, to a collector or any OTLP backend.

``POST <endpoint>/v1/logs`` with ``Content-Type: application/json``, one
``ExportLogsServiceRequest`` per batch::

    {"resourceLogs": [{
      "resource": {"attributes": [{"key": "k8s.pod.name", "value": {"stringValue": "web-1"}}]},
      "scopeLogs": [{"scope": {"name": "sidecarkit", "version": "0.1.0"},
        "logRecords": [{"timeUnixNano": "1755771072000000000",
                        "observedTimeUnixNano": "1755771072000000000",
                        "severityNumber": 17, "severityText": "error",
                        "body": {"stringValue": "oops"},
                        "attributes": [{"key": "log.file.path",
                                        "value": {"stringValue": "/var/log/app/app.log"}}]}]}]}]}

The batch's labels become resource attributes, with the pod identity under the semantic
convention names (``pod`` -> ``k8s.pod.name``, ``namespace`` -> ``k8s.namespace.name``, ``node`` ->
``k8s.node.name``, ``container`` -> ``k8s.container.name``); other labels keep their names. Each
event's ``level`` field sets ``severityText`` and, when it is a known name, ``severityNumber``;
``stream`` becomes ``log.iostream``; ``trace_id`` and ``span_id`` holding hex of the right length
become ``traceId`` and ``spanId``; the other fields become attributes with typed values. Times are
decimal strings of nanoseconds (the JSON form of 64-bit integers); ``observedTimeUnixNano`` is
when the line was read.

Answers follow the OTLP/HTTP rules: only 429, 502, 503 and 504 are retried (after
``Retry-After``); a 200 carrying ``partialSuccess.rejectedLogRecords`` has those records counted as
rejected and is not retried, since the receiver has taken the rest; 400, 413 and every other
status are refused for good.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import orjson

from sidecarkit import __version__
from sidecarkit.agents.logs import records, sinks
from sidecarkit.agents.logs.sinks import _http

__all__ = ["RESOURCE_NAMES", "SEVERITY", "OtlpSink", "any_value", "create"]

PATH: Final = "/v1/logs"
OPTIONS: Final = {"service_name": "the service.name resource attribute"}
RETRIED: Final = frozenset({429, 502, 503, 504})

RESOURCE_NAMES: Final = {
    "pod": "k8s.pod.name",
    "namespace": "k8s.namespace.name",
    "node": "k8s.node.name",
    "container": "k8s.container.name",
    "pod_uid": "k8s.pod.uid",
}
"""Our label names -> OpenTelemetry semantic convention resource attributes."""

_LEVELS: Final = {
    "trace": 1,
    "debug": 5,
    "dbg": 5,
    "info": 9,
    "information": 9,
    "informational": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "err": 17,
    "fatal": 21,
    "panic": 21,
    "crit": 22,
    "critical": 22,
    "alert": 23,
    "emerg": 24,
    "emergency": 24,
    "t": 1,
    "d": 5,
    "i": 9,
    "w": 13,
    "e": 17,
    "f": 21,
}
SEVERITY: Final = {
    **_LEVELS,
    **{name.upper(): n for name, n in _LEVELS.items()},
    **{name.capitalize(): n for name, n in _LEVELS.items()},
}
"""Level names -> OTLP ``severityNumber`` (syslog's names mapped as the OpenTelemetry log data
model suggests)."""

_HEX32: Final = re.compile(r"[0-9a-fA-F]{32}")
_HEX16: Final = re.compile(r"[0-9a-fA-F]{16}")
_INT64: Final = (-(2**63), 2**63)


def create(spec: sinks.Spec) -> OtlpSink:
    common, own = _http.settings(spec, path=PATH, own=OPTIONS, example="http://collector:4318")
    options = _http.Options(common.name, own)
    client = _http.Client(common, content_type="application/json")
    return OtlpSink(common.name, client, service_name=options.text("service_name"))


def any_value(value: Any) -> dict[str, Any]:
    """``value`` as an OTLP JSON ``AnyValue``."""
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        low, high = _INT64
        return {"intValue": str(value)} if low <= value < high else {"stringValue": str(value)}
    if kind is float:
        return {"doubleValue": value} if math.isfinite(value) else {"stringValue": str(value)}
    if value is None:
        return {}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [_attribute(str(k), v) for k, v in value.items()]}}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attribute(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": any_value(value)}


class OtlpSink:
    """Exports batches as OTLP/HTTP JSON log records."""

    __slots__ = ("_resources", "client", "name", "scope", "service_name")

    def __init__(self, name: str, client: _http.Client, *, service_name: str | None = None) -> None:
        self.name = name
        self.client = client
        self.service_name = service_name
        self.scope = {"name": "sidecarkit", "version": __version__}
        self._resources: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def _resource(self, labels: dict[str, str]) -> dict[str, Any]:
        key = tuple(labels.items())
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) > 64:
                self._resources.clear()
            attributes = [_attribute(RESOURCE_NAMES.get(k, k), v) for k, v in key]
            if self.service_name is not None:
                attributes.append(_attribute("service.name", self.service_name))
            resource = self._resources[key] = {"attributes": attributes}
        return resource

    def body(self, batch: records.Batch) -> bytes:
        """The ``ExportLogsServiceRequest`` for ``batch``, in one orjson call."""
        logs: list[dict[str, Any]] = []
        add = logs.append
        for group in batch.groups:
            start = group.time_ns
            observed = str(start)
            common = [_attribute("log.file.path", group.source)]
            for index, (_, message, fields, time_ns) in enumerate(group.events):
                record: dict[str, Any] = {
                    "timeUnixNano": str(start + index if time_ns is None else time_ns),
                    "observedTimeUnixNano": observed,
                    "body": {"stringValue": message},
                    "attributes": common,
                }
                if fields:
                    _fields(record, fields, common)
                add(record)
        return orjson.dumps(
            {
                "resourceLogs": [
                    {
                        "resource": self._resource(batch.labels),
                        "scopeLogs": [{"scope": self.scope, "logRecords": logs}],
                    }
                ]
            }
        )

    async def send(self, batch: records.Batch) -> records.Outcome:
        reply = await self.client.post(_http.encode(self.body, batch))
        status = reply.status
        if status in RETRIED:
            return records.Outcome(retry=batch, retry_after=reply.retry_after)
        if not reply.ok:
            message = _status_message(reply.body) or _http.short(reply.text())
            return _http.refuse(self.name, batch, f"http {status}", f"HTTP {status}: {message}")
        rejected, message = _partial(reply.body)
        if not rejected:
            return records.Outcome()
        rejected = min(rejected, _http.count(batch))
        reason = f"partial success: {_http.short(message, 60)}" if message else "partial success"
        detail = f"partial success: {message or 'no message'}"
        return _http.refuse(self.name, batch, reason, detail, events=rejected)

    async def close(self) -> None:
        await self.client.close()


def _fields(record: dict[str, Any], fields: dict[str, Any], common: list[Any]) -> None:
    attributes = list(common)
    for key, value in fields.items():
        if key == "level" and type(value) is str:
            record["severityText"] = value
            number = SEVERITY.get(value) or SEVERITY.get(value.lower())
            if number:
                record["severityNumber"] = number
        elif key == "stream":
            attributes.append(_attribute("log.iostream", value))
        elif key == "trace_id" and type(value) is str and _HEX32.fullmatch(value):
            record["traceId"] = value.lower()
        elif key == "span_id" and type(value) is str and _HEX16.fullmatch(value):
            record["spanId"] = value.lower()
        else:
            attributes.append(_attribute(key, value))
    record["attributes"] = attributes


def _partial(body: bytes) -> tuple[int, str]:
    """``(rejectedLogRecords, errorMessage)`` of an export answer; ``(0, "")`` when none."""
    try:
        answer = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        return 0, ""
    partial = answer.get("partialSuccess") if isinstance(answer, dict) else None
    if not isinstance(partial, dict):
        return 0, ""
    message = str(partial.get("errorMessage") or "")
    try:
        rejected = int(partial.get("rejectedLogRecords") or 0)
    except (TypeError, ValueError):
        rejected = 0
    return max(rejected, 0), message


def _status_message(body: bytes) -> str | None:
    """The ``message`` of a ``google.rpc.Status`` answer, when it is one."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    message = answer.get("message") if isinstance(answer, dict) else None
    return str(message) if message else None
