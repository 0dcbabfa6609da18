"""Gateway API ``HTTPRoute`` objects, read into the proxy's route specs.

The mesh profile of the Gateway API (GAMMA), which Linkerd and Istio both read, attaches an
``HTTPRoute`` to a Service through ``parentRefs``: every call to that Service is matched
against the route's rules and sent to the rule's weighted ``backendRefs``. Here a parent or a
backend is an upstream of the proxy's settings, named as the Service is. The object is
written as it is applied to a cluster (``apiVersion``, ``kind``, ``metadata``, ``spec``), so the
same YAML serves both; fields the proxy does not implement are refused by name rather than
silently ignored, except ``hostnames`` (meaningless for a Service parent, as GAMMA says).

Supported, per rule: ``matches`` (``path`` Exact, PathPrefix or RegularExpression; ``method``;
``headers`` and ``queryParams`` Exact or RegularExpression), ``filters``
(RequestHeaderModifier, ResponseHeaderModifier), ``backendRefs`` with ``weight``,
``timeouts.request`` and ``timeouts.backendRequest``, ``retry.codes``, ``retry.attempts`` and
``retry.backoff``.

No I/O here: the settings hand over the parsed YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "Backend",
    "HTTPRoute",
    "HeaderEdit",
    "Match",
    "Rule",
    "ValueMatch",
    "from_mapping",
    "to_mapping",
]

_GROUP: Final = "gateway.networking.k8s.io"
_DURATION: Final = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_PART: Final = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_UNIT: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TOKEN: Final = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
PATH_TYPES: Final = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES: Final = ("Exact", "RegularExpression")


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header or query parameter match (a path match when ``name`` is empty)."""

    kind: str
    """``Exact``, ``PathPrefix`` (paths only) or ``RegularExpression``."""
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Match:
    """One entry of a rule's ``matches``: every condition in it must hold."""

    path: ValueMatch
    method: str | None = None
    headers: tuple[ValueMatch, ...] = ()
    """Names lower-cased: header names compare without case."""
    query: tuple[ValueMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """A RequestHeaderModifier or ResponseHeaderModifier: set, then add, then remove."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    """The upstream (Service) the share goes to."""
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Rule:
    matches: tuple[Match, ...]
    backends: tuple[Backend, ...]
    request_headers: HeaderEdit | None = None
    response_headers: HeaderEdit | None = None
    request_timeout: float | None = None
    """``timeouts.request``: seconds over all tries; None keeps ``timeouts.request``; 0 is none."""
    backend_timeout: float | None = None
    """``timeouts.backendRequest``: seconds per try; None keeps ``timeouts.try``."""
    retry_codes: tuple[int, ...] | None = None
    retry_attempts: int | None = None
    """Retries after the first try (GEP-1731), so tries in all are one more."""
    retry_backoff: float | None = None
    """Seconds to wait before each retry; None: at once."""


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    name: str
    namespace: str
    created: str
    """``metadata.creationTimestamp`` (RFC 3339 sorts as text); "" sorts as the oldest after
    those that have one, in the order given: precedence ties go to the older route."""
    parents: tuple[str, ...]
    """The upstreams (Services) this route is attached to."""
    rules: tuple[Rule, ...]


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def _map(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, not {type(value).__name__}")
    return value


def _seq(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _fail(where, f"expected a list, not {type(value).__name__}")
    return list(value)


def _keys(data: Mapping[str, Any], where: str, allowed: tuple[str, ...], hint: str = "") -> None:
    for key in data:
        if key not in allowed:
            raise _fail(
                f"{where}.{key}",
                f"not supported by the proxy{hint}; the fields here are {', '.join(allowed)}",
            )


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise _fail(where, "give a non-empty string")
    return str(value)


def _duration(value: Any, where: str) -> float:
    """A Gateway API duration (``10s``, ``1m30s``, ``500ms``); ``0s`` turns it off."""
    text = str(value).strip()
    if not _DURATION.match(text):
        raise _fail(where, f"{value!r} is not a Gateway API duration such as 10s, 500ms or 1m30s")
    return sum(int(n) * _UNIT[u] for n, u in _PART.findall(text))


def _regex(value: str, where: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise _fail(where, f"{value!r} is not a regular expression ({exc})") from exc
    return value


def _path(data: Any, where: str) -> ValueMatch:
    data = _map(data, where)
    _keys(data, where, ("type", "value"))
    kind = str(data.get("type", "PathPrefix"))
    if kind not in PATH_TYPES:
        raise _fail(f"{where}.type", f"{kind!r} is unknown; use one of {', '.join(PATH_TYPES)}")
    value = str(data.get("value", "/"))
    if kind == "RegularExpression":
        return ValueMatch(kind, "", _regex(value, f"{where}.value"))
    if not value.startswith("/") or "//" in value or "?" in value or "#" in value:
        raise _fail(f"{where}.value", f"{value!r} is not an absolute path such as /api")
    return ValueMatch(kind, "", value)


def _values(items: Any, where: str, *, header: bool) -> tuple[ValueMatch, ...]:
    out: list[ValueMatch] = []
    seen: set[str] = set()
    for i, item in enumerate(_seq(items, where)):
        at = f"{where}[{i}]"
        entry = _map(item, at)
        _keys(entry, at, ("type", "name", "value"))
        kind = str(entry.get("type", "Exact"))
        if kind not in VALUE_TYPES:
            raise _fail(f"{at}.type", f"{kind!r} is unknown; use Exact or RegularExpression")
        name = _text(entry.get("name"), f"{at}.name")
        if header and not _TOKEN.match(name):
            raise _fail(f"{at}.name", f"{name!r} is not a header name")
        value = str(entry.get("value", ""))
        if kind == "RegularExpression":
            _regex(value, f"{at}.value")
        key = name.lower() if header else name
        if key in seen:  # the Gateway API: only the first entry with a name counts
            continue
        seen.add(key)
        out.append(ValueMatch(kind, key, value))
    return tuple(out)


def _match(data: Any, where: str) -> Match:
    data = _map(data, where)
    _keys(data, where, ("path", "method", "headers", "queryParams"))
    path = _path(data.get("path"), f"{where}.path")
    method = None
    if data.get("method") is not None:
        method = str(data["method"]).strip().upper()
        if not method.isalpha():
            raise _fail(f"{where}.method", f"{data['method']!r} is not an HTTP method such as GET")
    headers = _values(data.get("headers"), f"{where}.headers", header=True)
    query = _values(data.get("queryParams"), f"{where}.queryParams", header=False)
    return Match(path, method, headers, query)


def _pairs(items: Any, where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for i, item in enumerate(_seq(items, where)):
        at = f"{where}[{i}]"
        entry = _map(item, at)
        _keys(entry, at, ("name", "value"))
        name = _text(entry.get("name"), f"{at}.name")
        value = str(entry.get("value", ""))
        if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
            raise _fail(at, f"{name!r}: {value!r} is not a header field")
        out.append((name, value))
    return tuple(out)


def _edit(data: Any, where: str) -> HeaderEdit:
    data = _map(data, where)
    _keys(data, where, ("set", "add", "remove"))
    names = _seq(data.get("remove"), f"{where}.remove")
    remove = tuple(_text(n, f"{where}.remove[{i}]") for i, n in enumerate(names))
    return HeaderEdit(
        _pairs(data.get("set"), f"{where}.set"), _pairs(data.get("add"), f"{where}.add"), remove
    )


def _filters(items: Any, where: str) -> tuple[HeaderEdit | None, HeaderEdit | None]:
    request = response = None
    for i, item in enumerate(_seq(items, where)):
        at = f"{where}[{i}]"
        entry = _map(item, at)
        kind = entry.get("type")
        if kind == "RequestHeaderModifier":
            _keys(entry, at, ("type", "requestHeaderModifier"))
            request = _edit(entry.get("requestHeaderModifier"), f"{at}.requestHeaderModifier")
        elif kind == "ResponseHeaderModifier":
            _keys(entry, at, ("type", "responseHeaderModifier"))
            response = _edit(entry.get("responseHeaderModifier"), f"{at}.responseHeaderModifier")
        else:
            raise _fail(
                f"{at}.type",
                f"{kind!r} is not supported by the proxy; it applies RequestHeaderModifier and "
                "ResponseHeaderModifier (remove the filter or route it elsewhere)",
            )
    return request, response


def _service_ref(data: Mapping[str, Any], where: str) -> str:
    group = str(data.get("group", "") or "")
    kind = str(data.get("kind", "Service"))
    if group not in ("", "core") or kind != "Service":
        raise _fail(
            where,
            f"a {group or 'core'}/{kind} reference; the proxy routes to Services "
            "(its upstreams): write kind: Service",
        )
    return _text(data.get("name"), f"{where}.name")


def _backends(items: Any, where: str) -> tuple[Backend, ...]:
    out = []
    for i, item in enumerate(_seq(items, where)):
        at = f"{where}[{i}]"
        entry = _map(item, at)
        allowed = ("group", "kind", "name", "namespace", "port", "weight")
        _keys(entry, at, allowed, " (backendRefs[].filters: put filters on the rule)")
        name = _service_ref(entry, at)
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 1000000:
            raise _fail(f"{at}.weight", f"{weight!r} is not a whole number from 0 to 1000000")
        out.append(Backend(name, weight))
    return tuple(out)


def _rule(data: Any, where: str) -> Rule:
    data = _map(data, where)
    _keys(data, where, ("name", "matches", "filters", "backendRefs", "timeouts", "retry"))
    matches = tuple(
        _match(m, f"{where}.matches[{i}]")
        for i, m in enumerate(_seq(data.get("matches"), f"{where}.matches"))
    ) or (Match(ValueMatch("PathPrefix", "", "/")),)
    request, response = _filters(data.get("filters"), f"{where}.filters")
    backends = _backends(data.get("backendRefs"), f"{where}.backendRefs")
    timeouts = _map(data.get("timeouts"), f"{where}.timeouts")
    _keys(timeouts, f"{where}.timeouts", ("request", "backendRequest"))
    total = per_try = None
    if timeouts.get("request") is not None:
        total = _duration(timeouts["request"], f"{where}.timeouts.request")
    if timeouts.get("backendRequest") is not None:
        per_try = _duration(timeouts["backendRequest"], f"{where}.timeouts.backendRequest")
    if total and per_try and per_try > total:
        raise _fail(
            f"{where}.timeouts.backendRequest",
            "is longer than timeouts.request; make it at most as long",
        )
    retry = _map(data.get("retry"), f"{where}.retry")
    _keys(retry, f"{where}.retry", ("codes", "attempts", "backoff"))
    codes = None
    if retry.get("codes") is not None:
        listed = _seq(retry["codes"], f"{where}.retry.codes")
        codes = tuple(_code(c, f"{where}.retry.codes") for c in listed)
    attempts = None
    if retry.get("attempts") is not None:
        attempts = retry["attempts"]
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            raise _fail(f"{where}.retry.attempts", f"{attempts!r} is not a whole number >= 0")
    backoff = None
    if retry.get("backoff") is not None:
        backoff = _duration(retry["backoff"], f"{where}.retry.backoff")
    return Rule(matches, backends, request, response, total, per_try, codes, attempts, backoff)


def _code(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise _fail(where, f"{value!r} is not an HTTP status code from 400 to 599")
    return value


def from_mapping(data: Any, where: str, *, index: int = 0) -> HTTPRoute:
    """An ``HTTPRoute`` object as it is applied to a cluster; ValueError names the field."""
    data = _map(data, where)
    _keys(data, where, ("apiVersion", "kind", "metadata", "spec", "status"))
    version = str(data.get("apiVersion", f"{_GROUP}/v1"))
    if data.get("kind", "HTTPRoute") != "HTTPRoute" or not version.startswith(_GROUP + "/"):
        raise _fail(
            where,
            f"{version} {data.get('kind')} is not an HTTPRoute; write "
            f"apiVersion: {_GROUP}/v1 and kind: HTTPRoute",
        )
    meta = _map(data.get("metadata"), f"{where}.metadata")
    name = str(meta.get("name") or f"route-{index}")
    namespace = str(meta.get("namespace") or "default")
    created = str(meta.get("creationTimestamp") or "")
    spec = _map(data.get("spec"), f"{where}.spec")
    _keys(spec, f"{where}.spec", ("parentRefs", "hostnames", "rules"))
    parents = []
    for i, item in enumerate(_seq(spec.get("parentRefs"), f"{where}.spec.parentRefs")):
        at = f"{where}.spec.parentRefs[{i}]"
        ref = _map(item, at)
        _keys(ref, at, ("group", "kind", "name", "namespace", "port", "sectionName"))
        parents.append(_service_ref(ref, at))
    if not parents:
        raise _fail(
            f"{where}.spec.parentRefs",
            "missing; name the Service (an upstream) the route applies to, "
            "e.g. [{kind: Service, name: orders}]",
        )
    rules = tuple(
        _rule(r, f"{where}.spec.rules[{i}]")
        for i, r in enumerate(_seq(spec.get("rules"), f"{where}.spec.rules"))
    )
    if not rules:
        raise _fail(f"{where}.spec.rules", "missing; give at least one rule with backendRefs")
    return HTTPRoute(name, namespace, created, tuple(parents), rules)


def _edit_mapping(edit: HeaderEdit) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if edit.set:
        out["set"] = [{"name": n, "value": v} for n, v in edit.set]
    if edit.add:
        out["add"] = [{"name": n, "value": v} for n, v in edit.add]
    if edit.remove:
        out["remove"] = list(edit.remove)
    return out


def _match_mapping(match: Match) -> dict[str, Any]:
    out: dict[str, Any] = {"path": {"type": match.path.kind, "value": match.path.value}}
    if match.method:
        out["method"] = match.method
    for key, items in (("headers", match.headers), ("queryParams", match.query)):
        if items:
            out[key] = [{"type": m.kind, "name": m.name, "value": m.value} for m in items]
    return out


def to_mapping(route: HTTPRoute) -> dict[str, Any]:
    """The route as the proxy understood it (``--dry-run``), in the object's own shape."""
    rules = []
    for rule in route.rules:
        out: dict[str, Any] = {
            "matches": [_match_mapping(m) for m in rule.matches],
            "backendRefs": [{"name": b.name, "weight": b.weight} for b in rule.backends],
        }
        filters = []
        if rule.request_headers is not None:
            edit = _edit_mapping(rule.request_headers)
            filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": edit})
        if rule.response_headers is not None:
            edit = _edit_mapping(rule.response_headers)
            filters.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": edit})
        if filters:
            out["filters"] = filters
        timeouts = {}
        if rule.request_timeout is not None:
            timeouts["request"] = f"{int(rule.request_timeout * 1000)}ms"
        if rule.backend_timeout is not None:
            timeouts["backendRequest"] = f"{int(rule.backend_timeout * 1000)}ms"
        if timeouts:
            out["timeouts"] = timeouts
        retry: dict[str, Any] = {}
        if rule.retry_codes is not None:
            retry["codes"] = list(rule.retry_codes)
        if rule.retry_attempts is not None:
            retry["attempts"] = rule.retry_attempts
        if rule.retry_backoff is not None:
            retry["backoff"] = f"{int(rule.retry_backoff * 1000)}ms"
        if retry:
            out["retry"] = retry
        rules.append(out)
    meta: dict[str, Any] = {"name": route.name, "namespace": route.namespace}
    if route.created:
        meta["creationTimestamp"] = route.created
    return {
        "apiVersion": f"{_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": {"parentRefs": [{"kind": "Service", "name": p} for p in route.parents],
                 "rules": rules},
    }  # fmt: skip
