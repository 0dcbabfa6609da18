"""The commands that work against a live cluster: ``explain`` and ``repair``, and the
transform behind ``inject --cluster``.

Kept apart from ``cli.py`` so the HTTP client and the cluster logic load only when one of
them runs; ``cli.py`` registers the commands. The few option helpers below mirror cli.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from sidecarkit import configfiles, errors, shell
from sidecarkit.injection import facts, profiles, reports, settings
from sidecarkit.k8s import manifests

__all__ = ["cluster_injector", "explain", "repair"]


def _seconds(value: str, option: str) -> float:
    try:
        return settings.seconds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


_files = click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    metavar="FILE|-",
    help="Manifest to read; repeatable; '-' or nothing reads stdin.",
)


def cluster_injector(
    kubeconfig: str | None,
    context: str | None,
    webhook_namespace: str,
    config_path: str | None,
    facts_path: str | None,
    mode: str | None,
    namespace_labels: str | None,
    version: str | None,
) -> Callable[[Any, str], tuple[Any, reports.Report]]:
    """``inject --cluster``'s transform: the CLI's options over what the cluster says."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit import discovering  # noqa: PLC0415 - the HTTP client only with --cluster
    from sidecarkit.k8s import cluster  # noqa: PLC0415

    if facts_path:
        raise click.UsageError("--facts and --cluster both say what the cluster is; give one")
    return discovering.injector(
        cluster.Target(kubeconfig=Path(kubeconfig) if kubeconfig else None, context=context),
        config=configfiles.load_config(config_path) if config_path else None,
        mode=profiles.Mode(mode) if mode else None,
        kubernetes_version=facts.parse_version(version) if version else None,
        namespace_labels=shell.namespace_labels(namespace_labels),
        install_namespace=webhook_namespace,
    )


