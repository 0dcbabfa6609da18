"""The policy's rules on L4 (``protocol: tcp``) inbound ports: one decision per connection.

An opaque TCP connection has no method, path, header or end user; what it has, after the mTLS
handshake, is the peer's verified SPIFFE ID (and so its namespace) and the client's address.
``Gate.admit`` builds a ``policies.Request`` of those and asks the same ``Policy.authorize``
the HTTP stages ask (``guarding``), with the same semantics: a matching ``deny`` denies, else
a matching ``allow`` allows, else the connection is denied when the policy has rules. It is
called by ``relaying.Client`` once the peer was verified and before the app is dialled, so a
denied connection is closed with no connection to the app opened and no byte relayed.

Decisions are counted as ``tcp_authz_allow_total`` / ``tcp_authz_deny_total`` by deciding
rule (and ``tcp_authz_shadow_*`` for the decision with the shadow rules enforced), with the
labels of ``http_authz_*``; refusals are logged at INFO with the rule, client and peer, at
most ``guarding.LOG_BURST`` lines a second per rule.

What cannot hold on such a port stops the proxy at start (and is refused on a reload of the
policy file or of the settings) rather than being ignored, which is where this departs from
Istio: Istio drops an ALLOW rule that names HTTP fields on a TCP port (so it never matches)
and widens a DENY rule to the whole port; a rule that silently means something else than it
says is worse than a proxy that names the rule and the fix (``check``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from sidecarkit import errors
from sidecarkit.agents.proxy import guarding, policies, telemetry
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["Gate", "check"]

log = logging.getLogger("sidecarkit.agent.proxy.policy")

_NO_HEADERS: Final[Mapping[bytes, tuple[bytes, ...]]] = {}
_HELP: Final = {
    "tcp_authz_allow_total": "TCP connections allowed by the policy, by deciding rule.",
    "tcp_authz_deny_total": "TCP connections closed by the policy, by deciding rule.",
    "tcp_authz_shadow_allow_total": "TCP decisions with the shadow rules: would allow.",
    "tcp_authz_shadow_deny_total": "TCP decisions with the shadow rules: would close.",
}


def check(
    policy: policies.Policy | None, settings: proxy_settings.Settings, *, source: str
) -> None:
    """ConfigError when ``policy`` cannot hold on the inbound ports of ``settings`` as
    written: a rule on a tcp port that needs an HTTP request, a rule's ``ports`` naming no
    inbound port, or authentication and rate limits where every inbound port is tcp."""
    if policy is None:
        return
    ports = (settings.inbound, *settings.more_inbound) if settings.inbound else ()
    numbers = sorted({p.listen[1] for p in ports})
    tcp = [p.listen[1] for p in ports if p.protocol == "tcp"]
    http = [p.listen[1] for p in ports if p.protocol != "tcp"]
    for i, rule in enumerate(policy.rules or ()):
        where = f"authorization.rules[{i}]"
        for port in rule.ports:
            if port not in numbers:
                known = ", ".join(map(str, numbers)) or "none"
                raise errors.ConfigError(
                    f"{source}: {where}.ports: {port} is not an inbound port of this proxy "
                    f"(they are {known}); name the port the proxy listens on"
                )
        fields = rule.http_fields()
        hit = [p for p in tcp if not rule.ports or p in rule.ports]
        if fields and hit:
            named = ", ".join(fields)
            fix = (
                f"give the rule ports: [{', '.join(map(str, http))}] (its HTTP ports) or drop "
                f"{named}" if http else f"drop {named} from the rule (a tcp port is decided by "
                "peers and namespaces)"
            )  # fmt: skip
            raise errors.ConfigError(
                f"{source}: {where} ({rule.name}): {named} match HTTP requests, and inbound "
                f"port {hit[0]} is protocol: tcp; {fix}"
            )
    if tcp and not http and (policy.authentication is not None or policy.rate_limits):
        raise errors.ConfigError(
            f"{source}: authentication and rate limits apply to HTTP requests, and every "
            "inbound port is protocol: tcp; give an http port, or drop authentication: and "
            "rate_limits: (rules on peers and namespaces decide tcp connections)"
        )


class Gate:
    """One tcp inbound port's view of the policy, its counters and its log."""

    def __init__(self, policy: policies.Policy, *, port: int, upstream: str) -> None:
        self.port = port
        self.upstream = upstream
        self.labels = {"direction": "inbound", "upstream": upstream}
        self.counts: dict[tuple[str, str], int] = {}
        """(metric, rule) -> connections since the last scrape."""
        self.throttle = guarding._Throttle()  # the HTTP stages' log limit
        self.take(policy)

    def take(self, policy: policies.Policy) -> None:
        """Decide connections accepted from now on with ``policy`` (at start and when the
        file changed); connections already relayed are not looked at again."""
        self.policy = policy.on_port(self.port)
        self.shadowed = self.policy.shadowed

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
            if log.isEnabledFor(logging.DEBUG):
                log.debug("allow tcp rule=%s %s", decision.rule, self._who(request))
            return True
        self._count("tcp_authz_deny_total", decision.rule)
        self.throttle.info(
            f"tcp {decision.rule[:24]}", "refused tcp connection: rule %s; %s",
            decision.rule, self._who(request),
        )  # fmt: skip
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

    def _count(self, metric: str, rule: str) -> None:
        key = (metric, rule)
        self.counts[key] = self.counts.get(key, 0) + 1

    def export(self, metrics: telemetry.Registry) -> None:
        """Move the counts into the registry (at scrape time)."""
        counts, self.counts = self.counts, {}
        for (metric, rule), count in counts.items():
            metrics.add_counter(metric, _HELP[metric], {**self.labels, "rule": rule}, count)

    def tick(self, now: float) -> None:
        self.throttle.flush(now)
