"""The ``sidecarkit agent proxy`` command.

Dispatched by ``sidecarkit.entry`` before the rest of the command line is imported, and
importing only the data path, so the proxy sidecar starts small: every megabyte it holds is a
megabyte of each pod that runs it. YAML support is loaded only when ``--config`` is given.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from typing import Any, NoReturn

import click

from sidecarkit import errors
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["proxy"]


def _fail(exc: errors.SidecarkitError) -> NoReturn:
    click.echo(f"sidecarkit: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _upstream(text: str, index: int) -> dict[str, Any]:
    name, sep, rest = text.partition("=")
    listen, sep2, endpoints = rest.partition("=")
    if not sep or not sep2 or not name or not listen or not endpoints:
        raise ValueError(
            f"--upstream {text!r}: write NAME=LISTEN=HOST:PORT[,HOST:PORT...], "
            "e.g. payments=15001=10.0.0.7:8080,10.0.0.8:8080 (or file:PATH for a watched file)"
        )
    entry: dict[str, Any] = {"name": name, "listen": listen}
    if endpoints.startswith("file:"):
        entry["file"] = endpoints[5:]
    elif endpoints.startswith("dns:"):
        entry["dns"] = endpoints[4:]
    elif endpoints.startswith("kubernetes:"):
        entry["kubernetes"] = endpoints[11:]
    else:
        entry["endpoints"] = endpoints
    return entry


def _given(
    inbound: str | None,
    app: str | None,
    upstreams: tuple[str, ...],
    tcp_upstreams: tuple[str, ...],
    http_proxy: str | None,
    admin: str | None,
    balancer: str | None,
    access_log: bool | None,
    drain_grace: str | None,
    mtls: str | None,
    policy_path: str | None,
    transparent: str | None = None,
) -> dict[str, Any]:
    """The flags as YAML-shaped data, to lay over the file's."""
    given: dict[str, Any] = {}
    if transparent:
        given["transparent"] = transparent
    if inbound or app:
        given["inbound"] = {k: v for k, v in (("listen", inbound), ("app", app)) if v is not None}
    if upstreams or tcp_upstreams:
        given["upstreams"] = [_upstream(u, i) for i, u in enumerate(upstreams)] + [
            {**_upstream(u, i), "protocol": "tcp"} for i, u in enumerate(tcp_upstreams)
        ]
        if balancer:
            for entry in given["upstreams"]:
                entry["balancer"] = balancer
    if admin:
        given["admin"] = admin
    if http_proxy:
        given["http_proxy"] = http_proxy
    if access_log is not None:
        given["access_log"] = access_log
    if drain_grace:
        given["drain"] = {"grace": drain_grace}
    if mtls:
        given.setdefault("inbound", {})["mtls"] = mtls
    if policy_path:
        given["policy"] = policy_path
    return given


def _load(
    config_path: str | None,
    given: dict[str, Any],
    balancer: str | None,
    identity: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None),
) -> proxy_settings.Settings:
    """The file's settings under the flags; ConfigError names the file or flag and the key.
    Called at start and again on each reload (SIGHUP or a changed file)."""
    try:
        config = proxy_settings.Settings()
        if config_path:
            from sidecarkit import configfiles  # noqa: PLC0415 - YAML only when asked for

            data = configfiles.load_mapping(config_path)
            config = proxy_settings.from_mapping(data, source=config_path, base=config, final=False)
        flags_inbound = given.get("inbound", {})
        if config.inbound is None and "mtls" in flags_inbound and len(flags_inbound) == 1:
            raise ValueError("--mtls: there is no inbound port; give --inbound and --app")
        if any(identity):
            given = {**given, "identity": _identity(config, *identity)}
        config = proxy_settings.from_mapping(given, source="options", base=config)
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from exc
    if balancer and config_path:
        ups = tuple(dataclasses.replace(u, balancer=balancer) for u in config.upstreams)
        config = dataclasses.replace(config, upstreams=ups)
    return config