@click.command()
@_files
@click.argument("pod", required=False)
@click.option("-n", "--namespace", "pod_namespace", metavar="NS", help="Namespace of POD.")
@click.option("--config", "config_path", metavar="FILE", help="Injection config (profiles).")
@click.option("--namespace-labels", metavar="K=V,...", help="Labels of the namespace.")
@click.option("--kubernetes-version", metavar="VERSION", help="Version of the kubelets.")
@click.option("--mode", type=click.Choice([m.value for m in profiles.Mode]), help="Default mode.")
@click.option("--cluster", "from_cluster", is_flag=True, help="Facts and webhook from a cluster.")
@click.option("--kubeconfig", metavar="FILE", help="With --cluster: default $KUBECONFIG.")
@click.option("--context", metavar="NAME", help="With --cluster: default current-context.")
@click.option("--webhook-namespace", default="sidecarkit-system", show_default=True)
def explain(
    files: tuple[str, ...],
    pod: str | None,
    pod_namespace: str | None,
    config_path: str | None,
    namespace_labels: str | None,
    kubernetes_version: str | None,
    mode: str | None,
    from_cluster: bool,
    kubeconfig: str | None,
    context: str | None,
    webhook_namespace: str,
) -> None:
    """Say why the pods of POD (a live pod, with --cluster) or of manifests would or would not
    get sidecars: which webhooks the API server calls, then what the injector does."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit import discovering, explaining  # noqa: PLC0415
    from sidecarkit.k8s import cluster  # noqa: PLC0415

    if pod and files:
        raise click.UsageError("give POD or -f FILE, not both")
    if pod and not from_cluster:
        raise click.UsageError("POD is read from a cluster: add --cluster")
    if (kubeconfig or context) and not from_cluster:
        raise click.UsageError("--kubeconfig and --context go with --cluster")
    try:
        target = None
        if from_cluster:
            target = cluster.Target(
                kubeconfig=Path(kubeconfig) if kubeconfig else None, context=context
            )
        if pod:
            assert target is not None
            documents = [
                (f"pod {pod}", discovering.connect(target).pod(pod, namespace=pod_namespace))
            ]
        else:
            documents = [
                (f"{source} document {doc.index}", doc.data)
                for source, text in (shell.read(f) for f in files or ("-",))
                for doc in manifests.load_stream(text, source=source)
            ]
        lines = explaining.run(
            documents,
            target=target,
            config=configfiles.load_config(config_path) if config_path else None,
            mode=profiles.Mode(mode) if mode else None,
            kubernetes_version=facts.parse_version(kubernetes_version)
            if kubernetes_version
            else None,
            namespace_labels=shell.namespace_labels(namespace_labels),
            install_namespace=webhook_namespace,
        )
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    for line in lines:
        click.echo(line)


@click.command()
@click.option("-n", "--namespace", metavar="NS", help="Only this namespace; default all.")
@click.option("--apply", is_flag=True, help="Restart the owners (as kubectl rollout restart).")
@click.option("--dry-run", is_flag=True, help="With --apply: send the restarts as dry runs.")
@click.option("--interval", default="10s", show_default=True, help="Pause between restarts.")
@click.option("--config", "config_path", metavar="FILE", help="Injection config (profiles).")
@click.option("--kubeconfig", metavar="FILE", help="Default $KUBECONFIG, ~/.kube/config.")
@click.option("--context", metavar="NAME", help="Default current-context.")
@click.option("--webhook-namespace", default="sidecarkit-system", show_default=True)
@click.option("--watch", is_flag=True, help="Run as a controller: a pass every --period.")
@click.option("--period", default="60s", show_default=True, help="With --watch: between passes.")
@click.option("--lease-duration", default=15, show_default=True, type=click.IntRange(2, 300))
@click.option("--identity", help="With --watch: name in the Lease; default host and pid.")
def repair(
    namespace: str | None,
    apply: bool,
    dry_run: bool,
    interval: str,
    config_path: str | None,
    kubeconfig: str | None,
    context: str | None,
    webhook_namespace: str,
    watch: bool,
    period: str,
    lease_duration: int,
    identity: str | None,
) -> None:
    """List running pods that missed injection (created before the webhook, admitted while it
    was down, or from an older config); with --apply, restart their owners one at a time."""
    from pathlib import Path  # noqa: PLC0415

    from sidecarkit import repairing  # noqa: PLC0415
    from sidecarkit.k8s import cluster  # noqa: PLC0415

    if dry_run and not (apply or watch):
        raise click.UsageError("--dry-run goes with --apply or --watch")
    pause = _seconds(interval, "--interval")
    target = cluster.Target(kubeconfig=Path(kubeconfig) if kubeconfig else None, context=context)
    if watch:
        _repair_watch(
            target,
            namespace=namespace,
            config_path=config_path,
            dry_run=dry_run,
            interval=pause,
            install_namespace=webhook_namespace,
            identity=identity,
            period=_seconds(period, "--period"),
            lease_duration=lease_duration,
        )
        return
    try:
        findings = repairing.run(
            target,
            namespace=namespace,
            config=configfiles.load_config(config_path) if config_path else None,
            apply=apply,
            dry_run=dry_run,
            interval=pause,
            install_namespace=webhook_namespace,
            say=click.echo,
        )
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    if not findings:
        click.echo("no pod needs repair", err=True)


def _repair_watch(
    target: Any,
    *,
    namespace: str | None,
    config_path: str | None,
    dry_run: bool,
    interval: float,
    install_namespace: str,
    identity: str | None,
    period: float,
    lease_duration: int,
) -> None:
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from sidecarkit import repairing  # noqa: PLC0415

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        repairing.watch(
            target,
            namespace=namespace,
            config=configfiles.load_config(config_path) if config_path else None,
            dry_run=dry_run,
            interval=interval,
            install_namespace=install_namespace,
            identity=identity or f"{socket.gethostname()}-{os.getpid()}",
            period=period,
            lease_duration=lease_duration,
            stop=stop,
            say=lambda line: click.echo(line, err=True),
        )
    except errors.SidecarkitError as exc:
        shell.fail(exc)
