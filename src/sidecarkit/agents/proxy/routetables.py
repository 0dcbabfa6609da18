"""HTTPRoute rules at run time: which rule a request matches, and which backend it goes to.

Every (route, rule, match) attached to one upstream is put in one list, sorted once by the
Gateway API's precedence, so a request takes the first entry that matches:

1. an ``Exact`` path match, then ``RegularExpression`` (longer pattern first), then
   ``PathPrefix``, the longest prefix first (the Gateway API leaves regular expressions'
   place to the implementation; this is Envoy Gateway's order);
2. a match with a ``method``;
3. more ``headers`` matches; 4. more ``queryParams`` matches;
5. the older route (``creationTimestamp``), then ``namespace/name`` alphabetically, then the
   order of rules and matches in the route.

A request that matches no rule gets 404, as a Gateway API implementation answers; a rule whose
backends all weigh 0 gets 500. The backend is drawn at random in proportion to the weights (as
Envoy does), so a canary's share holds over many requests, not per request.

Cost: a request through an upstream without routes pays nothing; with routes, a split of its
target, the comparisons of the entries tried, one random draw, and header edits only when a rule
has them. No I/O here.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from sidecarkit.agents.proxy import httproutes
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["Choice", "Table", "build", "edit_headers"]

T = TypeVar("T")
Headers = list[tuple[bytes, bytes]]
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


class Choice(Generic[T]):
    """One rule, ready to send a request: its backends with their weights, its edits, and the
    timeouts and retries it sets (resolved against the proxy's settings)."""

    __slots__ = (
        "attempts",
        "backends",
        "backoff",
        "bounds",
        "refusal",
        "request_edit",
        "request_timeout",
        "response_edit",
        "retry_status",
        "total",
        "try_timeout",
        "unresolved",
    )  # fmt: skip

    def __init__(
        self,
        rule: httproutes.Rule,
        services: Mapping[str, T],
        *,
        where: str,
        timeouts: proxy_settings.Timeouts,
        retries: proxy_settings.Retries,
    ) -> None:
        self.backends: list[T | None] = []
        """None for a backend that names no upstream: its share is answered 500."""
        self.bounds: list[int] = []
        total = 0
        for backend in rule.backends:
            if backend.weight:
                total += backend.weight
                self.backends.append(services.get(backend.name))
                self.bounds.append(total)
        self.total = total
        self.refusal: tuple[int, bytes] | None = None
        if not total:
            self.refusal = (500, b"%s: no backend with a weight above 0\n" % where.encode())
        self.unresolved = (
            500,
            b"%s: the backend is not an upstream of this proxy\n" % where.encode(),
        )
        self.request_edit = rule.request_headers
        self.response_edit = rule.response_headers
        self.request_timeout = (
            timeouts.request if rule.request_timeout is None else rule.request_timeout
        )
        self.try_timeout = timeouts.try_ if rule.backend_timeout is None else rule.backend_timeout
        self.attempts = retries.attempts if rule.retry_attempts is None else rule.retry_attempts + 1
        """Tries in all, the first included."""
        self.retry_status = frozenset(
            retries.on_status if rule.retry_codes is None else rule.retry_codes
        )
        self.backoff = rule.retry_backoff or 0.0
        """Seconds before each retry (``retry.backoff``); 0: at once."""

    def pick(self) -> T | None:
        if len(self.backends) == 1:
            return self.backends[0]
        return self.backends[bisect.bisect_right(self.bounds, random.random() * self.total)]


class _Entry(Generic[T]):
    __slots__ = ("choice", "headers", "method", "path", "path_kind", "query")

    def __init__(self, match: httproutes.Match, choice: Choice[T]) -> None:
        self.choice = choice
        self.path_kind = match.path.kind
        value = match.path.value.encode()
        if self.path_kind == "PathPrefix":
            value = value.rstrip(b"/")
        self.path: bytes | re.Pattern[bytes] = (
            re.compile(value) if self.path_kind == "RegularExpression" else value
        )
        self.method = match.method.encode() if match.method else None
        self.headers = [_value(m) for m in match.headers]
        self.query = [_value(m) for m in match.query]

    def matches(
        self,
        method: bytes,
        path: bytes,
        headers: dict[bytes, bytes] | None,
        query: dict[bytes, bytes] | None,
    ) -> bool:
        kind, want = self.path_kind, self.path
        if kind == "PathPrefix":
            assert isinstance(want, bytes)
            if want and path != want and not path.startswith(want + b"/"):
                return False
        elif kind == "Exact":
            if path != want:
                return False
        elif isinstance(want, re.Pattern) and want.fullmatch(path) is None:
            return False
        if self.method is not None and method != self.method:
            return False
        if self.headers and not _all(self.headers, headers or {}):
            return False
        return not self.query or _all(self.query, query or {})


def _value(match: httproutes.ValueMatch) -> tuple[bytes, bytes | re.Pattern[bytes]]:
    value = match.value.encode()
    return match.name.encode(), (re.compile(value) if match.kind == "RegularExpression" else value)


def _all(wanted: list[tuple[bytes, bytes | re.Pattern[bytes]]], have: dict[bytes, bytes]) -> bool:
    for name, want in wanted:
        got = have.get(name)
        if got is None:
            return False
        if isinstance(want, bytes):
            if got != want:
                return False
        elif want.fullmatch(got) is None:
            return False
    return True


def _precedence(
    route: httproutes.HTTPRoute, r: int, m: int, match: httproutes.Match
) -> tuple[object, ...]:
    kind = match.path.kind
    rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[kind]
    length = len(match.path.value.rstrip("/") if kind == "PathPrefix" else match.path.value)
    return (
        rank,
        -length,
        match.method is None,
        -len(match.headers),
        -len(match.query),
        route.created == "",
        route.created,
        f"{route.namespace}/{route.name}",
        r,
        m,
    )


class Table(Generic[T]):
    """The rules attached to one upstream, in precedence order."""

    __slots__ = ("entries", "headers", "name", "query")

    def __init__(self, name: str, entries: list[_Entry[T]]) -> None:
        self.name = name
        self.entries = entries
        self.headers = any(e.headers for e in entries)
        self.query = any(e.query for e in entries)

    def route(
        self, method: bytes, target: bytes, headers: Headers
    ) -> tuple[T | None, Choice[T] | None, tuple[int, bytes] | None]:
        """(the backend, its rule, None), or (None, rule or None, (status, detail)) when the
        request is answered by the proxy. Edits ``headers`` as the rule's filter says."""
        path, _, query_text = target.partition(b"?")
        fields: dict[bytes, bytes] | None = None
        if self.headers:
            fields = {}
            for name, value in headers:
                key = name.lower()
                fields[key] = fields[key] + b"," + value if key in fields else value
        query: dict[bytes, bytes] | None = None
        if self.query:
            query = {}
            for pair in query_text.split(b"&"):
                name, _, value = pair.partition(b"=")
                name = _unquote(name)
                if name and name not in query:  # the first value of a repeated name counts
                    query[name] = _unquote(value)
        for entry in self.entries:
            if entry.matches(method, path, fields, query):
                choice = entry.choice
                if choice.refusal is not None:
                    return None, choice, choice.refusal
                backend = choice.pick()
                if backend is None:
                    return None, choice, choice.unresolved
                if choice.request_edit is not None:
                    headers[:] = edit_headers(headers, choice.request_edit)
                return backend, choice, None
        return None, None, (404, b"no route of %s matches this request\n" % self.name.encode())


def _unquote(text: bytes) -> bytes:
    if b"%" not in text:
        return text
    return _PERCENT.sub(lambda m: bytes([int(m[1], 16)]), text)


def edit_headers(headers: Iterable[tuple[bytes, bytes]], edit: httproutes.HeaderEdit) -> Headers:
    """Apply a header modifier: ``set`` replaces every field of the name, ``add`` appends one,
    ``remove`` drops every field of the name (names compare without case)."""
    drop = {n.lower().encode() for n, _ in edit.set} | {n.lower().encode() for n in edit.remove}
    out = [(n, v) for n, v in headers if n.lower() not in drop]
    out += [(n.encode(), v.encode()) for n, v in (*edit.set, *edit.add)]
    if edit.remove:  # a name both added and removed ends removed
        gone = {n.lower().encode() for n in edit.remove}
        out = [(n, v) for n, v in out if n.lower() not in gone]
    return out


def build(
    routes: Iterable[httproutes.HTTPRoute],
    services: Mapping[str, T],
    *,
    timeouts: proxy_settings.Timeouts,
    retries: proxy_settings.Retries,
) -> dict[str, Table[T]]:
    """The table of each upstream that some route is attached to, by the upstream's name."""
    keyed: dict[str, list[tuple[tuple[object, ...], _Entry[T]]]] = {}
    for route in routes:
        for r, rule in enumerate(route.rules):
            where = f"HTTPRoute {route.namespace}/{route.name} rule {r}"
            choice = Choice(rule, services, where=where, timeouts=timeouts, retries=retries)
            for m, match in enumerate(rule.matches):
                entry = _Entry(match, choice)
                for parent in route.parents:
                    keyed.setdefault(parent, []).append((_precedence(route, r, m, match), entry))
    return {
        parent: Table(parent, [e for _, e in sorted(items, key=lambda pair: pair[0])])
        for parent, items in keyed.items()
    }
