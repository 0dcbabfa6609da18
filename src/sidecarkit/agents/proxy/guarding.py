"""The security stages on a listener's request path: authenticate, authorize, rate-limit.

Called once per request head by ``forwarding`` (``Guard.stop``), after the head was checked
and before the request is dispatched; on an HTTP/2 port once per stream, by ``h2guarding``
(the same stages: only how a refusal is answered and the request rewritten differ). In order:

====================  ========================================================================
stage                 outcome
====================  ========================================================================
path                  ambiguous target (``policies.normal_path``): 400, when a rule or a
                      limit matches on paths
authentication        a credential that does not verify: 401; none and ``required``: 401;
                      a JWT whose ``kid`` is not known yet: the exchange waits (``gate``)
                      until the key set was fetched again, then goes on from here
authorization         denied by a rule or by default: 403
rate limits           a bucket is empty: 429 with ``Retry-After`` and ``RateLimit-*``
forwarded             headers only the proxy may set are replaced: verified claims, the
                      API key's name; the credential is removed
====================  ========================================================================

Every refusal is counted (``/metrics``) and logged with its reason at INFO, at most
``LOG_BURST`` lines a second per kind of refusal (the rest are counted and summed up in the
next line), so a flood of bad requests cannot flood the log. Allowed requests are logged at
DEBUG. Tokens are never logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from sidecarkit.agents.proxy import buckets, heads, policies, telemetry, tokens

if TYPE_CHECKING:
    from sidecarkit.agents.proxy.exchanges import Exchange
    from sidecarkit.agents.proxy.forwarding import Downstream

__all__ = ["Guard"]

log = logging.getLogger("sidecarkit.agent.proxy.policy")

LOG_BURST: Final = 10

Forward = Callable[[Any, list[tuple[bytes, bytes, bytes]], frozenset[bytes], bytes], None]
"""Rewrites a request going upstream: (request, fields seen, names to strip, fields to add)."""
_OPEN: Final = policies.Policy()


class _Throttle:
    """At most ``LOG_BURST`` lines a second per kind; the rest are counted."""

    __slots__ = ("lines", "second", "skipped")

    def __init__(self) -> None:
        self.second = 0
        self.lines: dict[str, int] = {}
        self.skipped: dict[str, int] = {}

    def info(self, kind: str, message: str, *args: Any) -> None:
        second = int(time.monotonic())
        if second != self.second:
            self.second = second
            self.lines.clear()
        count = self.lines.get(kind, 0)
        if count >= LOG_BURST:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        self.lines[kind] = count + 1
        skipped = self.skipped.pop(kind, 0)
        if skipped:
            message += " (and %d more like it not logged)"
            args = (*args, skipped)
        log.info(message, *args)

    def flush(self, now: float | None = None) -> None:
        """Report what was held back once its second is over (or now, when ``now`` is None),
        so a flood that stops is still summed up in the log, not only in the counters."""
        if not self.skipped or (now is not None and int(now) == self.second):
            return
        for kind, skipped in self.skipped.items():
            log.info("refused %s ...: %d more like it not logged", kind, skipped)
        self.skipped.clear()


class Guard:
    """One listener's policy, its buckets and its counters."""

    def __init__(
        self,
        policy: policies.Policy,
        *,
        authenticator: tokens.Authenticator | None,
        direction: str,
        upstream: str,
    ) -> None:
        self.authenticator = authenticator if direction == "inbound" else None
        self.direction = direction
        self.labels = {"direction": direction, "upstream": upstream}
        self.counts: dict[tuple[str, str, str], int] = {}
        """(metric, label name, label value) -> count since the last scrape."""
        self.buckets: dict[str, buckets.Buckets] = {}
        self.authn_ok = 0
        self.unruled = 0
        self.allowed: dict[str, int] = {}
        """The two counts every allowed request adds to, kept apart from ``counts`` to cost an
        addition each rather than a call."""
        self.throttle = _Throttle()
        self.waiting: dict[str, list[tuple[Downstream, Exchange]]] = {}
        """Exchanges waiting for an issuer's key set, by issuer."""
        self.fetch: Callable[[str], None] | None = None
        """Asks for an issuer's key set to be fetched now (``keysources.Sources.want``)."""
        self.forward = self._forwarder()
        """Removes the fields in ``strip`` from the request going upstream and adds the
        verified ones (a function, not a method: one call on the hot path)."""
        self.take(policy, self.authenticator)

    def _forwarder(self) -> Forward:
        """The request rewrite of this listener's protocol (HTTP/1.1: the head's bytes)."""
        return _rewrite

    def take(
        self, policy: policies.Policy, authenticator: tokens.Authenticator | None = None
    ) -> None:
        """Use ``policy`` from the next request on (at start, and when the file changed), with
        ``authenticator`` checking its ``authentication`` (``keysources.Sources.update``). A
        limit kept with the same name, rate and burst keeps its buckets, so a reload does not
        hand every client a fresh burst. An outbound guard takes the ``outbound:`` section
        (none: it lets everything through at the cost of one test)."""
        if self.direction != "inbound":
            policy, authenticator = policy.outbound or _OPEN, None
        previous, self.authenticator = self.authenticator, authenticator
        self.strip = authenticator.always_strip if authenticator is not None else frozenset()
        spec = policy.authentication
        self.required = spec is not None and spec.required
        self.realm = spec.realm.encode() if spec is not None else b""
        old = self.buckets
        self.buckets = {
            x.name: old[x.name]
            if x.name in old and (old[x.name].rate, old[x.name].burst) == (x.rate, x.burst)
            else buckets.Buckets(rate=x.rate, burst=x.burst)
            for x in policy.rate_limits
        }
        self.limits = tuple(
            (limit, policy.scope_of(limit), self.buckets[limit.name])
            for limit in policy.rate_limits
        )
        """(limit, its method/path scope or None for every request, its buckets)"""
        rule_headers = {name.encode() for rule in policy.rules or () for name, _ in rule.headers}
        limit_headers = {
            x.key[7:].encode() for x in policy.rate_limits if x.key.startswith("header:")
        }
        self.rules_read_headers = bool(rule_headers or limit_headers)
        self.wanted = frozenset(
            {b"authorization", *self.strip, *rule_headers, *limit_headers}
            | ({authenticator.key_header} if authenticator is not None else set())
        )
        """The request fields any stage reads or may remove; an HTTP/2 request's trailers lose
        them all (no stage reads a trailer, and some servers merge trailers into the fields)."""
        self.wanted_sizes = frozenset(len(name) for name in self.wanted)
        read = [(x.paths, x.shadow) for x in policy.rules or ()]
        read += [(x.paths, x.shadow) for x in policy.rate_limits]
        read = [(paths, shadow) for paths, shadow in read if paths]
        self.paths = any(not shadow for _, shadow in read)
        """Some enforced rule or limit matches on paths: ambiguous ones are refused."""
        self.shadow_paths = bool(read) and not self.paths
        """Only shadow ones do: an ambiguous path is counted and logged as a 400 they would
        cause, and let through."""
        self.open = policy.rules is None and not policy.rate_limits
        """Nothing after authentication: no request view needs to be made."""
        self.shadowed = policy.shadowed
        """Some rule is in shadow mode: every request is also decided with it."""
        self.idle = self.open and authenticator is None
        """Nothing at all to do (an outbound listener of a policy without ``outbound:``)."""
        self.policy = policy
        if authenticator is not previous:  # what waited for a key is decided by the new one
            for issuer in list(self.waiting):
                self.keys_arrived(issuer)

    # -- the hook ------------------------------------------------------------------------
    def stop(self, down: Downstream, ex: Exchange) -> bool:
        """Run the stages; True when the request was answered here (``ex.local`` is set)."""
        if self.idle:
            return False
        path = b""
        if self.paths:  # only rules on paths can be fooled by a path the app reads otherwise
            path, why = policies.normal_path(ex.target)
            if why:
                return self._refuse(ex, 400, b"%s\n" % why.encode(), "path", why, down)
        elif self.shadow_paths:
            path, why = policies.normal_path(ex.target)
            if why:  # path b"": the shadow rules and limits are not asked about this one
                self._count("http_authz_shadow_deny_total", "rule", "ambiguous-path")
                self.throttle.info(
                    "shadow 400 path", "shadow: would refuse 400 (%s); %s", why, _who(down, ex, "")
                )
        # one pass over the fields, keeping only those some stage reads or may remove
        headers: dict[bytes, tuple[bytes, ...]] = {}
        raw: list[tuple[bytes, bytes, bytes]] = []
        wanted = self.wanted
        sizes = self.wanted_sizes
        for name, value in down.headers:
            if len(name) not in sizes:  # names are ASCII tokens: lower() keeps the length
                continue
            key = name.lower()
            if key in wanted:
                headers[key] = (*headers.get(key, ()), value)
                raw.append((key, name, value))
        outcome = None
        if self.authenticator is not None:
            outcome = self.authenticator.authenticate(headers)
            if outcome.kind == tokens.PENDING:
                self.waiting.setdefault(outcome.issuer, []).append((down, ex))
                ex.gate = (path, headers, raw)
                if self.fetch is not None:
                    self.fetch(outcome.issuer)
                return False
        return self._after_authentication(down, ex, path, headers, raw, outcome)

    def keys_arrived(self, issuer: str) -> None:
        """The key set of ``issuer`` was fetched (or failed to be), or the authentication
        changed: finish what waited."""
        for down, ex in self.waiting.pop(issuer, []):
            if ex.done or ex.gate is None:
                continue
            path, headers, raw = ex.gate
            ex.gate = None
            if self.paths and not path:  # the policy was reloaded meanwhile
                path, why = policies.normal_path(ex.target)
                if why:
                    self._refuse(ex, 400, b"%s\n" % why.encode(), "path", why, down)
                    self._resume(down, ex, answered=True)
                    continue
            outcome = None
            if self.authenticator is not None:  # None: the new policy authenticates nobody
                outcome = self.authenticator.authenticate(headers)
            if outcome is not None and outcome.kind == tokens.PENDING:  # still unknown: refuse
                outcome = tokens.Outcome(tokens.REFUSED, reason="unknown kid after a refetch")
            answered = self._after_authentication(down, ex, path, headers, raw, outcome)
            self._resume(down, ex, answered=answered)

    def _resume(self, down: Any, ex: Any, *, answered: bool) -> None:
        """Go on with a request that waited for a key set: answered here, or let through.
        HTTP/1.1 answers in order, so it goes once it is first in its connection's queue."""
        if answered:
            down.service.in_flight -= 1  # counted as in flight when it began to wait
        if down.queue and down.queue[0] is ex:
            ex.dispatch()

    def _after_authentication(
        self,
        down: Downstream,
        ex: Exchange,
        path: bytes,
        headers: dict[bytes, tuple[bytes, ...]],
        raw: list[tuple[bytes, bytes, bytes]],
        outcome: tokens.Outcome | None,
    ) -> bool:
        subject = ""
        add = b""
        strip = self.strip
        if outcome is not None:
            if outcome.kind == tokens.REFUSED:
                return self._unauthenticated(down, ex, outcome)
            if outcome.kind == tokens.NONE:
                if self.required:
                    return self._unauthenticated(down, ex, outcome)
                self._count("http_authn_total", "result", "anonymous")
            else:
                self.authn_ok += 1
                subject = outcome.subject
                add = outcome.add
                strip = outcome.strip or strip
        if self.open:  # authentication alone: no rule to ask, no bucket to fill
            self.unruled += 1
            self.forward(ex, raw, strip, add)
            return False
        if self.rules_read_headers:  # the rules see verified claims only, never the client's
            headers = {k: v for k, v in headers.items() if k not in strip}
            for name, value in outcome.fields if outcome is not None else ():
                headers[name] = (*headers.get(name, ()), value)
        peer = policies.peer_identity(down.peer) if down.peer else ""
        request = policies.Request(
            ex.method, path, headers, peer, subject, down.client, ex.service.name
        )
        decision = self.policy.authorize(request)
        if self.shadowed:
            self._audit(down, ex, request, decision)
        if not decision.allowed:
            self._count("http_authz_deny_total", "rule", decision.rule)
            body = b"forbidden by policy (%s)\n" % decision.rule.encode()
            return self._refuse(ex, 403, body, "authz", f"rule {decision.rule}", down, subject)
        allowed = self.allowed
        allowed[decision.rule] = allowed.get(decision.rule, 0) + 1
        if self.buckets and self._limited(down, ex, request):
            return True
        if log.isEnabledFor(logging.DEBUG):
            log.debug("allow rule=%s %s", decision.rule, _who(down, ex, subject))
        self.forward(ex, raw, strip, add)
        return False

    def _limited(self, down: Downstream, ex: Exchange, request: policies.Request) -> bool:
        now = time.monotonic()
        closest: tuple[int, policies.RateLimit, buckets.Buckets, bytes] | None = None
        """The ``headers: true`` limit with the fewest tokens left, for the admitted answer."""
        for limit, scope, table in self.limits:
            if scope is not None and not scope(request):
                continue
            key = request.client if limit.key == "client_ip" else _key(limit.key, request)
            if key is None:
                continue
            wait = table.take(key, now)
            if wait:
                if limit.shadow:
                    self._count("http_ratelimit_shadow_limited_total", "limit", limit.name)
                    self.throttle.info(
                        f"shadow 429 {limit.name[:24]}", "shadow: limit %s would refuse 429; %s",
                        limit.name, _who(down, ex, request.subject),
                    )  # fmt: skip
                    continue
                self._count("http_ratelimit_limited_total", "limit", limit.name)
                extra = _limit_fields(limit, wait, table.reset_after(key))
                body = b"rate limit %s exceeded\n" % limit.name.encode()
                self._refuse(ex, 429, body, "ratelimit", f"limit {limit.name}", down,
                             request.subject, extra=extra)  # fmt: skip
                return True
            if limit.headers and not limit.shadow:
                left = table.remaining(key)
                if closest is None or left < closest[0]:
                    closest = (left, limit, table, key)
        if closest is not None:  # draft-06: the policy closest to its limit is the one shown
            left, limit, table, key = closest
            ex.more_head = _quota_fields(limit, left, table.reset_after(key))
        return False

    def _audit(
        self, down: Downstream, ex: Exchange, request: policies.Request, decision: policies.Decision
    ) -> None:
        """Count (and log, when it would refuse what is let through) the decision the rules
        would make with the shadow ones enforced; the request goes on as ``decision`` says."""
        if self.shadow_paths and not request.path:  # counted as an ambiguous path already
            return
        audit = self.policy.audit(request)
        if audit.allowed:
            self._count("http_authz_shadow_allow_total", "rule", audit.rule)
            return
        self._count("http_authz_shadow_deny_total", "rule", audit.rule)
        if decision.allowed:
            self.throttle.info(
                f"shadow 403 {audit.rule[:24]}", "shadow: rule %s would refuse 403; %s",
                audit.rule, _who(down, ex, request.subject),
            )  # fmt: skip

    # -- answers -------------------------------------------------------------------------
    def _unauthenticated(self, down: Downstream, ex: Exchange, outcome: tokens.Outcome) -> bool:
        self._count("http_authn_total", "result", "refused")
        self._count("http_authn_refused_total", "reason", _reason_code(outcome.reason))
        challenge = b'www-authenticate: Bearer realm="%s"' % self.realm
        if outcome.error:
            challenge += b', error="%s"' % outcome.error.encode()
        body = b"authentication required\n" if outcome.kind == tokens.NONE else (
            b"credential refused\n")  # fmt: skip
        return self._refuse(ex, 401, body, "authn", outcome.reason, down,
                            extra=challenge + b"\r\n")  # fmt: skip

    def _refuse(
        self,
        ex: Exchange,
        status: int,
        body: bytes,
        kind: str,
        reason: str,
        down: Downstream,
        subject: str = "",
        *,
        extra: bytes = b"",
    ) -> bool:
        ex.status = status
        self._answer(down, ex, status, body, extra)
        self.throttle.info(
            f"{status} {kind}: {reason[:24]}", "refused %d %s: %s; %s",
            status, kind, reason, _who(down, ex, subject),
        )  # fmt: skip
        return True

    def _answer(self, down: Any, ex: Any, status: int, body: bytes, extra: bytes) -> None:
        """The refusal as the request's answer, counted as the listener's own (``extra``:
        header lines). On HTTP/1.1, keep-alive: the body of a refused request is read and
        dropped, so a client that sends it anyway is not reset mid-upload before it read the
        answer."""
        ex.local = heads.simple_response(status, body, close=False, extra=extra)
        down.service.local.requests += 1
        down.service.local.respond(status, 0.0)

    def _count(self, metric: str, label: str, value: str) -> None:
        key = (metric, label, value)
        self.counts[key] = self.counts.get(key, 0) + 1

    def export(self, metrics: telemetry.Registry) -> None:
        """Move the counts into the registry (at scrape time, off the request path)."""
        helps = {
            "http_authn_total": "End-user authentication results (ok, anonymous, refused).",
            "http_authn_refused_total": "Credentials refused (401), by kind of reason.",
            "http_authz_allow_total": "Requests allowed by the policy, by deciding rule.",
            "http_authz_deny_total": "Requests denied by the policy (403), by deciding rule.",
            "http_ratelimit_limited_total": "Requests refused by a rate limit (429).",
            "http_authz_shadow_allow_total": "Decisions with the shadow rules: would allow.",
            "http_authz_shadow_deny_total": "Decisions with the shadow rules: would deny (403).",
            "http_ratelimit_shadow_limited_total": "Requests a shadow limit would refuse (429).",
        }
        counts, self.counts = self.counts, {}
        if self.authn_ok:
            counts[("http_authn_total", "result", "ok")] = self.authn_ok
            self.authn_ok = 0
        allowed, self.allowed = self.allowed, {}
        if self.unruled:
            allowed["no-rules"] = allowed.get("no-rules", 0) + self.unruled
            self.unruled = 0
        for rule, count in allowed.items():
            counts[("http_authz_allow_total", "rule", rule)] = count
        for (metric, label, value), count in counts.items():
            metrics.add_counter(metric, helps[metric], {**self.labels, label: value}, count)

    def tick(self, now: float) -> None:
        for table in self.buckets.values():
            table.sweep(now)
        self.throttle.flush(now)


