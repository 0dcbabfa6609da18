"""The ``sidecarkit`` command. Thin: parse options, call the core, print.

Exit codes: 0 done; 1 other failure (and ``inject --check`` finding stale workloads); 2 a
manifest is wrong (malformed YAML, a bad ``sidecarkit.io/`` annotation, a conflict); 3 the config
or facts are wrong. ``inject`` and ``uninject`` write a document that fails unchanged and go on
(``rewriting``); with ``--strict`` nothing is written on any error, so
``sidecarkit inject --strict -f x | kubectl apply -f -`` never applies half a stream.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import click

from sidecarkit import __version__, awaiting, clustercli, configfiles, errors, rewriting, shell
from sidecarkit.agents import process
from sidecarkit.agents.logs.command import logs as logs_command
from sidecarkit.agents.proxy.command import proxy as proxy_command
from sidecarkit.agents.proxy.initcommand import proxy_init as proxy_init_command
from sidecarkit.injection import (
    annotating,
    configs,
    facts,
    injecting,
    profiles,
    reports,
    settings,
)
from sidecarkit.k8s import manifests
from sidecarkit.runner import command as runner_command
from sidecarkit.security import command as ca_command

__all__ = ["main"]


def _config(config_path: str | None, mode: str | None) -> configs.Config:
    config = configfiles.load_config(config_path) if config_path else configs.Config()
    if mode:
        config = replace(config, mode=profiles.Mode(mode))
    return config


def _facts(
    facts_path: str | None, namespace_labels: str | None, version: str | None
) -> facts.Facts:
    cluster = configfiles.load_facts(facts_path) if facts_path else facts.Facts()
    labels = {**cluster.namespace_labels, **shell.namespace_labels(namespace_labels)}
    return facts.Facts(
        kubernetes_version=facts.parse_version(version) if version else cluster.kubernetes_version,
        namespace_labels=MappingProxyType(labels),
    )


_files = click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    metavar="FILE|-",
    help="Manifest file or directory to read; repeatable; '-' or nothing reads stdin.",
)
_strict = click.option(
    "--strict",
    is_flag=True,
    help="Stop at the first document that fails and write nothing (default: write it "
    "unchanged, go on, exit 2 at the end).",
)
_recursive = click.option(
    "-R", "--recursive", is_flag=True, help="Read the manifests in subdirectories too."
)
_output = click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="yaml keeps each document's text; json writes each object as JSON.",
)
_report = click.option(
    "--report",
    "report_format",
    type=click.Choice(["text", "json", "none"]),
    default="text",
    show_default=True,
    help="How to print the decisions on stderr.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sidecarkit")
def cli() -> None:
    """The Kubernetes sidecar pattern end to end: inject, run and be the sidecars."""


@cli.command()
@_files
@click.option("--config", "config_path", metavar="FILE", help="Injection config (profiles).")
@click.option(
    "--facts",
    "facts_path",
    metavar="FILE",
    help="Facts about the cluster: kubernetesVersion, namespaceLabels.",
)
@click.option(
    "--namespace-labels",
    metavar="K=V,...",
    help="Labels of the namespace, e.g. sidecarkit.io/inject=true.",
)
@click.option(
    "--kubernetes-version",
    metavar="VERSION",
    help="Version of the cluster's kubelets; decides mode auto.",
)
@click.option(
    "--mode",
    type=click.Choice([m.value for m in profiles.Mode]),
    help="Default mode for profiles and pods that don't choose one.",
)
@_strict
@_recursive
@_output
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if a workload would be injected or reinjected (CI gate).",
)
@click.option(
    "--annotate-only",
    is_flag=True,
    help="Only add the opt-in label to pod templates; the webhook adds the sidecars.",
)
@click.option(
    "--cluster",
    "from_cluster",
    is_flag=True,
    help="Read namespace labels, the installed config and the kubelets' version from the "
    "cluster, so the answer is the webhook's.",
)
@click.option("--kubeconfig", metavar="FILE", help="With --cluster: default $KUBECONFIG.")
@click.option("--context", metavar="NAME", help="With --cluster: default current-context.")
@click.option(
    "--webhook-namespace",
    default="sidecarkit-system",
    show_default=True,
    help="With --cluster: where `sidecarkit install` put the webhook and its config.",
)
@_report
def inject(
    files: tuple[str, ...],
    strict: bool,
    recursive: bool,
    output: str,
    check: bool,
    annotate_only: bool,
    config_path: str | None,
    facts_path: str | None,
    namespace_labels: str | None,
    kubernetes_version: str | None,
    mode: str | None,
    from_cluster: bool,
    kubeconfig: str | None,
    context: str | None,
    webhook_namespace: str,
    report_format: str,
) -> None:
    """Add sidecars to the opted-in workloads of manifests; print the result on stdout.

    Documents that need no change come out byte for byte as they went in.
    """
    try:
        if annotate_only and from_cluster:
            raise click.UsageError("--annotate-only adds only a label; it needs no --cluster")
        if (kubeconfig or context) and not from_cluster:
            raise click.UsageError("--kubeconfig and --context go with --cluster")
        transform: Callable[[Any, str], tuple[Any, reports.Report]]
        if annotate_only:
            transform = _annotate
        elif from_cluster:
            transform = clustercli.cluster_injector(
                kubeconfig,
                context,
                webhook_namespace,
                config_path,
                facts_path,
                mode,
                namespace_labels,
                kubernetes_version,
            )
        else:
            config = _config(config_path, mode)
            cluster = _facts(facts_path, namespace_labels, kubernetes_version)

            def offline(data: Any, where: str) -> tuple[Any, reports.Report]:
                return injecting.inject(data, config, cluster, location=where, owned=True)

            transform = offline

        options = rewriting.Options(strict, output, report_format, recursive, check)
        code = rewriting.rewrite(files, transform, options)
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    sys.exit(code)


def _annotate(data: Any, where: str) -> tuple[Any, reports.Report]:
    return annotating.annotate(data, location=where, owned=True)


@cli.command()
@_files
@_strict
@_recursive
@_output
@click.option("--config", "config_path", metavar="FILE", help="Config with custom workloads.")
@_report
def uninject(
    files: tuple[str, ...],
    strict: bool,
    recursive: bool,
    output: str,
    config_path: str | None,
    report_format: str,
) -> None:
    """Remove exactly what sidecarkit injected, as its status annotations record."""
    try:
        kinds = _config(config_path, None).workloads

        def transform(data: Any, where: str) -> tuple[Any, reports.Report]:
            return injecting.uninject(data, location=where, owned=True, kinds=kinds)

        options = rewriting.Options(strict, output, report_format, recursive)
        code = rewriting.rewrite(files, transform, options)
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    sys.exit(code)


@cli.command("profiles")
@click.option("--config", "config_path", metavar="FILE", help="Injection config (profiles).")
def list_profiles(config_path: str | None) -> None:
    """List the profiles a pod may ask for, with every annotation each one reads."""
    try:
        config = _config(config_path, None)
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    defaults = set(config.default_profiles)
    for profile in config.profiles.values():
        mark = " (default)" if profile.name in defaults else ""
        click.echo(f"{profile.name}{mark}: {profile.description}")
        for s in profile.settings:
            default = "required" if s.required else f"default {s.default}" if s.default else "unset"
            click.echo(f"  sidecarkit.io/{profile.name}.{s.name}  {s.expected()}; {default}")
            if s.description:
                click.echo(f"      {s.description}")


@cli.command("await")
@click.argument("url")
@click.option("--timeout", default="120s", show_default=True, help="Give up after this long.")
def await_ready(url: str, timeout: str) -> None:
    """Wait until URL answers 2xx (the legacy-mode postStart hold)."""
    try:
        limit = settings.seconds(timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from exc
    ready, outcome = awaiting.wait_ready(url, timeout=limit)
    if not ready:
        click.echo(f"sidecarkit: {url} not ready after {timeout} (last: {outcome})", err=True)
        sys.exit(1)


def _seconds(value: str, option: str) -> float:
    try:
        return settings.seconds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


@cli.command()
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    required=True,
    help="Serving certificate (PEM); reloaded when it changes.",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False), required=True, help="Its private key (PEM)."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Injection config; reloaded when it changes.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--reload-interval",
    default="2s",
    show_default=True,
    help="How often to check the config and certificate files.",
)
@click.option(
    "--shutdown-delay",
    default="0s",
    show_default=True,
    help="Keep serving this long after SIGTERM while not ready.",
)
@click.option(
    "--grace",
    default="15s",
    show_default=True,
    help="How long in-flight admissions may take to finish at shutdown.",
)
@click.option("--kubernetes-version", metavar="VERSION", help="Decides mode auto.")
@click.option(
    "--namespace-lookup",
    is_flag=True,
    help="Read namespace labels from the API server (needs RBAC).",
)
@click.option("--header-timeout", default="10s", show_default=True, help="To receive headers.")
@click.option("--body-timeout", default="10s", show_default=True, help="To receive a body.")
@click.option("--idle-timeout", default="90s", show_default=True, help="Idle keep-alive.")
@click.option(
    "--write-timeout", default="10s", show_default=True, help="Drop clients not reading answers."
)
@click.option("--max-connections", default=2048, show_default=True, type=click.IntRange(1))
@click.option("--max-admissions", default=64, show_default=True, type=click.IntRange(1))
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def webhook(
    tls_cert: str,
    tls_key: str,
    config_path: str | None,
    host: str,
    port: int,
    reload_interval: str,
    shutdown_delay: str,
    grace: str,
    kubernetes_version: str | None,
    namespace_lookup: bool,
    header_timeout: str,
    body_timeout: str,
    idle_timeout: str,
    write_timeout: str,
    max_connections: int,
    max_admissions: int,
    log_level: str,
) -> None:
    """Serve the mutating admission webhook over HTTPS."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit.webhook import guarding, serving  # noqa: PLC0415 - aiohttp only here

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        serving.serve(
            serving.Settings(
                tls_cert=Path(tls_cert),
                tls_key=Path(tls_key),
                config=Path(config_path) if config_path else None,
                host=host,
                port=port,
                reload_interval=_seconds(reload_interval, "--reload-interval"),
                shutdown_delay=_seconds(shutdown_delay, "--shutdown-delay"),
                grace=_seconds(grace, "--grace"),
                kubernetes_version=facts.parse_version(kubernetes_version)
                if kubernetes_version
                else None,
                namespace_lookup=namespace_lookup,
                limits=guarding.Limits(
                    header_timeout=_seconds(header_timeout, "--header-timeout"),
                    body_timeout=_seconds(body_timeout, "--body-timeout"),
                    idle_timeout=_seconds(idle_timeout, "--idle-timeout"),
                    write_timeout=_seconds(write_timeout, "--write-timeout"),
                    max_connections=max_connections,
                    max_admissions=max_admissions,
                ),
            )
        )
    except errors.SidecarkitError as exc:
        shell.fail(exc)


