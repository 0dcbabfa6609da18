"""What a reload of the proxy's settings changes, worked out before anything is touched.

A listener is known by a key: ``inbound`` (``inbound:PORT`` for further inbound ports),
``upstream:NAME`` or ``http-proxy``. An inbound port's security (plain, ``mtls`` mode, ``tls``)
is part of its protocol: changing it replaces the listener. Comparing the
running settings with the new ones gives, per key, one of:

- ``keep``: the same listener (same address and protocol); the service takes the new settings
  in place, and its connections, pools and endpoint state carry on;
- ``move``: the same service on a new address; the new port is opened first, then the old one
  closed (connections on it finish on the same service);
- ``add``: a new service and listener;
- ``retire``: a service that is gone or changed protocol; its listener closes and its
  connections drain as on SIGTERM, while the new one (if any) takes its key.

Whether an upstream's discovery must restart (its static list, file, DNS name, Service or the
proxy's zone changed) is decided here too, so an unchanged Kubernetes watch is not re-listed.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["Listener", "Plan", "listeners", "plan"]


@dataclass(frozen=True, slots=True)
class Listener:
    key: str
    address: tuple[str, int] | None
    """None: an upstream reached only through the HTTP-proxy listener."""
    protocol: str
    upstream: proxy_settings.Upstream | None
    """None for the inbound and the HTTP-proxy listeners."""
    inbound: proxy_settings.Inbound | None = None
    """The inbound port's settings; None for the others."""


@dataclass(frozen=True, slots=True)
class Plan:
    keep: tuple[str, ...]
    move: tuple[str, ...]
    add: tuple[str, ...]
    retire: tuple[str, ...]
    rediscover: tuple[str, ...]
    """Keys among ``keep`` and ``move`` whose endpoint sources restart."""


def listeners(settings: proxy_settings.Settings) -> dict[str, Listener]:
    out = {}
    inbounds = (settings.inbound, *settings.more_inbound) if settings.inbound else ()
    for index, inbound in enumerate(inbounds):
        key = f"inbound:{inbound.listen[1]}" if index else "inbound"
        if inbound.mtls != "off":
            protocol = f"http+mtls-{inbound.mtls}"
        else:
            protocol = "https" if inbound.tls is not None else "http"
        if inbound.protocol != "http":
            protocol += "+" + inbound.protocol
        out[key] = Listener(key, inbound.listen, protocol, None, inbound)
    for up in settings.upstreams:
        key = f"upstream:{up.name}"
        out[key] = Listener(key, up.listen, up.protocol, up)
    if settings.http_proxy is not None:
        out["http-proxy"] = Listener("http-proxy", settings.http_proxy, "http", None)
    return out


def _discovery(settings: proxy_settings.Settings, listener: Listener) -> object:
    up = listener.upstream
    if up is None:
        return listener.inbound.app if listener.inbound is not None else None
    zone = settings.zone if up.kubernetes else None
    server = settings.dns_server if up.dns else None
    return (up.endpoints, up.file, up.dns, up.kubernetes, zone, server)


def _same_kind(a: Listener, b: Listener) -> bool:
    """Whether one listener can stand for the other: same protocol and, for a TLS port, the
    same certificates (the files' contents reload by themselves; other files need a new one)."""
    tls_a = a.inbound.tls if a.inbound is not None else None
    tls_b = b.inbound.tls if b.inbound is not None else None
    return a.protocol == b.protocol and tls_a == tls_b


def plan(old: proxy_settings.Settings, new: proxy_settings.Settings) -> Plan:
    before, after = listeners(old), listeners(new)
    keep: list[str] = []
    move: list[str] = []
    add: list[str] = []
    retire: list[str] = []
    rediscover: list[str] = []
    for key, was in before.items():
        then = after.get(key)
        if then is None or not _same_kind(was, then):
            retire.append(key)
    for key, now in after.items():
        earlier = before.get(key)
        if earlier is None or not _same_kind(earlier, now):
            add.append(key)
            continue
        (keep if earlier.address == now.address else move).append(key)
        if _discovery(old, earlier) != _discovery(new, now):
            rediscover.append(key)
    return Plan(tuple(keep), tuple(move), tuple(add), tuple(retire), tuple(rediscover))