def _limit_fields(limit: policies.RateLimit, wait: float, reset: int) -> bytes:
    """``Retry-After`` and the RateLimit fields of draft-ietf-httpapi-ratelimit-headers-06.

    A token bucket as the draft's quota policy: ``burst`` requests per window of
    ``burst / rate`` seconds (the time an empty bucket takes to fill); ``RateLimit-Reset`` is
    when this key's bucket is full again.
    """
    window = max(1, math.ceil(limit.burst / limit.rate))
    return (
        b"retry-after: %d\r\nratelimit-limit: %d\r\nratelimit-remaining: 0\r\n"
        b"ratelimit-reset: %d\r\nratelimit-policy: %d;w=%d\r\n"
        % (max(1, math.ceil(wait)), int(limit.burst), max(1, reset), int(limit.burst), window)
    )


def _quota_fields(limit: policies.RateLimit, left: int, reset: int) -> bytes:
    """The RateLimit fields of an admitted response (``headers: true``), same meaning as on a
    429: the client can slow down before it is refused."""
    window = max(1, math.ceil(limit.burst / limit.rate))
    return (
        b"ratelimit-limit: %d\r\nratelimit-remaining: %d\r\nratelimit-reset: %d\r\n"
        b"ratelimit-policy: %d;w=%d\r\n"
        % (int(limit.burst), left, max(0, reset), int(limit.burst), window)
    )