@cli.command()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for ca.crt, ca.key, tls.crt and tls.key.",
)
@click.option("--service", default="sidecarkit-webhook", show_default=True)
@click.option("--namespace", default="sidecarkit-system", show_default=True)
@click.option(
    "--name",
    "extra_names",
    multiple=True,
    metavar="NAME",
    help="Another DNS name or IP address for the serving certificate; repeatable.",
)
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False),
    help="Reuse the CA in this directory (rotation: caBundle stays valid).",
)
@click.option(
    "--days",
    default=365,
    show_default=True,
    type=click.IntRange(1, 3650),
    help="Validity of the serving certificate.",
)
def certs(
    out_dir: str,
    service: str,
    namespace: str,
    extra_names: tuple[str, ...],
    ca_dir: str | None,
    days: int,
) -> None:
    """Make a CA and a serving certificate for the webhook's Service (or rotate the latter)."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit.webhook import certificates  # noqa: PLC0415

    try:
        out = Path(out_dir)
        if ca_dir:
            ca = certificates.read_pair(Path(ca_dir), stem="ca")
        else:
            ca = certificates.new_ca()
            certificates.write_pair(ca, out, stem="ca")
        names = [*certificates.dns_names(service, namespace), *extra_names]
        certificates.write_pair(certificates.issue(ca, names=names, days=days), out, stem="tls")
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    click.echo(f"wrote {out}/tls.crt and tls.key for {', '.join(names)}", err=True)


@cli.command()
@click.option("--namespace", default="sidecarkit-system", show_default=True)
@click.option("--image", default=profiles.DEFAULT_IMAGE, show_default=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Injection config to ship in the ConfigMap (checked first).",
)
@click.option(
    "--cert-manager",
    is_flag=True,
    help="Let cert-manager issue the certificate and inject the CA bundle.",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False),
    help="Use ca.crt, tls.crt and tls.key from here (`sidecarkit certs`); with ca.key, "
    "the serving pair is renewed 30 days before expiry.",
)
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--namespace-lookup",
    is_flag=True,
    help="Let the webhook read namespace labels (adds the RBAC for it).",
)
@click.option(
    "--keep-certs",
    type=click.Path(dir_okay=False),
    help="Keep the CA and serving certificate from this earlier install output (or "
    "`kubectl get secret ... -o yaml`); the serving one is renewed 30 days before expiry.",
)
@click.option("--url", help="The webhook runs outside the cluster at this https URL.")
@click.option("--priority-class", default="", help="priorityClassName of the webhook pods.")
@click.option(
    "--apiserver-cidr",
    "apiserver_cidrs",
    multiple=True,
    metavar="CIDR",
    help="Where API server calls come from; adds a NetworkPolicy admitting only them.",
)
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False),
    help="Also print the workload CA made by `sidecarkit ca init` (its Deployment, Service, "
    "Secret and RBAC), as `sidecarkit ca install` does; the root key stays here.",
)
@click.option("--ca-namespace", default="sidecarkit", show_default=True, help="Where the CA runs.")
@click.option(
    "--ca-bundle-namespace",
    "ca_bundle_namespaces",
    multiple=True,
    metavar="NS",
    help="Put the CA's trust bundle ConfigMap (sidecarkit-ca-bundle) here; repeatable.",
)
def install(
    namespace: str,
    image: str,
    config_path: str | None,
    cert_manager: bool,
    tls_dir: str | None,
    replicas: int,
    namespace_lookup: bool,
    keep_certs: str | None,
    url: str | None,
    priority_class: str,
    apiserver_cidrs: tuple[str, ...],
    ca_dir: str | None,
    ca_namespace: str,
    ca_bundle_namespaces: tuple[str, ...],
) -> None:
    """Print the manifests that deploy the webhook; pipe them to `kubectl apply -f -`."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit.webhook import certificates, installing, keeping  # noqa: PLC0415

    try:
        config_yaml = ""
        if config_path:
            configfiles.load_config(config_path)
            config_yaml = Path(config_path).read_text(encoding="utf-8")
        if url and (cert_manager or not (tls_dir or keep_certs)):
            raise errors.ConfigError(
                "--url needs the CA the webhook's certificate comes from: give --tls-dir made "
                "by `sidecarkit certs --out DIR --name HOST` (or --keep-certs), not --cert-manager"
            )
        ca = tls = certificates.Pair(b"", b"")
        bundle = b""
        if not cert_manager:
            kept = (
                keeping.from_manifests(Path(keep_certs))
                if keep_certs
                else keeping.from_directory(Path(tls_dir))
                if tls_dir
                else None
            )
            names = certificates.dns_names(installing.NAME, namespace)
            if url:
                assert kept is not None
                ca, bundle = kept.ca, kept.bundle
            else:
                prepared = keeping.prepare(kept, names)
                ca, tls, bundle = prepared.ca, prepared.serving, prepared.bundle
                if prepared.renewed:
                    click.echo(f"issued a new serving certificate: {prepared.renewed}", err=True)
        objects = installing.render(
            installing.Install(
                image=image,
                namespace=namespace,
                config_yaml=config_yaml,
                cert_manager=cert_manager,
                ca_pem=bundle,
                tls_cert_pem=tls.cert,
                tls_key_pem=tls.key,
                ca_key_pem=ca.key,
                replicas=replicas,
                namespace_lookup=namespace_lookup,
                url=keeping.check_url(url) if url else "",
                priority_class=priority_class,
                apiserver_cidrs=apiserver_cidrs,
            )
        )
        if ca_dir:
            from sidecarkit.security import installing as ca_installing  # noqa: PLC0415

            ca_spec = ca_command.read_install(
                Path(ca_dir), ca_namespace, image, ca_bundle_namespaces
            )
            objects = installing.with_ca(
                objects,
                ca_installing.render(ca_spec),
                webhook_namespace="" if url else namespace,  # --url prints no Namespace
            )
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    sys.stdout.write(manifests.dump_objects(objects))


