"""Elasticsearch and OpenSearch: the ``_bulk`` API with ``create`` and deterministic ids.

``POST <endpoint>/<index>/_bulk`` with ``Content-Type: application/x-ndjson``, two lines per event
and a final newline::

    {"create":{"_id":"1f4c9a0e7b2d3c58-17"}}
    {"@timestamp":"2026-08-21T10:11:12.123456789Z","message":"GET / 200",
     "log":{"file":{"path":"/var/log/app/app.log"}},"pod":"web-1","namespace":"shop"}

The document holds ``@timestamp`` (RFC 3339, UTC, nanoseconds), ``message``, ``log.file.path``,
the batch's labels and the event's fields; on a name clash the shipper's keys win, so every
document has the same core shape. ``create`` (not ``index``) is what data streams accept, and with
an ``_id`` made from the file's identity and the event's line number it makes replays harmless: a
document sent twice is refused the second time with 409, which counts as delivered. An index with
a date in it, or an endpoint already ending in ``/_bulk``, is named in each action line instead
(``{"create":{"_index":"logs-2026.08.21","_id":...}}``).

Answers: the request is 200 even when items fail. The URL asks for ``errors`` and each item's
``status`` and ``error`` alone (``filter_path``, unless the endpoint names its own); an answer
saying ``"errors":false`` is taken without reading its items. Otherwise each item is read in
order: 2xx and 409 are delivered; 429 and 5xx items come back in ``Outcome.retry`` (only those
events); other 4xx items (mapping errors, bad documents) are rejected for good, counted by the
error type Elasticsearch names. A whole request answered 429 or 5xx is retried; 413 (body too
large) and other statuses are refused for good with the reason Elasticsearch gives.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Final
from urllib.parse import quote

import orjson

from sidecarkit.agents.logs import records, sinks
from sidecarkit.agents.logs.sinks import _http, _lines

__all__ = ["ElasticsearchSink", "create", "document_id", "id_prefix"]

log = logging.getLogger("sidecarkit.agent.logs.sinks")

OPTIONS: Final = {
    "index": "the index or data stream, optionally with %Y %m %d %y %j from the event's UTC date",
    "api_key": "an Elasticsearch API key (base64 'id:key'), sent as Authorization: ApiKey",
    "api_key_file": "a file holding the API key (a mounted secret), read again when it changes",
}
DEFAULT_INDEX: Final = "logs-sidecarkit"
FILTER_PATH: Final = "filter_path=errors,items.*.status,items.*.error"
"""Added to the ``_bulk`` URL unless it names its own ``filter_path``: Elasticsearch and
OpenSearch then answer each item with its status (and error) alone, a sixth of the bytes of a
full item, which the agent would otherwise read for every event it ships."""

_DATE_DIRECTIVES: Final = frozenset("Ymdyj")
_BAD_INDEX: Final = re.compile(r'[\\/*?"<>| ,#:A-Z]')
_OURS: Final = frozenset({"@timestamp", "message", "log"})
_ERRORS_FALSE: Final = re.compile(rb'[{,]\s*"errors"\s*:\s*false\s*[,}]')


def create(spec: sinks.Spec) -> ElasticsearchSink:
    common, own = _http.settings(spec, path=None, own=OPTIONS, example="http://elasticsearch:9200")
    options = _http.Options(common.name, own)
    index = options.text("index") or DEFAULT_INDEX
    _check_index(common.name, index)
    common, in_url = _bulk_url(common, index)
    api_key, key_file = options.text("api_key"), options.path("api_key_file")
    headers = None
    chosen = [
        api_key is not None,
        key_file is not None,
        common.authorization is not None,
        common.bearer_token_file is not None,
    ]
    if sum(chosen) > 1:
        raise ValueError(
            f"sink {common.name!r}: set one of 'api_key', 'api_key_file', 'username'/'password' "
            f"and 'bearer_token_file', not several"
        )
    if api_key is not None:
        headers = {"Authorization": f"ApiKey {api_key}"}
    if key_file is not None:
        common = replace(
            common, secret_headers=(*common.secret_headers, ("Authorization", key_file, "ApiKey "))
        )
    client = _http.Client(
        common, content_type="application/x-ndjson", headers=headers, limit=64 << 20
    )
    return ElasticsearchSink(common.name, client, index=index, in_url=in_url)


def _bulk_url(common: _http.Settings, index: str) -> tuple[_http.Settings, bool]:
    """The ``_bulk`` URL, and whether it names the index.

    A fixed index goes in the path (``/<index>/_bulk``) when the agent makes the path: action
    lines then carry the ``_id`` alone: about 8 % fewer bytes per event to build, send and parse.
    An endpoint already ending in ``/_bulk`` is kept as given, as is any index with a date in it;
    their action lines name the index."""
    base, _, query = common.url.partition("?")
    in_url = False
    if not base.rstrip("/").endswith("/_bulk"):
        in_url = "%" not in index
        name = f"/{quote(index, safe='')}" if in_url else ""
        base = f"{base.rstrip('/')}{name}/_bulk"
    if not any(p.startswith("filter_path=") for p in query.split("&")):
        query = f"{query}&{FILTER_PATH}" if query else FILTER_PATH
    return replace(common, url=f"{base}?{query}"), in_url


def _check_index(name: str, index: str) -> None:
    directives = set(re.findall(r"%(.)", index))
    if directives - _DATE_DIRECTIVES - {"%"}:
        raise ValueError(
            f"sink {name!r}: option 'index' {index!r} uses "
            f"{', '.join('%' + d for d in sorted(directives - _DATE_DIRECTIVES))}; "
            f"only %Y %m %d %y %j (the event's UTC date) are allowed"
        )
    sample = time.strftime(index, time.gmtime(0))
    if _BAD_INDEX.search(sample) or sample[:1] in ("-", "_", "+") or sample in (".", ".."):
        raise ValueError(
            f"sink {name!r}: option 'index' {index!r} is not a valid index name: use lowercase, "
            f'no spaces or any of \\ / * ? " < > | , # :, and do not start with - _ +'
        )


def id_prefix(key: str) -> str:
    """The part of ``_id`` shared by the events of the file whose identity is ``key``."""
    return hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest() + "-"


def document_id(key: str, line: int) -> str:
    """The ``_id`` of the event at ``line`` of the file whose identity is ``key``.

    ``<16 hex digits of BLAKE2b of key>-<line>``: the same on every replay, distinct for every
    line of a file, and distinct across files unless two of a few billion file identities share
    64 bits of hash. Hashing once per file rather than per event keeps the hot loop cheap, and
    ids of one file sharing a prefix suit Lucene's term dictionary.
    """
    return f"{id_prefix(key)}{line}"


class ElasticsearchSink:
    """Bulk-indexes batches into one Elasticsearch or OpenSearch cluster."""

    __slots__ = ("_actions", "_days", "_tails", "client", "index", "name", "raw")

    def __init__(
        self, name: str, client: _http.Client, *, index: str = DEFAULT_INDEX, in_url: bool = False
    ) -> None:
        self.name = name
        self.raw = True
        """Groups of a ``raw`` source may come as their bytes alone (``Group.raw``, no events):
        the shipper then skips making an event per line, and ``body`` encodes them in bulk."""
        self.client = client
        self.index = index
        self._days: dict[int, bytes] = {}
        self._actions: bytes | None = None if "%" in index else self._action(index)
        if in_url:  # the URL names the index: the action names the id alone
            self._actions = b'{"create":{"_id":"'
        self._tails: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}

    @staticmethod
    def _action(index: str) -> bytes:
        return b'{"create":{"_index":' + orjson.dumps(index) + b',"_id":"'

    def _action_for(self, time_ns: int) -> bytes:
        day = time_ns // 86_400_000_000_000
        action = self._days.get(day)
        if action is None:
            if len(self._days) > 16:
                self._days.clear()
            name = time.strftime(self.index, time.gmtime(day * 86_400))
            action = self._days[day] = self._action(name)
        return action

    def _tail(self, source: str, labels: dict[str, str]) -> bytes:
        """The constant end of a document without fields: ``,"log":...,<labels>}``."""
        key = (source, tuple(labels.items()))
        tail = self._tails.get(key)
        if tail is None:
            if len(self._tails) > 256:
                self._tails.clear()
            rest: dict[str, Any] = {"log": {"file": {"path": source}}}
            rest.update((k, v) for k, v in labels.items() if k not in _OURS)
            tail = self._tails[key] = b"," + orjson.dumps(rest)[1:]
        return tail

    def body(self, batch: records.Batch) -> bytes:
        """The ``_bulk`` body for ``batch``: action and document lines, ending in a newline.

        A group that travels as its bytes alone (``Group.raw``, no events) is encoded in bulk
        (see ``_raw``).
        Otherwise, per event: one ``orjson.dumps`` of the message and one bytes formatting; the
        action's index and id prefix, the document's end (file and labels) and the second of the
        timestamp are made once per group or second.
        """
        parts: list[bytes] = []
        add = parts.append
        fixed = self._actions
        labels = {k: v for k, v in batch.labels.items() if k not in _OURS}
        dumps, second = orjson.dumps, _http.second
        last, stamp = -1, b""
        for group in batch.groups:
            start, source = group.time_ns, group.source
            tail = self._tail(source, labels)
            prefix = id_prefix(group.key).encode()
            if group.raw is not None and not group.events:
                parts += self._raw(group, prefix, tail)
                continue
            head = None if fixed is None else fixed + prefix
            for index, (line, message, fields, time_ns) in enumerate(group.events):
                when = start + index if time_ns is None else time_ns
                seconds, fraction = divmod(when, 1_000_000_000)
                if seconds != last:
                    last, stamp = seconds, second(seconds)
                action = head if head is not None else self._action_for(when) + prefix
                if fields:
                    doc: dict[str, Any] = {
                        "@timestamp": (b"%b.%09dZ" % (stamp, fraction)).decode(),
                        "message": message,
                        "log": {"file": {"path": source}},
                        **labels,
                    }
                    add(b'%b%d"}}\n%b\n' % (action, line, dumps({**doc, **fields, **doc})))
                else:
                    add(
                        b'%b%d"}}\n{"@timestamp":"%b.%09dZ","message":%b%b\n'
                        % (action, line, stamp, fraction, dumps(message), tail)
                    )
        return b"".join(parts)

    def _raw(self, group: records.Group, prefix: bytes, tail: bytes) -> list[bytes]:
        """The pieces of the action and document lines of a group of bytes alone.

        The same documents as for its events (line ``first + i``, time ``time_ns + i``), made
        without a Python call per line: five pieces per event, filled by slice assignment::

            [end of the previous document +] action + id prefix + line // 1000
            line % 1000 + '"}}\\n{"@timestamp":"<second>.'
            nanoseconds // 1000
            nanoseconds % 1000 + 'Z","message":"'
            the escaped line

        A group whose times cross a second (rarely: its lines would have to span the end of
        one) is done in one run per second.
        """
        assert group.raw is not None
        lines = _lines.json_strings(group.raw)
        total = len(lines)
        end = b'"' + tail + b"\n"
        out: list[bytes] = []
        done = 0
        while done < total:
            when = group.time_ns + done
            seconds, fraction = divmod(when, 1_000_000_000)
            n = min(total - done, 1_000_000_000 - fraction)
            action = (self._actions or self._action_for(when)) + prefix
            stamp = b'"}}\n{"@timestamp":"' + _http.second(seconds) + b"."
            leads, ids = _lines.numbers(group.first + done, n, before=end + action, after=stamp)
            leads[0] = leads[0][len(end) :]
            highs, lows = _lines.numbers(fraction, n, width=9, after=b'Z","message":"')
            parts = leads * 5
            parts[0::5] = leads
            parts[1::5] = ids
            parts[2::5] = highs
            parts[3::5] = lows
            parts[4::5] = lines[done : done + n]
            out += parts
            out.append(end)
            done += n
        return out

    async def send(self, batch: records.Batch) -> records.Outcome:
        reply = await self.client.post(_http.encode(self.body, batch))
        status = reply.status
        if status == 429 or status >= 500:
            return records.Outcome(retry=batch, retry_after=reply.retry_after)
        if not reply.ok:
            kind, reason = _error(reply.body)
            if status == 413:
                why = "http 413: request too large"
                detail = (
                    "HTTP 413: the bulk request is larger than the cluster's "
                    "http.max_content_length; lower the agent's batch size or raise that limit"
                )
            else:
                why = f"http {status}: {kind}" if kind else f"http {status}"
                detail = f"HTTP {status}: {kind or ''} {reason or _http.short(reply.text())}"
            return _http.refuse(self.name, batch, why, detail)
        if _no_errors(reply.body):
            return records.Outcome()
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            log.warning(
                "sink %s: HTTP %d from %s is not a bulk answer (%s); sending batch %d again",
                self.name,
                status,
                self.client.settings.url,
                _http.short(reply.text()),
                batch.seq,
            )
            return records.Outcome(retry=batch, retry_after=reply.retry_after)
        if answer.get("errors") is False:
            return records.Outcome()
        return self._items(batch, answer.get("items"), reply)

    def _items(self, batch: records.Batch, items: Any, reply: _http.Reply) -> records.Outcome:
        total = _http.count(batch)
        if not isinstance(items, list) or len(items) != total:
            got = len(items) if isinstance(items, list) else "no"
            log.warning(
                "sink %s: bulk answer has %s items for %d events; sending batch %d again",
                self.name,
                got,
                total,
                batch.seq,
            )
            return records.Outcome(retry=batch, retry_after=reply.retry_after)
        reasons: Counter[str] = Counter()
        keep: list[list[bool]] = []
        again = 0
        example = first = ""
        position = 0
        for group in batch.groups:
            flags = []
            for index in range(group.count()):
                item = items[position]
                position += 1
                result: Any = next(iter(item.values()), None) if isinstance(item, dict) else None
                code = result.get("status") if isinstance(result, dict) else None
                if isinstance(code, bool) or not isinstance(code, int):
                    code = 500  # an item without a status: unknown, so sent again
                retry = code == 429 or code >= 500
                flags.append(retry)
                if retry:
                    again += 1
                elif not (200 <= code < 300 or code == 409):
                    kind, why = _item_error(result)
                    reasons[kind] += 1
                    if not example:
                        example, first = f"{kind}: {why}", records.sample(group, index)
            keep.append(flags)
        rejected = sum(reasons.values())
        return records.Outcome(
            rejected=rejected,
            reasons=dict(reasons),
            detail=_http.short(example, 300),
            sample=first,
            retry=batch.subset(keep) if again else None,
            retry_after=reply.retry_after if again else None,
        )

    async def close(self) -> None:
        await self.client.close()


def _no_errors(body: bytes) -> bool:
    """Whether a bulk answer says ``"errors":false``, read from its bytes.

    Elasticsearch writes ``took`` and ``errors`` before ``items``, and the items are as many as
    the events: checking the head alone spares parsing them when nothing failed (nearly always).
    The answer must also end as a whole one does (``]}`` after the items), so that a cut-off
    answer is parsed, found broken and the batch sent again.
    """
    cut = body.find(b'"items"')
    head = body if cut < 0 else body[:cut]
    tail = body[-16:].rstrip()
    return (
        head.startswith(b"{")
        and tail.endswith(b"}" if cut < 0 else b"]}")
        and _ERRORS_FALSE.search(head) is not None
    )


def _error(body: bytes) -> tuple[str | None, str | None]:
    """``(type, reason)`` of an Elasticsearch error answer, when it is one."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        kind, reason = error.get("type"), error.get("reason")
        return (str(kind) if kind else None), (str(reason) if reason else None)
    if isinstance(error, str):
        return None, error
    return None, None


def _item_error(result: Any) -> tuple[str, str]:
    error = result.get("error") if isinstance(result, dict) else None
    if isinstance(error, dict):
        return str(error.get("type") or "error"), str(error.get("reason") or "")
    return f"http {result.get('status')}" if isinstance(result, dict) else "error", str(error or "")