_REASONS: Final = (
    ("no credential", "missing"), ("expired", "expired"), ("not yet valid", "not_yet_valid"),
    ("wrong audience", "audience"), ("wrong issuer", "issuer"), ("unknown issuer", "issuer"),
    ("bad signature", "signature"), ("alg", "algorithm"), ("unknown kid", "unknown_kid"),
    ("key ", "key_mismatch"), ("unknown API key", "api_key"), ("more than one", "repeated"),
    ("missing claim", "claims"),
)  # fmt: skip
"""Log reasons by prefix -> the bounded ``reason`` label of ``http_authn_refused_total``."""


def _reason_code(reason: str) -> str:
    for prefix, code in _REASONS:
        if reason.startswith(prefix):
            return code
    return "malformed"


def _key(kind: str, request: policies.Request) -> bytes | None:
    if kind == "client_ip":
        return request.client
    if kind == "subject":
        return request.subject.encode() or None
    if kind == "peer":
        return request.peer.encode() or None
    if kind == "upstream":
        return request.upstream.encode()
    values = request.headers.get(kind[7:].encode())
    return b"\0".join(values) if values else None


def _who(down: Downstream, ex: Exchange, subject: str) -> str:
    return (
        f"method={ex.method.decode('latin-1')} path={ex.target[:200].decode('latin-1')!r} "
        f"client={down.client.decode()} peer={policies.peer_identity(down.peer) or '-'} "
        f"subject={_bare(subject[:100]) or '-'} "
        f"request_id={_bare(ex.req.request_id[:200].decode('latin-1'))}"
    )