@cli.group()
def agent() -> None:
    """Be a sidecar: run one of the agent roles."""


agent.add_command(logs_command, "logs")
agent.add_command(proxy_command, "proxy")
agent.add_command(proxy_init_command, "proxy-init")
cli.add_command(clustercli.explain, "explain")
cli.add_command(clustercli.repair, "repair")


@agent.command("metrics")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="SIDECARKIT_METRICS_CONFIG",
    help="YAML settings (flags and env win).",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="URL",
    help="App endpoint to scrape; repeatable. Env: SIDECARKIT_METRICS_TARGETS (a,b).",
)
@click.option(
    "--annotations-file",
    envvar="SIDECARKIT_METRICS_ANNOTATIONS_FILE",
    help="Downward API annotations: prometheus.io/scrape|port|path|scheme name the target.",
)
@click.option(
    "--target-label",
    envvar="SIDECARKIT_METRICS_TARGET_LABEL",
    help="Label set to each target's host:port, instance; empty for none.",
)
@click.option(
    "--honor-labels",
    is_flag=True,
    default=None,
    envvar="SIDECARKIT_METRICS_HONOR_LABELS",
    help="On a clash keep the app's label, not the agent's.",
)
@click.option("--interval", envvar="SIDECARKIT_METRICS_INTERVAL", help="Scrape interval, 15s.")
@click.option("--timeout", envvar="SIDECARKIT_METRICS_TIMEOUT", help="Scrape timeout, 10s.")
@click.option("--port", envvar="SIDECARKIT_ADMIN_PORT", help="Port of /metrics, 15101.")
@click.option(
    "--statsd-port",
    envvar="SIDECARKIT_METRICS_STATSD_PORT",
    help="StatsD UDP port, 8125; 0 turns it off.",
)
@click.option(
    "--statsd-socket",
    envvar="SIDECARKIT_METRICS_STATSD_SOCKET",
    help="Also receive StatsD on this Unix datagram socket.",
)
@click.option("--buckets", envvar="SIDECARKIT_METRICS_BUCKETS", help="Histogram buckets, a,b,c.")
@click.option(
    "--statsd-ttl",
    envvar="SIDECARKIT_METRICS_STATSD_TTL",
    help="Forget StatsD series idle this long, e.g. 10m; 0, the default, never.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="K=V",
    help="Static label for every series; repeatable. Env: SIDECARKIT_METRICS_LABELS.",
)
@click.option(
    "--series-limit",
    envvar="SIDECARKIT_METRICS_SERIES_LIMIT",
    help="Most samples one target may expose; 0, the default, for none.",
)
@click.option(
    "--memory-limit",
    envvar="SIDECARKIT_METRICS_MEMORY_LIMIT",
    help="Memory the scraped series may hold, 512MiB; a scrape past it fails.",
)
@click.option(
    "--body-size-limit",
    envvar="SIDECARKIT_METRICS_BODY_SIZE_LIMIT",
    help="Most bytes of one scrape's body, e.g. 64MiB; 0, the default, for none.",
)
@click.option(
    "--remote-write-url",
    envvar="SIDECARKIT_METRICS_REMOTE_WRITE_URL",
    help="Push with Prometheus remote_write 1.0 to this URL.",
)
@click.option(
    "--remote-write-wal-dir",
    envvar="SIDECARKIT_METRICS_REMOTE_WRITE_WAL_DIR",
    help="Keep unsent remote_write samples in a WAL here (survives outages and restarts).",
)
@click.option(
    "--remote-write-wal-size",
    envvar="SIDECARKIT_METRICS_REMOTE_WRITE_WAL_SIZE",
    help="Most bytes of the WAL, 256MiB; past it the oldest samples are dropped, counted.",
)
@click.option(
    "--pushgateway-url",
    envvar="SIDECARKIT_METRICS_PUSHGATEWAY_URL",
    help="Push to this Pushgateway, grouped by the pod's identity.",
)
@click.option(
    "--push-interval",
    envvar="SIDECARKIT_METRICS_PUSH_INTERVAL",
    help="Time between pushes; the scrape interval by default.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def agent_metrics(
    config_path: str | None,
    targets: tuple[str, ...],
    annotations_file: str | None,
    target_label: str | None,
    honor_labels: bool | None,
    interval: str | None,
    timeout: str | None,
    port: str | None,
    statsd_port: str | None,
    statsd_socket: str | None,
    buckets: str | None,
    statsd_ttl: str | None,
    labels: tuple[str, ...],
    series_limit: str | None,
    memory_limit: str | None,
    body_size_limit: str | None,
    remote_write_url: str | None,
    remote_write_wal_dir: str | None,
    remote_write_wal_size: str | None,
    pushgateway_url: str | None,
    push_interval: str | None,
    log_level: str,
) -> None:
    """Scrape the app, receive StatsD, serve one merged /metrics with the pod's labels."""
    import os  # noqa: PLC0415

    from sidecarkit.agents.metrics import running  # noqa: PLC0415 - aiohttp only when running
    from sidecarkit.agents.metrics import settings as metrics_settings  # noqa: PLC0415

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = metrics_settings.Settings(labels=metrics_settings.identity_labels())
        if config_path:
            data = configfiles.load_mapping(config_path)
            config = metrics_settings.from_mapping(data, source=config_path, base=config)
        given: dict[str, Any] = {
            "targets": ",".join(targets) or os.environ.get("SIDECARKIT_METRICS_TARGETS"),
            "annotations_file": annotations_file,
            "interval": interval,
            "timeout": timeout,
            "port": port,
            "statsd_port": statsd_port,
            "statsd_socket": statsd_socket,
            "buckets": buckets,
            "statsd_ttl": statsd_ttl,
            "labels": ",".join(labels) or os.environ.get("SIDECARKIT_METRICS_LABELS"),
            "series_limit": series_limit,
            "memory_limit": memory_limit,
            "body_size_limit": body_size_limit,
            "remote_write_url": remote_write_url,
            "remote_write_wal_dir": remote_write_wal_dir,
            "remote_write_wal_size": remote_write_wal_size,
            "pushgateway_url": pushgateway_url,
            "push_interval": push_interval,
        }
        chosen = {k: v for k, v in given.items() if v}
        if target_label is not None:
            chosen["target_label"] = target_label
        if honor_labels is not None:
            chosen["honor_labels"] = honor_labels
        config = metrics_settings.from_mapping(chosen, source="options", base=config)
    except ValueError as exc:
        shell.fail(errors.ConfigError(str(exc)))
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    try:
        metrics_agent = running.Agent(config)
    except ValueError as exc:
        shell.fail(errors.ConfigError(str(exc)))
    process.run_agent(metrics_agent)


cli.add_command(runner_command.run_pod, "run")
cli.add_command(ca_command.ca, "ca")


def main() -> None:
    """Entry point of the ``sidecarkit`` console script."""
    cli(prog_name="sidecarkit")