def _identity(
    config: proxy_settings.Settings,
    ca: str | None,
    token: str | None,
    bundle: str | None,
    domain: str | None,
) -> dict[str, Any]:
    """The identity flags over the file's ``identity:`` section."""
    from sidecarkit.agents.proxy import tlsconfig  # noqa: PLC0415

    base = tlsconfig.identity_mapping(config.identity) if config.identity else {}
    if ca or token:
        base.pop("cert", None)
        base.pop("key", None)
    given = {"ca": ca, "token": token, "trust_bundle": bundle, "trust_domain": domain}
    return {**base, **{k: v for k, v in given.items() if v}}


def _policy(path: str | None) -> Any:
    """The policy file, read and checked before anything listens: a bad rule is a crash-loop
    with a message that names it, never a proxy that lets everything through."""
    if not path:
        return None
    from sidecarkit import configfiles  # noqa: PLC0415 - YAML only when asked for
    from sidecarkit.agents.proxy import policyfiles  # noqa: PLC0415

    return policyfiles.from_mapping(configfiles.load_mapping(path), source=path)


@click.command("proxy", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="SIDECARKIT_PROXY_CONFIG",
    help="YAML settings (flags win). Env: SIDECARKIT_PROXY_CONFIG.",
)
@click.option(
    "--inbound",
    "inbound",
    metavar="HOST:PORT",
    envvar="SIDECARKIT_PROXY_INBOUND",
    help="Listen for the app's clients here. Env: SIDECARKIT_PROXY_INBOUND.",
)
@click.option(
    "--app",
    metavar="HOST:PORT",
    envvar="SIDECARKIT_PROXY_APP",
    help="The app behind the inbound listener, 127.0.0.1:8080. Env: SIDECARKIT_PROXY_APP.",
)
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    metavar="NAME=LISTEN=ENDPOINTS",
    help="A service the app calls on a local port, e.g. payments=15001=10.0.0.7:8080,"
    "10.0.0.8:8080, payments=15001=file:/etc/eps or payments=15001=dns:payments.shop:8080 or "
    "payments=15001=kubernetes:payments.shop:8080; "
    "LISTEN '-' for one reached only through --http-proxy; repeatable.",
)
@click.option(
    "--tcp-upstream",
    "tcp_upstreams",
    multiple=True,
    metavar="NAME=LISTEN=ENDPOINTS",
    help="As --upstream, relayed as opaque TCP (one endpoint per connection).",
)
@click.option(
    "--http-proxy",
    metavar="HOST:PORT",
    help="Be the app's HTTP_PROXY here: requests go to the upstream their host names.",
)
@click.option(
    "--transparent",
    metavar="HOST:PORT",
    envvar="SIDECARKIT_PROXY_TRANSPARENT",
    help="Take the app's outbound TCP that `agent proxy-init` redirects here (transparent "
    "mode). Env: SIDECARKIT_PROXY_TRANSPARENT.",
)
@click.option(
    "--admin",
    metavar="HOST:PORT",
    envvar="SIDECARKIT_ADMIN_PORT",
    help="/healthz, /ready and /metrics, 0.0.0.0:15190 (a bare port: on 0.0.0.0). "
    "Env: SIDECARKIT_ADMIN_PORT.",
)
@click.option(
    "--mtls",
    type=click.Choice(["off", "permissive", "strict"]),
    envvar="SIDECARKIT_PROXY_MTLS",
    help="mTLS on the inbound port (needs an identity). Env: SIDECARKIT_PROXY_MTLS.",
)
@click.option(
    "--identity-ca",
    metavar="URL",
    envvar="SIDECARKIT_PROXY_IDENTITY_CA",
    help="`sidecarkit ca serve` to get this workload's certificate from. "
    "Env: SIDECARKIT_PROXY_IDENTITY_CA.",
)
@click.option(
    "--identity-token",
    metavar="FILE",
    envvar="SIDECARKIT_PROXY_IDENTITY_TOKEN",
    help="Token proving who we are to the CA. Env: SIDECARKIT_PROXY_IDENTITY_TOKEN.",
)
@click.option(
    "--trust-bundle",
    metavar="FILE",
    envvar="SIDECARKIT_PROXY_TRUST_BUNDLE",
    help="The mesh's root certificate(s). Env: SIDECARKIT_PROXY_TRUST_BUNDLE.",
)
@click.option(
    "--trust-domain",
    envvar="SIDECARKIT_PROXY_TRUST_DOMAIN",
    help="Peers' SPIFFE IDs must be in it, cluster.local. Env: SIDECARKIT_PROXY_TRUST_DOMAIN.",
)
@click.option("--balancer", type=click.Choice(proxy_settings.BALANCERS), help="For every upstream.")
@click.option(
    "--access-log/--no-access-log", default=None, help="One JSON line a request on stdout."
)
@click.option(
    "--drain-grace", metavar="DURATION", help="On SIGTERM, time for requests in flight, 25s."
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    envvar="SIDECARKIT_PROXY_POLICY",
    help="Authentication, authorization and rate limits for inbound requests (YAML); "
    "see docs/policy.md. Env: SIDECARKIT_PROXY_POLICY.",
)
@click.option("--dry-run", is_flag=True, help="Print the effective settings as YAML and exit.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def proxy(
    config_path: str | None,
    inbound: str | None,
    app: str | None,
    upstreams: tuple[str, ...],
    tcp_upstreams: tuple[str, ...],
    http_proxy: str | None,
    transparent: str | None,
    admin: str | None,
    mtls: str | None,
    identity_ca: str | None,
    identity_token: str | None,
    trust_bundle: str | None,
    trust_domain: str | None,
    balancer: str | None,
    access_log: bool | None,
    drain_grace: str | None,
    policy_path: str | None,
    dry_run: bool,
    log_level: str,
) -> None:
    """Proxy the app's traffic: inbound in front of it, outbound to the services it calls."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        given = _given(inbound, app, upstreams, tcp_upstreams, http_proxy, admin, balancer,
                       access_log, drain_grace, mtls, policy_path, transparent)  # fmt: skip
    except ValueError as exc:
        _fail(errors.ConfigError(str(exc)))
    identity = (identity_ca, identity_token, trust_bundle, trust_domain)
    load = functools.partial(_load, config_path, given, balancer, identity)
    try:
        config = load()
        policy = _policy(config.policy)
        inbound_parts = policy is not None and (
            policy.authentication or policy.rules is not None or policy.rate_limits
        )
        if inbound_parts and config.inbound is None:
            raise errors.ConfigError(
                f"{config.policy}: a policy guards the inbound listener; give --inbound and --app"
                " (or put rules on what the app calls under outbound:)"
            )
        if policy is not None:  # rules on tcp ports: peers and namespaces only
            from sidecarkit.agents.proxy import tcpguarding  # noqa: PLC0415

            tcpguarding.check(policy, config, source=str(config.policy))
    except ValueError as exc:
        _fail(errors.ConfigError(str(exc)))
    except errors.SidecarkitError as exc:
        _fail(exc)
    if dry_run:
        from sidecarkit.k8s import manifests  # noqa: PLC0415

        click.echo(manifests.dump_objects([proxy_settings.to_mapping(config)]), nl=False)
        return
    if config.inbound is None and not config.upstreams:
        _fail(errors.ConfigError(
            "nothing to proxy: give --inbound and --app, --upstream, or a --config with "
            "inbound: or upstreams:"
        ))  # fmt: skip
    from sidecarkit.agents import process  # noqa: PLC0415
    from sidecarkit.agents.proxy import running  # noqa: PLC0415

    agent = running.Agent(config, policy=policy, reload=load, config_path=config_path)
    try:
        process.run_agent(agent)
    except errors.SidecarkitError as exc:  # e.g. no certificate could be had at start
        _fail(exc)
