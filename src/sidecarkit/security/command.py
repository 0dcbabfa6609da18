"""``sidecarkit ca``: make a root and an intermediate, grant bootstrap tokens, serve CSRs.

Files in the CA directory (``--dir``)::

    root.crt            the trust bundle every proxy is given (public)
    root.key            the root's key: only ``init`` needs it; keep it offline
    intermediate.crt    the issuer, signed by the root
    intermediate.key    its key: what ``serve`` signs with (mode 0600)
    tokens              bootstrap token hashes (``ca token``), when not in a cluster

``init --secret NAME`` prints a Kubernetes Secret with ``root.crt``, ``intermediate.crt`` and
``intermediate.key`` for the CA's Deployment to mount; the root key goes only to ``--dir``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from sidecarkit import durations, errors
from sidecarkit.security import authority, proving, spiffe

__all__ = ["ca", "read_install"]

log = logging.getLogger("sidecarkit.ca")

FILES = ("root.crt", "root.key", "intermediate.crt", "intermediate.key")


def _fail(message: str) -> NoReturn:
    click.echo(f"sidecarkit: error: {message}", err=True)
    sys.exit(errors.ConfigError.exit_code)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically (rename), with ``mode`` from the first byte (a key is never world-readable,
    not even for a moment)."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(temp, path)


def _trust_domain(value: str) -> str:
    try:
        return spiffe.check_trust_domain(value, "--trust-domain")
    except ValueError as exc:
        _fail(str(exc))


@click.group("ca", context_settings={"help_option_names": ["-h", "--help"]})
def ca() -> None:
    """A small CA for workload identities (SPIFFE IDs) and the proxies' mTLS."""


@ca.command("init")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write root.crt/.key and intermediate.crt/.key here.")  # fmt: skip
@click.option("--trust-domain", default=spiffe.DEFAULT_TRUST_DOMAIN, show_default=True)
@click.option("--root-days", type=click.IntRange(1), default=3650, show_default=True)
@click.option("--intermediate-days", type=click.IntRange(1), default=365, show_default=True)
@click.option("--secret", metavar="NAME", help="Print a Secret manifest for the CA's Deployment.")
@click.option("--namespace", default="sidecarkit", show_default=True, help="Of the Secret.")
@click.option("--force", is_flag=True, help="Replace a CA already in --dir.")
def init(
    directory: Path | None,
    trust_domain: str,
    root_days: int,
    intermediate_days: int,
    secret: str | None,
    namespace: str,
    force: bool,
) -> None:
    """Make a new root and intermediate for a trust domain."""
    trust_domain = _trust_domain(trust_domain)
    if directory is None and secret is None:
        _fail(
            "say where the keys go: --dir DIR (files), --secret NAME (a Secret manifest), or both"
        )
    if directory is not None and not force:
        present = [name for name in FILES if (directory / name).exists()]
        if present:
            _fail(
                f"{directory} already holds a CA ({', '.join(present)}); a new root would "
                "break every proxy that trusts the old one. Give --force to replace it"
            )
    root, intermediate = authority.new_authority(
        trust_domain, root_days=root_days, intermediate_days=intermediate_days
    )
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        _write(directory / "root.crt", root.cert, 0o644)
        _write(directory / "root.key", root.key, 0o600)
        _write(directory / "intermediate.crt", intermediate.cert, 0o644)
        _write(directory / "intermediate.key", intermediate.key, 0o600)
        click.echo(f"wrote a CA for trust domain {trust_domain} to {directory}", err=True)
    if secret is not None:
        from sidecarkit.k8s import manifests  # noqa: PLC0415

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        manifest: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/name": "sidecarkit-ca"},
                "annotations": {"sidecarkit.io/trust-domain": trust_domain},
            },
            "type": "Opaque",
            "data": {
                "root.crt": b64(root.cert),
                "intermediate.crt": b64(intermediate.cert),
                "intermediate.key": b64(intermediate.key),
            },
        }
        click.echo(manifests.dump_objects([manifest]), nl=False)
        if directory is None:
            click.echo(
                "the root key was not kept (no --dir): a new intermediate will need a new root",
                err=True,
            )


@ca.command("token")
@click.option("--tokens", "tokens_file", required=True, type=click.Path(dir_okay=False,
              path_type=Path), help="The tokens file `ca serve --tokens` reads.")  # fmt: skip
@click.option("--namespace", required=True)
@click.option("--service-account", required=True)
@click.option("--trust-domain", default=spiffe.DEFAULT_TRUST_DOMAIN, show_default=True)
def token(tokens_file: Path, namespace: str, service_account: str, trust_domain: str) -> None:
    """Grant a new bootstrap token the identity NAMESPACE/SERVICE-ACCOUNT; print the token.

    Only the token's hash is written to the file.
    """
    try:
        spiffe.identity(
            _trust_domain(trust_domain),
            namespace,
            service_account,
            where="--namespace/--service-account",
        )
    except ValueError as exc:
        _fail(str(exc))
    value = secrets.token_urlsafe(32)
    fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(proving.token_line(value, namespace, service_account))
    click.echo(value)


@ca.command("install")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False,
              path_type=Path), help="The CA made by `ca init`.")  # fmt: skip
