"""Which endpoints of a Kubernetes Service to send traffic to, from its EndpointSlices.

The rules are kube-proxy's, so that a request through the proxy goes where a request through
the Service's cluster IP would have gone:

- an endpoint whose ``conditions.ready`` is true or unset takes traffic;
- when no endpoint is ready, those that are ``serving`` and ``terminating`` do (a rollout's
  last pods still answer while nothing else can);
- with the proxy's zone known and every chosen endpoint carrying ``hints.forZones`` (set by
  topology-aware routing or ``trafficDistribution: PreferClose``), only the endpoints hinted
  for that zone are used; when none is, all are, as kube-proxy falls back;
- ``FQDN`` slices are ignored, and an endpoint listed by two slices (as happens while the
  EndpointSlice controller moves it) counts once, by its first address.

The port is chosen by name: a Service port number is first turned into the port's name through
the Service (slices name their ports after the Service's). Pure: slices and Services are the
API's JSON as dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["port_name", "select"]


def port_name(service: Mapping[str, Any], port: str, *, where: str) -> str:
    """The name of ``port`` (a number or a name) among ``service``'s ports; ValueError says
    which ports it has."""
    ports = (service.get("spec") or {}).get("ports") or []
    for entry in ports:
        name = entry.get("name") or ""
        if (port.isdigit() and int(port) == entry.get("port")) or (name and name == port):
            return str(name)
    listed = ", ".join(f"{p.get('name') or '(unnamed)'}={p.get('port')}" for p in ports)
    raise ValueError(
        f"{where}: the Service has no port {port} (its ports: {listed or 'none'}); "
        "give one of them in kubernetes: SERVICE.NAMESPACE:PORT"
    )


def _port(slice_: Mapping[str, Any], name: str) -> int | None:
    for entry in slice_.get("ports") or []:
        if (entry.get("name") or "") == name and entry.get("port"):
            return int(entry["port"])
    return None


def _hinted(endpoint: Mapping[str, Any]) -> set[str]:
    zones = ((endpoint.get("hints") or {}).get("forZones")) or []
    return {str(z.get("name")) for z in zones if z.get("name")}


def select(
    slices: Iterable[Mapping[str, Any]], port: str, *, zone: str | None = None
) -> list[tuple[str, int]]:
    """The (address, port) pairs that take traffic, sorted; ``port`` is the port's name."""
    ready: dict[tuple[str, int], set[str]] = {}
    fallback: dict[tuple[str, int], set[str]] = {}
    for slice_ in slices:
        if slice_.get("addressType") not in ("IPv4", "IPv6"):
            continue
        number = _port(slice_, port)
        if number is None:
            continue
        for endpoint in slice_.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            key = (str(addresses[0]), number)
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is not False:
                ready.setdefault(key, _hinted(endpoint))
            elif conditions.get("serving") and conditions.get("terminating"):
                fallback.setdefault(key, _hinted(endpoint))
    chosen = ready or fallback
    if zone and chosen and all(chosen.values()):
        local = [key for key, zones in chosen.items() if zone in zones]
        if local:
            return sorted(local)
    return sorted(chosen)
