"""The ``sidecarkit agent proxy-init`` command: transparent mode's iptables rules.

Run once in the pod's network namespace before the app starts (an init container with
``NET_ADMIN``, as Istio's ``istio-init``); the rules are in ``interception``. Running it again
replaces the chain's rules rather than adding to them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import click

from sidecarkit.agents.proxy import interception

__all__ = ["proxy_init"]


@click.command("proxy-init")
@click.option(
    "--redirect-to",
    type=int,
    default=15001,
    show_default=True,
    help="The proxy's transparent: port, where the app's outbound TCP is sent.",
)
@click.option(
    "--proxy-uid",
    type=int,
    default=1337,
    show_default=True,
    help="The user the proxy runs as; its own connections are not redirected.",
)
@click.option(
    "--include",
    "include",
    multiple=True,
    metavar="CIDR",
    help="Destinations to redirect (repeatable); default: every IPv4 address.",
)
@click.option(
    "--exclude-port",
    "exclude_ports",
    multiple=True,
    type=int,
    metavar="PORT",
    help="Destination ports never redirected (repeatable).",
)
@click.option(
    "--inbound-port",
    "inbound_ports",
    multiple=True,
    type=int,
    metavar="PORT",
    help="An app port whose incoming connections go to the proxy's inbound listener (repeatable).",
)
@click.option(
    "--inbound-redirect-to",
    type=int,
    default=15006,
    show_default=True,
    help="The proxy's inbound port, for --inbound-port.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the iptables commands instead of running them."
)
def proxy_init(
    redirect_to: int,
    proxy_uid: int,
    include: tuple[str, ...],
    exclude_ports: tuple[int, ...],
    inbound_ports: tuple[int, ...],
    inbound_redirect_to: int,
    dry_run: bool,
) -> None:
    """Redirect the app's outbound TCP to the proxy (transparent mode), with iptables."""
    try:
        plan = interception.check(
            interception.Plan(
                redirect_to,
                proxy_uid,
                include or ("0.0.0.0/0",),
                exclude_ports,
                inbound_ports,
                inbound_redirect_to,
            )
        )
    except ValueError as exc:
        click.echo(f"sidecarkit: error: {exc}", err=True)
        sys.exit(2)
    program = shutil.which("iptables")
    if dry_run:
        for argv in interception.rules(plan, chains=set(), jumps=set()):
            click.echo(" ".join(["iptables", *argv]))
        return
    if program is None:
        click.echo(
            "sidecarkit: error: iptables is not installed; install it in the init container's "
            "image (Debian: apt-get install iptables) or use explicit-port mode",
            err=True,
        )
        sys.exit(1)
    chains, jumps = set(), set()
    for chain, parent in interception.JUMPS.items():
        listed = [program, "-t", "nat", "-L", chain, "-n"]
        if subprocess.run(listed, capture_output=True, check=False).returncode == 0:
            chains.add(chain)
        jump = [program, "-t", "nat", "-C", parent, "-p", "tcp", "-j", chain]
        if subprocess.run(jump, capture_output=True, check=False).returncode == 0:
            jumps.add(chain)
    for argv in interception.rules(plan, chains=chains, jumps=jumps):
        done = subprocess.run([program, *argv], capture_output=True, text=True, check=False)
        if done.returncode:
            click.echo(
                f"sidecarkit: error: iptables {' '.join(argv)} failed: {done.stderr.strip()}; "
                "the init container needs the NET_ADMIN capability",
                err=True,
            )
            sys.exit(1)
        click.echo(" ".join(["iptables", *argv]))
