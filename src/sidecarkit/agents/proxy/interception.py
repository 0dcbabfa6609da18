"""The iptables rules of transparent mode: the app's outbound TCP redirected to the proxy.

As Istio's init container does, in the pod's network namespace (an init container with
``NET_ADMIN``, before the app starts)::

    iptables -t nat -N SIDECARKIT_OUTPUT                     # (flushed if it exists)
    iptables -t nat -A SIDECARKIT_OUTPUT -m owner --uid-owner 1337 -j RETURN   # the proxy
    iptables -t nat -A SIDECARKIT_OUTPUT -d 127.0.0.0/8 -j RETURN               # loopback
    iptables -t nat -A SIDECARKIT_OUTPUT -p tcp --dport 22 -j RETURN           # excluded ports
    iptables -t nat -A SIDECARKIT_OUTPUT -p tcp -d 10.96.0.0/12 -j REDIRECT --to-ports 15001
    iptables -t nat -A OUTPUT -p tcp -j SIDECARKIT_OUTPUT    # (once)

and, with ``inbound_ports``, the app's ports reached from outside the pod go to the proxy's
inbound listener, so a Service's ``targetPort`` can stay the app's own::

    iptables -t nat -N SIDECARKIT_INBOUND
    iptables -t nat -A SIDECARKIT_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006
    iptables -t nat -A PREROUTING -p tcp -j SIDECARKIT_INBOUND   # (once)

Connections of the proxy's own user are never redirected (else its connections to endpoints
would come back to it); only the destinations in ``include`` are (``0.0.0.0/0``: all, as
Istio's default). REDIRECT keeps the original destination, which the proxy reads with
``SO_ORIGINAL_DST`` (``intercepting``). IPv4 only (``ip6tables`` would mirror it).

Pure: the rules are argv lists; ``initcommand`` runs them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

__all__ = ["CHAIN", "INBOUND_CHAIN", "Plan", "rules"]

CHAIN: Final = "SIDECARKIT_OUTPUT"
INBOUND_CHAIN: Final = "SIDECARKIT_INBOUND"
JUMPS: Final = {CHAIN: "OUTPUT", INBOUND_CHAIN: "PREROUTING"}
"""Each chain of ours, and the built-in chain that jumps to it."""


@dataclass(frozen=True, slots=True)
class Plan:
    redirect_to: int = 15001
    """The proxy's ``transparent:`` port."""
    proxy_uid: int = 1337
    """The user the proxy runs as (Istio's 1337): its own connections pass untouched."""
    include: tuple[str, ...] = ("0.0.0.0/0",)
    """Destinations redirected (CIDRs): the cluster's Service range, or everything."""
    exclude_ports: tuple[int, ...] = ()
    """Destination ports never redirected."""
    inbound_ports: tuple[int, ...] = ()
    """The app's ports whose incoming connections go to the proxy's inbound listener."""
    inbound_redirect_to: int = 15006


def check(plan: Plan) -> Plan:
    """The plan with its CIDRs normalized; ValueError names the bad value and the fix."""
    if not 0 < plan.redirect_to < 65536:
        raise ValueError(f"--redirect-to: {plan.redirect_to} is not a port (1-65535)")
    if plan.proxy_uid < 0:
        raise ValueError(f"--proxy-uid: {plan.proxy_uid} is not a user id")
    include = []
    for cidr in plan.include:
        try:
            include.append(str(ipaddress.IPv4Network(cidr.strip(), strict=False)))
        except ValueError as exc:
            raise ValueError(
                f"--include: {cidr!r} is not an IPv4 CIDR such as 10.96.0.0/12 ({exc})"
            ) from exc
    for flag, ports in (("--exclude-port", plan.exclude_ports),
                        ("--inbound-port", plan.inbound_ports),
                        ("--inbound-redirect-to", (plan.inbound_redirect_to,))):  # fmt: skip
        for port in ports:
            if not 0 < port < 65536:
                raise ValueError(f"{flag}: {port} is not a port (1-65535)")
    return Plan(plan.redirect_to, plan.proxy_uid, tuple(include), plan.exclude_ports,
                plan.inbound_ports, plan.inbound_redirect_to)  # fmt: skip


def rules(plan: Plan, *, chains: set[str], jumps: set[str]) -> list[list[str]]:
    """The iptables commands (without the program name) that make our chains say ``plan``;
    ``chains`` and ``jumps`` are those of ours that exist and are jumped to already, so that
    a second run replaces what the first wrote instead of adding to it."""
    nat = ["-t", "nat"]
    out = [[*nat, "-F", CHAIN]] if CHAIN in chains else [[*nat, "-N", CHAIN]]
    add = [*nat, "-A", CHAIN]
    out.append([*add, "-m", "owner", "--uid-owner", str(plan.proxy_uid), "-j", "RETURN"])
    out.append([*add, "-d", "127.0.0.0/8", "-j", "RETURN"])
    for port in plan.exclude_ports:
        out.append([*add, "-p", "tcp", "--dport", str(port), "-j", "RETURN"])
    for cidr in plan.include:
        out.append([*add, "-p", "tcp", "-d", cidr, "-j", "REDIRECT",
                    "--to-ports", str(plan.redirect_to)])  # fmt: skip
    if CHAIN not in jumps:
        out.append([*nat, "-A", "OUTPUT", "-p", "tcp", "-j", CHAIN])
    if plan.inbound_ports:
        inbound = INBOUND_CHAIN
        out.append([*nat, "-F", inbound] if inbound in chains else [*nat, "-N", inbound])
        for port in plan.inbound_ports:
            out.append([*nat, "-A", inbound, "-p", "tcp", "--dport", str(port), "-j", "REDIRECT",
                        "--to-ports", str(plan.inbound_redirect_to)])  # fmt: skip
        if inbound not in jumps:
            out.append([*nat, "-A", "PREROUTING", "-p", "tcp", "-j", inbound])
    return out
