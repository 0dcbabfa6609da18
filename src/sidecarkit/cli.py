"""The ``sidecarkit`` command. Thin: parse options, call the core, print.

Exit codes: 0 done; 1 other failure; 2 a manifest is wrong (malformed YAML, a bad
``sidecarkit.io/`` annotation, a conflict); 3 the config or facts are wrong. On any error
nothing is written to stdout, so ``sidecarkit inject -f x | kubectl apply -f -`` never applies
half a stream.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, NoReturn

import click
import orjson

from sidecarkit import __version__, awaiting, configfiles, errors
from sidecarkit.agents import process
from sidecarkit.agents.logs.command import logs as logs_command
from sidecarkit.injection import configs, facts, injecting, profiles, reports, settings
from sidecarkit.k8s import manifests

__all__ = ["main"]


def _fail(exc: errors.SidecarkitError) -> NoReturn:
    click.echo(f"sidecarkit: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _read(path: str) -> tuple[str, str]:
    """(source name, text) of ``-`` (stdin) or a file."""
    if path == "-":
        return "<stdin>", sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return path, f.read()
    except OSError as exc:
        raise errors.InputError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise errors.ManifestError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise errors.ConfigError(
                f"--namespace-labels {text!r}: {part!r} is not key=value; "
                "write them as sidecarkit.io/inject=true,team=a"
            )
        labels[key.strip()] = value.strip()
    return labels


def _config(config_path: str | None, mode: str | None) -> configs.Config:
    config = configfiles.load_config(config_path) if config_path else configs.Config()
    if mode:
        config = replace(config, mode=profiles.Mode(mode))
    return config


def _facts(
    facts_path: str | None, namespace_labels: str | None, version: str | None
) -> facts.Facts:
    cluster = configfiles.load_facts(facts_path) if facts_path else facts.Facts()
    labels = {**cluster.namespace_labels, **_labels(namespace_labels)}
    return facts.Facts(
        kubernetes_version=facts.parse_version(version) if version else cluster.kubernetes_version,
        namespace_labels=MappingProxyType(labels),
    )


Transform = Callable[[Any, str], tuple[Any, reports.Report]]


def _rewrite(files: Sequence[str], transform: Transform, report_format: str) -> None:
    """Run ``transform`` on every document of every file; print all or nothing."""
    inputs = [_read(f) for f in files or ("-",)]
    parsed = [(source, manifests.load_stream(text, source=source)) for source, text in inputs]
    output: list[str] = []
    report = reports.Report()
    for source, documents in parsed:
        for doc in documents:
            where = f"{source} document {doc.index}"
            try:
                new, sub = transform(doc.data, where)
            except errors.InputError as exc:
                raise type(exc)(f"{where}: {exc}") from exc
            report += sub
            text = manifests.dump(doc, new)
            if output and output[-1] and not output[-1].endswith("\n"):
                output.append("\n")
            if output and not text.startswith(("---", "%")) and doc.index == 1:
                output.append("---\n")
            output.append(text)
    sys.stdout.write("".join(output))
    sys.stdout.flush()
    if report_format == "json":
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode(), err=True)
    elif report_format == "text":
        for line in report.lines():
            click.echo(line, err=True)


_files = click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    metavar="FILE|-",
    help="Manifest to read; repeatable; '-' or nothing reads stdin.",
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
@_report
def inject(
    files: tuple[str, ...],
    config_path: str | None,
    facts_path: str | None,
    namespace_labels: str | None,
    kubernetes_version: str | None,
    mode: str | None,
    report_format: str,
) -> None:
    """Add sidecars to the opted-in workloads of manifests; print the result on stdout.

    Documents that need no change come out byte for byte as they went in.
    """
    try:
        config = _config(config_path, mode)
        cluster = _facts(facts_path, namespace_labels, kubernetes_version)

        def transform(data: Any, where: str) -> tuple[Any, reports.Report]:
            return injecting.inject(data, config, cluster, location=where)

        _rewrite(files, transform, report_format)
    except errors.SidecarkitError as exc:
        _fail(exc)


@cli.command()
@_files
@_report
def uninject(files: tuple[str, ...], report_format: str) -> None:
    """Remove exactly what sidecarkit injected, as its status annotations record."""
    try:

        def transform(data: Any, where: str) -> tuple[Any, reports.Report]:
            return injecting.uninject(data, location=where)

        _rewrite(files, transform, report_format)
    except errors.SidecarkitError as exc:
        _fail(exc)


@cli.command("profiles")
@click.option("--config", "config_path", metavar="FILE", help="Injection config (profiles).")
def list_profiles(config_path: str | None) -> None:
    """List the profiles a pod may ask for, with every annotation each one reads."""
    try:
        config = _config(config_path, None)
    except errors.SidecarkitError as exc:
        _fail(exc)
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
    log_level: str,
) -> None:
    """Serve the mutating admission webhook over HTTPS."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit.webhook import serving  # noqa: PLC0415 - aiohttp only when serving

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
            )
        )
    except errors.SidecarkitError as exc:
        _fail(exc)


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
        _fail(exc)
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
    help="Use ca.crt, tls.crt and tls.key from here instead of making new ones.",
)
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--namespace-lookup",
    is_flag=True,
    help="Let the webhook read namespace labels (adds the RBAC for it).",
)
def install(
    namespace: str,
    image: str,
    config_path: str | None,
    cert_manager: bool,
    tls_dir: str | None,
    replicas: int,
    namespace_lookup: bool,
) -> None:
    """Print the manifests that deploy the webhook; pipe them to `kubectl apply -f -`."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit.webhook import certificates, installing  # noqa: PLC0415

    try:
        config_yaml = ""
        if config_path:
            configfiles.load_config(config_path)
            config_yaml = Path(config_path).read_text(encoding="utf-8")
        ca = tls = certificates.Pair(b"", b"")
        if not cert_manager:
            if tls_dir:
                tls = certificates.read_pair(Path(tls_dir), stem="tls")
                ca = certificates.Pair(_read_bytes(Path(tls_dir) / "ca.crt"), b"")
            else:
                ca = certificates.new_ca()
                names = certificates.dns_names(installing.NAME, namespace)
                tls = certificates.issue(ca, names=names)
        objects = installing.render(
            installing.Install(
                image=image,
                namespace=namespace,
                config_yaml=config_yaml,
                cert_manager=cert_manager,
                ca_pem=ca.cert,
                tls_cert_pem=tls.cert,
                tls_key_pem=tls.key,
                replicas=replicas,
                namespace_lookup=namespace_lookup,
            )
        )
    except errors.SidecarkitError as exc:
        _fail(exc)
    sys.stdout.write(manifests.dump_objects(objects))


def _read_bytes(path: Any) -> bytes:
    try:
        return bytes(path.read_bytes())
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {path}: {exc.strerror}") from exc


@cli.group()
def agent() -> None:
    """Be a sidecar: run one of the agent roles."""


agent.add_command(logs_command, "logs")


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
        _fail(errors.ConfigError(str(exc)))
    except errors.SidecarkitError as exc:
        _fail(exc)
    try:
        metrics_agent = running.Agent(config)
    except ValueError as exc:
        _fail(errors.ConfigError(str(exc)))
    process.run_agent(metrics_agent)


@cli.command("run")
@click.argument("manifest", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--inject", is_flag=True, help="Inject sidecars first, as if the pod's namespace opted in."
)
@click.option("--config", "config_path", metavar="FILE", help="Injection config (--inject).")
@click.option(
    "--command",
    "commands",
    multiple=True,
    metavar="NAME='PROGRAM ARGS'",
    help="The command of a container whose image cannot be pulled here; repeatable.",
)
@click.option("--grace", help="Termination grace period, overriding the pod's (e.g. 5s).")
@click.option(
    "--backoff-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply restart backoff (10 s to 300 s) by this, for tests and demos.",
)
@click.option(
    "--events",
    "events_format",
    type=click.Choice(["text", "json", "none"]),
    default="text",
    show_default=True,
    help="Lifecycle events on stderr.",
)
@click.option("--keep", is_flag=True, help="Keep the pod's emptyDir volumes afterwards.")
@click.option(
    "--status",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="A live status table on a terminal (auto: when stderr is one).",
)
def run_pod(
    manifest: str,
    inject: bool,
    config_path: str | None,
    commands: tuple[str, ...],
    grace: str | None,
    backoff_scale: float,
    events_format: str,
    keep: bool,
    status: str,
) -> None:
    """Run a Pod (or a workload's pod template) here, as processes, with sidecar lifecycle."""
    import shlex  # noqa: PLC0415

    from sidecarkit.runner import launching  # noqa: PLC0415

    try:
        source, text = _read(manifest)
        documents = [d.data for d in manifests.load_stream(text, source=source)]
        if inject:
            config = _config(config_path, None)
            cluster = facts.Facts(
                namespace_labels=MappingProxyType({"sidecarkit.io/inject": "true"})
            )
            documents = [injecting.inject(d, config, cluster)[0] for d in documents]
        overrides: dict[str, list[str]] = {}
        for item in commands:
            name, eq, command = item.partition("=")
            if not eq or not name or not command.strip():
                raise errors.InputError(
                    f"--command {item!r}: write it as NAME='program args', e.g. app='python app.py'"
                )
            overrides[name] = shlex.split(command)
        code = launching.launch(
            manifests.to_plain(documents),
            commands=overrides,
            backoff_scale=backoff_scale,
            grace=_seconds(grace, "--grace") if grace else None,
            events_format=events_format,
            keep=keep,
            status=status,
        )
    except errors.SidecarkitError as exc:
        _fail(exc)
    sys.exit(code)


def main() -> None:
    """Entry point of the ``sidecarkit`` console script."""
    cli(prog_name="sidecarkit")
