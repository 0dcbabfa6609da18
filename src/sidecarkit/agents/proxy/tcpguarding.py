"""The policy's rules on L4 (``protocol: tcp``) inbound ports: one decision per connection.

An opaque TCP connection has no method, path, header or end user; what it has, after the mTLS
handshake, is the peer's verified SPIFFE ID (and so its namespace) and the client's address.
``Gate.admit`` builds a ``policies.Request`` of those and asks the same ``Policy.authorize``
the HTTP stages ask (``guarding``), with the same semantics: a matching ``deny`` denies, else
a matching ``allow`` allows, else the connection is denied when the policy has rules. It is
called by ``relaying.Client`` once the peer was verified and before the app is dialled, so a
denied connection is closed with no connection to the app opened and no byte relayed.

Rate limits keyed on ``client_ip`` or ``peer`` take a token per new connection from the
same kind of buckets as on HTTP ports (a connection allowed by the rules, then refused by an
empty bucket, is closed the same way).

Decisions are counted as ``tcp_authz_allow_total`` / ``tcp_authz_deny_total`` by deciding
rule (and ``tcp_authz_shadow_*`` for the decision with the shadow rules enforced), and
``tcp_ratelimit_limited_total`` by limit, with the labels of ``http_authz_*``; refusals are
logged at INFO with the rule or limit, client and peer, at most ``guarding.LOG_BURST`` lines
a second per rule.

What cannot hold on such a port stops the proxy at start (and is refused on a reload of the
policy file or of the settings) rather than being ignored, which is where this departs from
Istio: Istio drops an ALLOW rule that names HTTP fields on a TCP port (so it never matches)
and widens a DENY rule to the whole port; a rule that silently means something else than it
says is worse than a proxy that names the rule and the fix (``check``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from sidecarkit import errors
from sidecarkit.agents.proxy import buckets, guarding, policies, telemetry
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["Gate", "check"]

log = logging.getLogger("sidecarkit.agent.proxy.policy")

_NO_HEADERS: Final[Mapping[bytes, tuple[bytes, ...]]] = {}
_HELP: Final = {
    "tcp_authz_allow_total": "TCP connections allowed by the policy, by deciding rule.",
    "tcp_authz_deny_total": "TCP connections closed by the policy, by deciding rule.",
    "tcp_authz_shadow_allow_total": "TCP decisions with the shadow rules: would allow.",
    "tcp_authz_shadow_deny_total": "TCP decisions with the shadow rules: would close.",
    "tcp_ratelimit_limited_total": "TCP connections closed by a rate limit.",
    "tcp_ratelimit_shadow_limited_total": "TCP connections a shadow rate limit would close.",
}


def check(
    policy: policies.Policy | None, settings: proxy_settings.Settings, *, source: str
) -> None:
    """ConfigError when ``policy`` cannot hold on the inbound ports of ``settings`` as
    written: a rule or a limit on a tcp port that needs an HTTP request, ``ports`` naming no
    inbound port, or authentication where every inbound port is tcp."""
    if policy is None:
        return
    ports = (settings.inbound, *settings.more_inbound) if settings.inbound else ()
    numbers = sorted({p.listen[1] for p in ports})
    tcp = [p.listen[1] for p in ports if p.protocol == "tcp"]
    http = [p.listen[1] for p in ports if p.protocol != "tcp"]
    entries: list[tuple[str, policies.Rule | policies.RateLimit]] = [
        (f"authorization.rules[{i}]", rule) for i, rule in enumerate(policy.rules or ())
    ]
    entries += [(f"rate_limits[{i}]", limit) for i, limit in enumerate(policy.rate_limits)]
    listed = f"[{', '.join(map(str, http))}]"
    for where, entry in entries:
        for port in entry.ports:
            if port not in numbers:
                known = ", ".join(map(str, numbers)) or "none"
                raise errors.ConfigError(
                    f"{source}: {where}.ports: {port} is not an inbound port of this proxy "
                    f"(they are {known}); name the port the proxy listens on"
                )
        fields = entry.http_fields()
        hit = [p for p in tcp if not entry.ports or p in entry.ports]
        if not fields or not hit:
            continue
        named = ", ".join(fields)
        if isinstance(entry, policies.Rule):
            what, where_else = "match HTTP requests", f"drop {named}"
            alone = f"drop {named} from the rule (a tcp port is decided by peers and namespaces)"
        else:
            what = "needs HTTP requests" if len(fields) == 1 else "need HTTP requests"
            where_else = "key it on client_ip or peer alone"
            alone = "key it on client_ip or peer alone (a tcp port counts new connections)"
        kind = "rule" if isinstance(entry, policies.Rule) else "limit"
        fix = f"give the {kind} ports: {listed} (its HTTP ports) or {where_else}" if http else alone
        raise errors.ConfigError(
            f"{source}: {where} ({entry.name}): {named} {what}, and inbound port {hit[0]} is "
            f"protocol: tcp; {fix}"
        )
    if tcp and not http and policy.authentication is not None:
        raise errors.ConfigError(
            f"{source}: authentication applies to HTTP requests, and every inbound port is "
            "protocol: tcp; give an http port, or drop authentication: (mTLS and rules on "
            "peers and namespaces decide tcp connections)"
        )


class Gate:
    """One tcp inbound port's view of the policy, its counters and its log."""

    def __init__(self, policy: policies.Policy, *, port: int, upstream: str) -> None:
        self.port = port
        self.upstream = upstream
        self.labels = {"direction": "inbound", "upstream": upstream}
        self.counts: dict[tuple[str, str, str], int] = {}
        """(metric, label, value) -> connections since the last scrape."""
        self.throttle = guarding._Throttle()  # the HTTP stages' log limit
        self.buckets: dict[str, buckets.Buckets] = {}
        self.take(policy)

    def take(self, policy: policies.Policy) -> None:
        """Decide connections accepted from now on with ``policy`` (at start and when the
        file changed); connections already relayed are not looked at again. A limit kept
        with the same name, rate and burst keeps its buckets, as on HTTP ports."""
        self.policy = policy.on_port(self.port)
        self.shadowed = self.policy.shadowed
        old = self.buckets
        self.buckets = {
            x.name: old[x.name]
            if x.name in old and (old[x.name].rate, old[x.name].burst) == (x.rate, x.burst)
            else buckets.Buckets(rate=x.rate, burst=x.burst)
            for x in self.policy.rate_limits
        }
        self.limits = tuple((x, self.buckets[x.name]) for x in self.policy.rate_limits)

    def admit(self, transport: Any, verified: bytes) -> bool:
        """True when the connection on ``transport`` may go on to the app; ``verified`` is
        what the mTLS stage verified of the peer (``securing.Mesh.peer``; b"": plaintext)."""
        peer = policies.peer_identity(verified)
        address = transport.get_extra_info("peername")
        client = str(address[0]).encode() if address else b""
        request = policies.Request(b"", b"", _NO_HEADERS, peer, "", client, self.upstream)
        decision = self.policy.authorize(request)
        if self.shadowed:
            self._audit(request, decision)
        if decision.allowed:
            self._count("tcp_authz_allow_total", decision.rule)
            if self.limits and self._limited(request):
                return False
            if log.isEnabledFor(logging.DEBUG):
                log.debug("allow tcp rule=%s %s", decision.rule, self._who(request))
            return True
        self._count("tcp_authz_deny_total", decision.rule)
        self.throttle.info(
            f"tcp {decision.rule[:24]}", "refused tcp connection: rule %s; %s",
            decision.rule, self._who(request),
        )  # fmt: skip
        return False

    def _limited(self, request: policies.Request) -> bool:
        """A token per new connection from each limit's bucket for the client or the peer
        (no peer: a ``peer`` limit does not apply, as on HTTP ports)."""
        now = time.monotonic()
        for limit, table in self.limits:
            key = request.client if limit.key == "client_ip" else request.peer.encode()
            if not key or not table.take(key, now):
                continue
            if limit.shadow:
                self._count("tcp_ratelimit_shadow_limited_total", limit.name, "limit")
                self.throttle.info(
                    f"shadow tcp limit {limit.name[:24]}",
                    "shadow: limit %s would refuse the connection; %s",
                    limit.name, self._who(request),
                )  # fmt: skip
                continue
            self._count("tcp_ratelimit_limited_total", limit.name, "limit")
            self.throttle.info(
                f"tcp limit {limit.name[:24]}", "refused tcp connection: limit %s; %s",
                limit.name, self._who(request),
            )  # fmt: skip
            return True
        return False

    def _audit(self, request: policies.Request, decision: policies.Decision) -> None:
        audit = self.policy.audit(request)
        if audit.allowed:
            self._count("tcp_authz_shadow_allow_total", audit.rule)
            return
        self._count("tcp_authz_shadow_deny_total", audit.rule)
        if decision.allowed:
            self.throttle.info(
                f"shadow tcp {audit.rule[:24]}", "shadow: rule %s would refuse the connection; %s",
                audit.rule, self._who(request),
            )  # fmt: skip

    def _who(self, request: policies.Request) -> str:
        return f"port={self.port} client={request.client.decode()} peer={request.peer or '-'}"

    def _count(self, metric: str, value: str, label: str = "rule") -> None:
        key = (metric, label, value)
        self.counts[key] = self.counts.get(key, 0) + 1

    def export(self, metrics: telemetry.Registry) -> None:
        """Move the counts into the registry (at scrape time)."""
        counts, self.counts = self.counts, {}
        for (metric, label, value), count in counts.items():
            metrics.add_counter(metric, _HELP[metric], {**self.labels, label: value}, count)

    def tick(self, now: float) -> None:
        for table in self.buckets.values():
            table.sweep(now)
        self.throttle.flush(now)
