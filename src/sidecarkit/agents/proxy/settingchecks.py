"""Checks across keys of the proxy's settings, once every layer (file, flags) is in.

A key can be right alone and wrong with another: two listeners on one port, a route to an
upstream that does not exist, mTLS without an identity. ``settings.from_mapping`` runs these
last (unless told the settings are not final yet), and each error names the keys involved and
the fix. No I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecarkit.agents.proxy import tlsconfig

if TYPE_CHECKING:
    from sidecarkit.agents.proxy.settings import Settings

__all__ = ["check"]


def check(settings: Settings) -> None:
    """ValueError naming the first keys that do not fit together, and the fix."""
    seen: dict[tuple[str, int], str] = {}
    listeners = [("inbound.listen", settings.inbound.listen)] if settings.inbound else []
    listeners += [
        (f"inbound[{i}].listen", b.listen) for i, b in enumerate(settings.more_inbound, 1)
    ]
    listeners += [(f"upstreams[{u.name}].listen", u.listen) for u in settings.upstreams if u.listen]
    if settings.http_proxy:
        listeners.append(("http_proxy", settings.http_proxy))
    if settings.transparent:
        listeners.append(("transparent", settings.transparent))
    listeners.append(("admin", settings.admin))
    names = set()
    for up in settings.upstreams:
        # with routes, an upstream may be a backend (now, or after the next canary step); or
        # it is reached through transparent mode
        routed = bool(settings.routes or settings.kubernetes_routes or up.addresses)
        if up.addresses and settings.transparent is None:
            raise ValueError(
                f"upstreams[{up.name}].addresses: only used in transparent mode; set "
                "transparent: to the port proxy-init redirects to (e.g. 0.0.0.0:15001)"
            )
        if up.listen is None and settings.http_proxy is None and not routed:
            raise ValueError(
                f"upstreams[{up.name}].listen: missing; give the local port the app calls "
                "(e.g. 15001), or set http_proxy to reach it by name"
            )
        if up.name in names:
            raise ValueError(f"upstreams[{up.name}]: the name is used twice; give each its own")
        names.add(up.name)
    address: tuple[str, int] | None
    for where, address in listeners:
        if address is None:
            continue
        if address[1] and address in seen:
            raise ValueError(
                f"{where}: {address[0]}:{address[1]} is also {seen[address]}; "
                "give each its own port"
            )
        seen[address] = where
    for index, inbound in enumerate((settings.inbound, *settings.more_inbound)):
        tlsconfig.check(
            identity=settings.identity,
            inbound=(inbound.mtls, inbound.tls) if inbound else None,
            upstreams=[(u.name, u.mtls) for u in settings.upstreams],
            where=f"inbound[{index}]" if settings.more_inbound else "inbound",
        )
    _check_routes(settings)
    for index, inbound in enumerate((settings.inbound, *settings.more_inbound)):
        if inbound is None or inbound.protocol == "http2" or inbound.tls is None:
            continue
        if "h2" in inbound.tls.alpn:
            raise ValueError(
                f"inbound[{index}].tls.alpn: h2 needs protocol: http2 on this port "
                "(an app that speaks HTTP/2); drop h2 from alpn or set the protocol"
            )
    if settings.outlier.max_ejected_percent > 100:
        raise ValueError("outlier.max_ejected_percent: must be between 0 and 100")


def _check_routes(settings: Settings) -> None:
    http = {u.name for u in settings.upstreams if u.protocol == "http"}
    for i, route in enumerate(settings.routes):
        for name in route.parents:
            if name not in http:
                raise ValueError(
                    f"routes[{i}].spec.parentRefs: {name!r} is not an http upstream; add it to "
                    "upstreams: or attach the route to one of "
                    + (", ".join(sorted(http)) or "none")
                )
        for r, rule in enumerate(route.rules):
            for b, backend in enumerate(rule.backends):
                if backend.name not in http:
                    raise ValueError(
                        f"routes[{i}].spec.rules[{r}].backendRefs[{b}]: {backend.name!r} is not "
                        "an http upstream; add it to upstreams: (listen: is not needed)"
                    )