@click.option("--namespace", default="sidecarkit", show_default=True, help="Where the CA runs.")
@click.option("--image", default="ghcr.io/sidecarkit/sidecarkit:0.1.0", show_default=True)
@click.option(
    "--bundle-namespace",
    "bundle_namespaces",
    multiple=True,
    metavar="NS",
    help="Put the trust bundle ConfigMap (sidecarkit-ca-bundle) here; repeatable.",
)
@click.option("--ttl", default="24h", show_default=True, help="Workload certificate lifetime.")
@click.option("--replicas", type=click.IntRange(1), default=2, show_default=True)
def install(
    directory: Path,
    namespace: str,
    image: str,
    bundle_namespaces: tuple[str, ...],
    ttl: str,
    replicas: int,
) -> None:
    """Print the CA's ServiceAccount, RBAC, Secret, Deployment, Service and bundle ConfigMaps.

    The root key stays in --dir: only the intermediate goes into the cluster.
    """
    from sidecarkit.k8s import manifests  # noqa: PLC0415
    from sidecarkit.security import installing  # noqa: PLC0415

    try:
        spec = read_install(directory, namespace, image, bundle_namespaces, ttl, replicas)
    except errors.ConfigError as exc:
        _fail(str(exc))
    click.echo(manifests.dump_objects(installing.render(spec)), nl=False)


def read_install(
    directory: Path,
    namespace: str,
    image: str,
    bundle_namespaces: tuple[str, ...] = (),
    ttl: str = "24h",
    replicas: int = 2,
) -> Any:
    """The ``installing.Install`` for the CA in ``directory``, checked (the intermediate must
    load and match the root); ``ca install`` and ``sidecarkit install --ca-dir`` both print it.
    Raises ``errors.ConfigError`` naming the directory and the fix."""
    from sidecarkit.security import installing  # noqa: PLC0415

    try:
        durations.setting(ttl, "--ttl")
        pair = authority.Pair(
            (directory / "intermediate.crt").read_bytes(),
            (directory / "intermediate.key").read_bytes(),
        )
        root = (directory / "root.crt").read_bytes()
        auth = authority.load_authority(pair, root, source=str(directory))
    except OSError as exc:
        raise errors.ConfigError(
            f"cannot read the CA in {directory}: {exc.strerror} ({exc.filename}); "
            "make one with `sidecarkit ca init --dir DIR`"
        ) from None
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from None
    return installing.Install(
        namespace, image, root, pair.cert, pair.key, auth.trust_domain,
        bundle_namespaces, replicas, ttl,
    )  # fmt: skip


@ca.command("serve")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False,
              path_type=Path), help="Holds intermediate.crt/.key and root.crt (a mounted "
              "Secret works).")  # fmt: skip
@click.option("--listen", default="0.0.0.0:15443", show_default=True, metavar="HOST:PORT")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="A DNS name or IP the CA is reached by (its serving certificate); "
              "repeatable. Default: 127.0.0.1 and localhost.")  # fmt: skip
@click.option("--ttl", default="24h", show_default=True, help="Workload certificate lifetime.")
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Accept bootstrap tokens from this file (`sidecarkit ca token`).")  # fmt: skip
@click.option(
    "--token-review",
    is_flag=True,
    help="Accept ServiceAccount tokens, checked with the API server's TokenReview.",
)
@click.option("--audience", default="sidecarkit-ca", show_default=True,
              help="The audience a ServiceAccount token must be for.")  # fmt: skip
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For --token-review; default: as kubectl, or the pod's ServiceAccount.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)  # fmt: skip
def serve(
    directory: Path,
    listen: str,
    names: tuple[str, ...],
    ttl: str,
    tokens_file: Path | None,
    token_review: bool,
    audience: str,
    kubeconfig: Path | None,
    log_level: str,
) -> None:
    """Issue workload certificates over HTTPS to callers that prove their identity."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiohttp.access", "httpx", "httpcore"):  # they may print request details
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from sidecarkit.security import serving  # noqa: PLC0415

    try:
        lifetime = durations.setting(ttl, "--ttl")
    except ValueError as exc:
        _fail(str(exc))
    if lifetime < 10:
        _fail(f"--ttl {ttl}: a certificate must live at least 10s (renewal is at half-life)")
    if tokens_file is None and not token_review:
        _fail("give --tokens FILE (bootstrap tokens), --token-review (in a cluster), or both")
    try:
        pair = authority.Pair(
            (directory / "intermediate.crt").read_bytes(),
            (directory / "intermediate.key").read_bytes(),
        )
        root = (directory / "root.crt").read_bytes()
    except OSError as exc:
        _fail(f"cannot read the CA in {directory}: {exc.strerror} ({exc.filename}); "
              "make one with `sidecarkit ca init --dir DIR`")  # fmt: skip
    try:
        auth = authority.load_authority(pair, root, source=str(directory))
        tokens = proving.TokensFile(tokens_file, auth.trust_domain) if tokens_file else None
        host, _, port_text = listen.rpartition(":")
        port = int(port_text)
    except ValueError as exc:
        _fail(str(exc))
    reviewer = None
    if token_review:
        from sidecarkit.k8s import cluster  # noqa: PLC0415

        try:
            client = cluster.async_client(cluster.Target(kubeconfig=kubeconfig))
        except errors.SidecarkitError as exc:
            _fail(str(exc))
        reviewer = proving.TokenReviewer(client, audience=audience, trust_domain=auth.trust_domain)
    state = serving.Ca(auth, lifetime, tokens, reviewer)
    serving_pair = authority.issue_server(auth, list(names) or ["127.0.0.1", "localhost"])
    context = serving.server_context(serving_pair)
    asyncio.run(_serve(state, context, host or "0.0.0.0", port))


async def _serve(state: Any, context: Any, host: str, port: int) -> None:
    import signal  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415

    from sidecarkit.security import serving  # noqa: PLC0415

    runner = web.AppRunner(serving.app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context, backlog=1024)
    await site.start()
    log.info(
        "CA for trust domain %s on https://%s:%d (certificates for %s)",
        state.authority.trust_domain, host, port, durations_text(state.ttl),
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def durations_text(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60}m" if rest else f"{hours}h"