_PLAIN: Final = frozenset(map(chr, range(0x21, 0x7F))) - set("=\"'\\")
"""Printable ASCII but the characters that start a field or a quoted value."""


def _bare(value: str) -> str:
    """``value`` as is when it is one plain word (a UUID, a user name), else quoted: the
    client chose it (``x-request-id``, a token's ``sub``), and a space in it would add
    fields such as a second ``peer=`` to the line."""
    return value if _PLAIN.issuperset(value) else repr(value)


def _rewrite(
    ex: Exchange, raw: list[tuple[bytes, bytes, bytes]], strip: frozenset[bytes], add: bytes
) -> None:
    """Remove the fields in ``strip`` from the head going upstream and append ``add``.

    ``raw`` holds (lower-case name, name, value) of the fields any stage cared about.
    ``build_request`` copied each field as ``name: value`` on its own line; names and values
    hold no CR or LF, so ``\\r\\nname: value\\r\\n`` can only be that field's line, and
    removing it is a search and a cut rather than a parse of the head. The search is for the
    short ``\\r\\nname: `` and the value is then compared in place: searching for the whole
    line, a bearer token of ~800 bytes, cost several times as much (``bytes.replace`` with a
    long needle), about half of the JWT stage's time."""
    head = ex.req.head
    for key, name, value in raw:
        if key in strip:
            prefix = b"\r\n%s: " % name
            at = head.find(prefix)
            while at >= 0:
                start = at + len(prefix)
                end = start + len(value)
                if head.startswith(value, start) and head.startswith(b"\r\n", end):
                    head = head[:at] + head[end:]
                    break
                at = head.find(prefix, start)
    if add:
        head = head[:-2] + add + b"\r\n"
    ex.req.head = head
