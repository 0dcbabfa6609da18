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
    "--dry-run", is_flag=True, help="Print the iptables commands instead of running them."
)
def proxy_init(
    redirect_to: int,
    proxy_uid: int,
    include: tuple[str, ...],
    exclude_ports: tuple[int, ...],
    dry_run: bool,
) -> None:
    """Redirect the app's outbound TCP to the proxy (transparent mode), with iptables."""
    try:
        plan = interception.check(
            interception.Plan(redirect_to, proxy_uid, include or ("0.0.0.0/0",), exclude_ports)
        )
    except ValueError as exc:
        click.echo(f"sidecarkit: error: {exc}", err=True)
        sys.exit(2)
    program = shutil.which("iptables")
    if dry_run:
        for argv in interception.rules(plan, chain_exists=False, jump_exists=False):
            click.echo(" ".join(["iptables", *argv]))
        return
    if program is None:
        click.echo(
            "sidecarkit: error: iptables is not installed; install it in the init container's "
            "image (Debian: apt-get install iptables) or use explicit-port mode",
            err=True,
        )
        sys.exit(1)
    chain = subprocess.run([program, "-t", "nat", "-L", interception.CHAIN, "-n"],
                           capture_output=True, check=False).returncode == 0  # fmt: skip
    jump = subprocess.run(
        [program, "-t", "nat", "-C", "OUTPUT", "-p", "tcp", "-j", interception.CHAIN],
        capture_output=True, check=False,
    ).returncode == 0  # fmt: skip
    for argv in interception.rules(plan, chain_exists=chain, jump_exists=jump):
        done = subprocess.run([program, *argv], capture_output=True, text=True, check=False)
        if done.returncode:
            click.echo(
                f"sidecarkit: error: iptables {' '.join(argv)} failed: {done.stderr.strip()}; "
                "the init container needs the NET_ADMIN capability",
                err=True,
            )
            sys.exit(1)
        click.echo(" ".join(["iptables", *argv]))
